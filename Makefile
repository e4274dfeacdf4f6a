# Two commands for a newcomer: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PORT ?= 8000
PYTEST_ARGS ?=

# The lock files pin every distribution (runtime, and dev = runtime + tools) with its hashes: two installs
# of the same commit get the same bytes. `make lock` re-resolves them after pyproject.toml changes;
# `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package django`) moves pins forward. See README.
LOCKS := requirements/runtime.txt requirements/dev.txt
LOCK_VENV ?= .venv-lock
UV_VERSION ?= 0.13.9
LOCK_ARGS ?=
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile --quiet pyproject.toml --python-version 3.11 --generate-hashes \
	--annotation-style line --custom-compile-command 'make lock' $(LOCK_ARGS)

.PHONY: venv lock demo test lint format bench check clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCKS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

lock:
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(UV_COMPILE) -o requirements/runtime.txt
	$(UV_COMPILE) --extra dev -c requirements/runtime.txt -o requirements/dev.txt

demo: venv
	PORT=$(PORT) $(PY) scripts/demo.py

test: venv
	./scripts/ensure-chromium.sh
	./scripts/with-test-services.sh $(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The same four checks run in CI (.ci/run) and before each commit (.pre-commit-config.yaml).
LINT_PACKAGES := accounts api audit changes core gitopsportal insight integrations inventory promotions rollbacks

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports
	$(VENV)/bin/mypy $(LINT_PACKAGES)

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: venv
	./scripts/with-test-services.sh sh -c '$(PY) manage.py makemigrations --check --dry-run && $(PY) manage.py migrate -v0'

bench: venv
	./scripts/with-test-services.sh $(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var/ .pytest_cache
