# Two commands for a newcomer: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: venv demo test lint format bench check clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: venv
	PORT=$(PORT) $(PY) scripts/demo.py

test: venv
	./scripts/ensure-chromium.sh
	./scripts/with-test-services.sh $(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: venv
	./scripts/with-test-services.sh sh -c '$(PY) manage.py makemigrations --check --dry-run && $(PY) manage.py migrate -v0'

bench: venv
	./scripts/with-test-services.sh $(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var/ .pytest_cache
