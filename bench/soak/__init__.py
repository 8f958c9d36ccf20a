"""The soak: ``make soak`` (``python -m bench.soak``).

Two or more uvicorn workers of a guarded app (:mod:`bench.soak.app`) on PostgreSQL, reached
through a TCP proxy the soak controls, and on a ``redis-server`` of its own, under a bounded
load of virtual users (:mod:`bench.soak.load`) for a set time, while faults are injected on a
schedule (:mod:`bench.soak.faults`): Redis restarted, PostgreSQL connections cut, a worker
SIGKILLed and started again, a slow store. Every request is recorded; at the end the report
(:mod:`bench.soak.summary`) gives the requests by outcome, p50 and p99 per kind over time and
each worker's memory over time, and the invariants (:mod:`bench.soak.checks`) are checked from
the database and from the record. The process and its servers: :mod:`bench.soak.cluster`.
docs/deployment.md has the figures of a run.
"""
