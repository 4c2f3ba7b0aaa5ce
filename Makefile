# The two commands of the README: `make demo` and `make test`.
# Everything is installed into .venv (and, for the tests, tests/interop/node_modules);
# nothing else on the machine is assumed but python3 (with venv), make, and for the
# tests node with npm.  The servers and the browser that the tests run come from
# Debian's packages, which `make test` installs when they are missing
# (tests/system-packages.sh).

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
INTEROP = tests/interop

# Where the browser tests save their screenshots, for a person to look at.
SCREENSHOTS ?= $(CURDIR)/test-screenshots

.PHONY: venv system-packages install demo test server docs clean readme-screenshot

# The checkout is installed in "compat" editable mode: a .pth file puts this
# folder on sys.path, so `exp` and the twistd plugin dropin
# (twisted/plugins/exp_plugins.py) are both found here, once.  That
# `pip install .` installs the dropin into site-packages is a test of its own.
# .runtime: what the demo and the server need; .deps: the test and docs tools too.
$(BIN)/.runtime: EXTRAS =
$(BIN)/.deps: EXTRAS = [test]
$(BIN)/.runtime $(BIN)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.$(EXTRAS)' --config-settings editable_mode=compat
	touch $@ $(BIN)/.runtime

# The unmodified Socket.IO 2.x client and server the interop tests run, exactly
# as package-lock.json pins them.
$(INTEROP)/node_modules/.deps: $(INTEROP)/package.json $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund
	touch $@

venv: $(BIN)/.deps

# First, so that a machine that lacks them stops here, in one line.
system-packages:
	@bash tests/system-packages.sh

install: system-packages venv $(INTEROP)/node_modules/.deps

# DEMO_KEEP=1: the server stays up after the walk (its web console too), until Ctrl-C.
DEMO_KEEP ?=
demo: $(BIN)/.runtime
	DEMO_KEEP=$(DEMO_KEEP) $(BIN)/python examples/walkthrough.py

server: $(BIN)/.runtime
	$(BIN)/twistd -n exp-server

test: install
	$(BIN)/ruff check exp tests examples benchmarks
	$(BIN)/mypy exp
	EXP_SCREENSHOTS=$(SCREENSHOTS) $(BIN)/pytest

# The README's picture of the console (docs/console.png), taken again by its test.
readme-screenshot: install
	EXP_README_SCREENSHOT=1 EXP_SCREENSHOTS=$(SCREENSHOTS) $(BIN)/pytest -q \
		tests/test_console.py -k test_a_device_goes_online_and_offline

# API reference from the docstrings, into apidocs/ (fails on any broken reference).
docs: venv
	$(BIN)/pydoctor --project-name=exp --project-base-dir=. --html-output=apidocs \
		--docformat=epytext --warnings-as-errors -q exp

clean:
	rm -rf $(VENV) build *.egg-info $(INTEROP)/node_modules
