# The two commands: `make demo` (set up and run the demo) and `make test` (set up and run every test).
# `make demo PORT=9000 HOST=0.0.0.0 CONFIG=my.toml` passes --port, --host and --config to the demo.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
HOST   ?= 127.0.0.1
CONFIG ?=

.PHONY: demo test bench venv venv-test system-packages system-packages-tests clean

demo: system-packages venv
	$(BIN)/callpass demo --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# Every test on SQLite, then the tests that keep data again on PostgreSQL (tests/databases.py).
test: system-packages-tests venv-test
	$(BIN)/pytest -q -ra
	CALLPASS_TEST_DATABASE=postgresql $(BIN)/pytest -q -ra

# The demo needs callpass and its dependencies only; the tests add pytest and Playwright.
# Each has its own stamp, so `make demo` never pulls the test extras.
venv: $(VENV)/.installed-demo
venv-test: $(VENV)/.installed-test

# Reinstalling also recompiles the translation catalogs (.po -> .mo, see hatch_build.py).
INSTALL_INPUTS := pyproject.toml hatch_build.py $(wildcard portal/translations/*/LC_MESSAGES/*.po)

$(VENV)/bin/python:
	@echo "==> creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: $(VENV)/bin/python $(INSTALL_INPUTS)
	@echo "==> installing callpass and its dependencies into $(VENV) (pip install -e .)"
	@# --no-compile: byte-compiling every module of every dependency took longer than the rest;
	@# Python compiles the few the demo imports when it first starts.
	$(BIN)/pip install --disable-pip-version-check --progress-bar off --no-compile -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python $(INSTALL_INPUTS)
	@echo "==> installing callpass with the test extras into $(VENV) (pip install -e '.[test]')"
	$(BIN)/pip install --disable-pip-version-check --progress-bar off -e '.[test]'
	touch $@ $(VENV)/.installed-demo

system-packages:
	deploy/install-system-packages

system-packages-tests:
	deploy/install-system-packages --tests

clean:
	rm -rf $(VENV) build dist artifacts .pytest_cache

# Benchmarks for the figures the issues name (time to online, form size, CSV export of 1e6 rows).
bench: venv-test
	$(BIN)/python tests/benchmarks.py
