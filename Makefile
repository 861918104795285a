# The two commands: `make demo` (set up and run the demo) and `make test` (set up and run every test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench venv system-packages system-packages-tests clean

demo: system-packages venv
	$(BIN)/callpass demo

test: system-packages-tests venv
	$(BIN)/pytest -q -ra

venv: $(VENV)/.installed

# Reinstalling also recompiles the translation catalogs (.po -> .mo, see hatch_build.py).
$(VENV)/.installed: pyproject.toml hatch_build.py $(wildcard portal/translations/*/LC_MESSAGES/*.po)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system-packages:
	deploy/install-system-packages

system-packages-tests:
	deploy/install-system-packages --tests

clean:
	rm -rf $(VENV) build dist artifacts .pytest_cache

# Benchmarks for the figures the issues name (time to online, form size, CSV export of 1e6 rows).
bench: venv
	$(BIN)/python tests/benchmarks.py
