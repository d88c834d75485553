# Two commands for a newcomer: `make run` and `make test`. Both bootstrap what they need
# (venv, Python packages, Debian packages, Maven jars) and start the local real stack.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test bootstrap stack-up stack-down stack-status bench clean-state

# setup.py compiles each app/<module>.py that has an app/<module>.pxd beside it: a change to either rebuilds.
COMPILED_SOURCES := setup.py $(wildcard app/*.pxd) $(patsubst %.pxd,%.py,$(wildcard app/*.pxd))

$(STAMP): pyproject.toml $(COMPILED_SOURCES)
	command -v cc >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq gcc libc6-dev; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

bootstrap: $(STAMP)

run: bootstrap
	$(VENV)/bin/wallet run

# The suite installs the Debian packages its tests use before collecting (promtool, wrk, MariaDB, Redis: nothing
# is skipped on a fresh machine) and starts the stack itself (tests/conftest.py), stopping on exit what it started.
# pytest's exit code 5 ("no tests collected") is a failure here: a suite that runs nothing proves nothing.
test: bootstrap
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$status

stack-up: bootstrap
	$(VENV)/bin/wallet stack up
stack-down: bootstrap
	$(VENV)/bin/wallet stack down
stack-status: bootstrap
	$(VENV)/bin/wallet stack status

bench: bootstrap
	$(VENV)/bin/wallet bench processor

# Drops every local service's data (Kafka log, MariaDB, Redis, processor stores). Stop the stack first.
clean-state:
	rm -rf .state
