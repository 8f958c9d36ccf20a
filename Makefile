# Everything a fresh machine needs, from the project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install demo test lint typecheck pytest pytest-lowest docs settings-doc messages clean bench soak screenshots dist

# pip 25.1 is the first to install PEP 735 dependency groups (--group).
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip>=25.1'
	touch $@

# The demo needs the package with its SQL store and uvicorn, nothing of the dev tools.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): $(VENV)/.created pyproject.toml
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

# Everything: the package with every extra, and the `dev` dependency group.
$(STAMP): $(VENV)/.created pyproject.toml
	$(BIN)/pip install --quiet -e . --group dev
	touch $(STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
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

# The pages' translations (CONTRIBUTING.md): extract every msgid (templates, pages.py, the
# refusal texts) into src/mfa_guard/web/locale/messages.pot, merge it into each messages.po,
# compile the .mo files; then the same three pybabel commands over the demo's own catalogue
# (domain inbox, examples/inbox/locale, mapped by examples/inbox/babel.cfg).
DEMO_LOCALE := examples/inbox/locale
messages: $(STAMP)
	$(BIN)/python -m mfa_guard.web.i18n  # pybabel extract -F babel.cfg, update, compile
	$(BIN)/pybabel extract -F examples/inbox/babel.cfg -k N_ --sort-output \
		--project="Acme Inbox" -o $(DEMO_LOCALE)/inbox.pot examples/inbox
	$(BIN)/pybabel update -D inbox -i $(DEMO_LOCALE)/inbox.pot -d $(DEMO_LOCALE) \
		--no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -D inbox -d $(DEMO_LOCALE)

# The suite's core again, on the lowest versions pyproject.toml allows for the package and every
# extra (uv's lowest-direct resolution: each direct requirement at its floor), so that no floor
# can lie: the pure rules, settings, the store (SQLite, PostgreSQL) and its migrations (Alembic's
# floor), the pages' forms, rate limits on Redis, FastAPI, SMS providers, the CLI, the metrics,
# and the package installed bare (tests/e2e/test_packaging.py). The `test` group comes on top at
# its newest versions, held to
# those floors.
LOWEST_VENV := .venv-lowest
LOWEST_PY := $(LOWEST_VENV)/bin/python
LOWEST_EXTRAS := sql,postgres,redis,twilio,fastapi,demo,otel
LOWEST_TESTS := tests/core \
	tests/stores/test_mfa_store.py tests/stores/test_site_directory.py \
	tests/stores/test_device_store.py tests/stores/test_rate_limits.py \
	tests/stores/test_migrations.py tests/stores/test_upgrade.py \
	tests/web/test_settings.py tests/web/test_pages.py tests/web/test_csrf.py \
	tests/web/test_fastapi.py tests/web/test_sms_api.py tests/web/test_sms_providers.py \
	tests/web/test_cli.py tests/web/test_i18n.py tests/web/test_trusted_devices.py \
	tests/web/test_docs.py tests/web/test_wiring.py tests/web/test_tokens.py \
	tests/web/test_metrics.py \
	tests/security/test_bad_input.py tests/security/test_lockout.py \
	tests/e2e/test_packaging.py

$(LOWEST_VENV)/.installed: $(STAMP) pyproject.toml
	rm -rf $(LOWEST_VENV)
	$(BIN)/uv venv --quiet --python $(BIN)/python $(LOWEST_VENV)
	$(BIN)/uv pip install --quiet --python $(LOWEST_PY) --resolution lowest-direct \
		-e '.[$(LOWEST_EXTRAS)]'
	$(BIN)/uv pip freeze --quiet --python $(LOWEST_PY) --exclude-editable > $(LOWEST_VENV)/floors.txt
	$(BIN)/uv pip install --quiet --python $(LOWEST_PY) --group test -c $(LOWEST_VENV)/floors.txt
	touch $@

pytest-lowest: $(LOWEST_VENV)/.installed
	@echo "lowest versions: $$(grep -E '^(starlette|fastapi|pydantic-settings|limits|redis|sqlalchemy|alembic|python-multipart|opentelemetry-api)==' $(LOWEST_VENV)/floors.txt | tr '\n' ' ')"
	UV=$(BIN)/uv MFA_GUARD_RESOLUTION=lowest-direct $(LOWEST_VENV)/bin/pytest -p no:cacheprovider $(LOWEST_TESTS)

test: lint typecheck docs pytest pytest-lowest

# The benchmarks of docs/performance.md against their budgets; not part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m bench

# The soak (docs/deployment.md, "The soak"): two uvicorn workers on PostgreSQL (127.0.0.1:5432,
# through a proxy, in a database of its own) and a redis-server of its own, under load for
# SOAK_SECONDS while Redis is restarted, PostgreSQL connections are cut, a worker is SIGKILLed and
# a slow store is simulated; prints the report and exits 1 if an invariant failed. Not part of
# `make test`, which runs a minute of it (tests/e2e/test_soak.py).
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

# The browser story, saving its screenshots into docs/images/ (enrol, enrol-optional and challenge
# at 1280 px and, as *-phone.png, 390 px; team.png, devices.png; enrol-everyone.png: the app-wide
# banner; passkeys-settings and passkeys-challenge at both widths; reset-team, reset-confirm and
# reset-done: a member's 2FA reset from the Team page, at 1280 and 375 px;
# settings-activity-desktop and -phone: the recent activity on the settings page;
# security-log-desktop and -phone: the demo's security log; rtl-enrol, rtl-settings, rtl-team and
# rtl-challenge: the pages in Arabic, right to left, at 390 and 1280 px).
screenshots: $(STAMP)
	MFA_GUARD_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_browser_story.py \
		tests/e2e/test_reset_browser.py \
		tests/e2e/test_everyone_demo.py::test_the_app_wide_banner_in_chromium \
		tests/e2e/test_passkeys_browser.py::test_a_passkey_and_a_security_key_added_used_and_removed \
		tests/e2e/test_activity_browser.py \
		tests/e2e/test_demo_security_log.py::test_the_security_log_in_chromium_at_a_desktops_and_a_phones_width \
		tests/e2e/test_rtl_browser.py::test_the_pages_right_to_left

# The sdist and the wheel (pure Python, built from the sdist) in dist/, checked by twine (the
# metadata PyPI would show). The tools get a venv of their own: twine's packaging and the redis
# client's cannot share one.
DIST_VENV := .venv-dist
dist:
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install --quiet --upgrade pip build twine
	rm -rf dist
	$(DIST_VENV)/bin/python -m build --outdir dist .
	$(DIST_VENV)/bin/twine check --strict dist/*

clean:
	rm -rf $(VENV) $(DIST_VENV) $(LOWEST_VENV) .mypy_cache .pytest_cache .ruff_cache examples/inbox/.data site dist
