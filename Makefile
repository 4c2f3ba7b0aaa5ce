# The two commands of the README: `make demo` and `make test`.
# Everything is installed into .venv; nothing else on the machine is assumed
# but python3 (with venv) and make.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test server docs clean

# The checkout is installed in "compat" editable mode: a .pth file puts this
# folder on sys.path, so `exp` and the twistd plugin dropin
# (twisted/plugins/exp_plugins.py) are both found here, once.  That
# `pip install .` installs the dropin into site-packages is a test of its own.
$(BIN)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/.deps

demo: install
	$(BIN)/python examples/quickstart.py

server: install
	$(BIN)/twistd -n exp-server

test: install
	$(BIN)/ruff check exp tests examples benchmarks
	$(BIN)/mypy exp
	$(BIN)/pytest

# API reference from the docstrings, into apidocs/ (fails on any broken reference).
docs: install
	$(BIN)/pydoctor --project-name=exp --project-base-dir=. --html-output=apidocs \
		--docformat=epytext --warnings-as-errors -q exp

clean:
	rm -rf $(VENV) build *.egg-info
