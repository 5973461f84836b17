# The two commands a newcomer needs: `make demo` and `make test`.
# Both create (or refresh) the virtual environment in .venv first, so they work
# on a fresh machine that has only Python >= 3.11 and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "metabill needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@# Bytecode for the engine, as installing a wheel writes it: an editable install
	@# leaves it to the first import, which writes none where PYTHONDONTWRITEBYTECODE
	@# is set, so every command would compile the modules it imports lazily.
	@$(BIN)/python -m compileall -q engine > /dev/null
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	@$(BIN)/python -m pytest -q

bench: $(STAMP)
	@$(BIN)/python -m compileall -q engine > /dev/null
	@$(BIN)/python -m bench.load_config

clean:
	rm -rf out .pytest_cache .hypothesis metabill.db
