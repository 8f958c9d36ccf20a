# Everything a fresh machine needs, from the project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install demo test lint typecheck pytest clean bench screenshots

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

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# The browser story, saving its screenshots into docs/images/ (enrol.png, team.png).
screenshots: $(STAMP)
	MFA_GUARD_SCREENSHOTS=1 $(BIN)/pytest tests/test_browser.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache examples/inbox/.data
