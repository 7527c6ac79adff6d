# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The other end of what taskdeck supports: the newest Python and Django.
PYTHON_NEXT ?= $(HOME)/.pyenv/versions/3.13.0/bin/python
DJANGO_NEXT ?= Django>=6.1,<6.2
VENV_NEXT := .venv-next
STAMP_NEXT := $(VENV_NEXT)/.installed
# What touches Django's APIs (checks, migrations, settings, result backends,
# the API, the dashboard's views), run again on the newest Django; the rest of
# the suite (Celery, brokers, fault injection, the browser) runs once.
TESTS_NEXT ?= tests/test_checks.py tests/test_compat.py tests/test_public_api.py tests/test_migrations.py tests/results \
	tests/monitor/test_monitor_api.py tests/dashboard/test_dashboard_access.py \
	tests/dashboard/test_dashboard_parts.py tests/dashboard/test_dashboard_actions.py \
	tests/test_django_tasks.py tests/monitor/test_monitor_django_tasks.py \
	tests/test_secure_defaults.py tests/test_policy.py tests/test_payloads.py \
	tests/dashboard/test_dashboard_scope.py

.PHONY: run test test-next test-celery lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(STAMP_NEXT): pyproject.toml
	$(PYTHON_NEXT) -m venv $(VENV_NEXT)
	$(VENV_NEXT)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_NEXT)/bin/python -m pip install --quiet -e '.[test]' '$(DJANGO_NEXT)'
	touch $(STAMP_NEXT)

install: $(STAMP)

## Start everything on the embedded default (or on $CELERY_BROKER / $DATABASE_URL).
run: $(STAMP)
	$(BIN)/taskdeck up

## The whole test suite against real Redis, RabbitMQ and PostgreSQL (Python 3.11,
## Django 5.2 LTS), then the parts that touch Django's APIs on Python 3.13 and Django 6.1.
## Three test processes (pytest-xdist), a test module each at a time: every test has its own Redis
## database, RabbitMQ vhost, PostgreSQL test database (one per process), ports and data folder.
## Most tests wait on real services, so three on two cores finish sooner than two (README).
PYTEST_PROCESSES ?= 3
test: $(STAMP) $(STAMP_NEXT)
	$(BIN)/python -m pytest -n $(PYTEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)
	$(MAKE) test-next

test-next: $(STAMP_NEXT)
	$(VENV_NEXT)/bin/python -m pytest -n $(PYTEST_PROCESSES) --dist loadfile $(TESTS_NEXT) $(PYTEST_ARGS)

## Celery's own canvas and task integration suites on taskdeck's stack (docs/canvas.md).
test-celery: $(STAMP)
	$(BIN)/python -m tests.celery_suite.run $(CELERY_SUITE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VENV_NEXT) .taskdeck
