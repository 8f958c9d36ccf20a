# Everything a fresh machine needs, from the project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install demo test lint typecheck pytest docs settings-doc messages clean bench screenshots dist

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m examples.inbox

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The docs site (mkdocs-material) into site/; --strict turns every broken link or anchor into a
# failure. NO_MKDOCS_2_WARNING silences Material's banner about MkDocs 2.0, not a build warning.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Rewrite the settings table of docs/configuration.md from MFAGuardSettings.
settings-doc: $(STAMP)
	$(BIN)/python -m mfa_guard.settings_doc

# The pages' translations: extract every msgid (templates, pages.py, the refusal texts) into
# src/mfa_guard/web/locale/messages.pot, merge it into each messages.po, compile the .mo files.
messages: $(STAMP)
	$(BIN)/python -m mfa_guard.web.i18n

test: lint typecheck docs pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# The browser story, saving its screenshots into docs/images/ (enrol.png, team.png, devices.png).
screenshots: $(STAMP)
	MFA_GUARD_SCREENSHOTS=1 $(BIN)/pytest tests/test_browser.py

# A wheel and an sdist in dist/, checked by twine (the metadata PyPI would show). The tools get a
# venv of their own: twine's packaging and the redis client's cannot share one.
DIST_VENV := .venv-dist
dist:
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install --quiet --upgrade pip build twine
	rm -rf dist
	$(DIST_VENV)/bin/python -m build --outdir dist .
	$(DIST_VENV)/bin/twine check --strict dist/*

clean:
	rm -rf $(VENV) $(DIST_VENV) .mypy_cache .pytest_cache .ruff_cache examples/inbox/.data site dist
