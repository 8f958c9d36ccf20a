"""The benchmark suite: ``make bench`` (``python -m bench``).

Every figure is measured side by side in one run — A, B, A, B … batches, the median of the
per-pair ratios with their min and max — and printed on one line with its budget. What each
figure measures, and the latest figures, are in ``docs/performance.md``.
"""
