# The two commands of the README: `make demo` and `make test`.
# Everything is installed into .venv; nothing else on the machine is assumed
# but python3 (with venv) and make.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test server clean

$(BIN)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q '.[test]'
	touch $@

# Install this checkout (not editable: the twistd plugin must land in
# site-packages/twisted/plugins exactly as a user's `pip install .` puts it).
install: $(BIN)/.deps
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .

demo: install
	$(BIN)/python examples/quickstart.py

server: install
	$(BIN)/twistd -n exp-server

test: install
	$(BIN)/ruff check exp tests examples benchmarks
	$(BIN)/mypy exp
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info
