# The two README commands.  Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/ticker serve

# The page tests drive Debian's chromium; without it they are skipped, saying why.
CHROMIUM := /usr/bin/chromium

test: $(VENV)/.test-deps
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing Debian's chromium for the page tests"; \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
			|| echo "chromium could not be installed: the page tests will be skipped"; \
	fi
	$(BIN)/python -m pytest
