# make lab   : create .venv if missing, install minilineage, open JupyterLab on chapters/
# make test  : same set-up, then unit tests and every chapter under nbval (fast mode)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Optional pip constraints file, e.g. CONSTRAINTS=.ci/constraints.txt pins the torch pair CI tests.
CONSTRAINTS ?=
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: install lab test unit notebooks bench sync lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[dev]" $(PIP_CONSTRAINTS)
	@touch $@

lab: install
	$(BIN)/jupyter lab --ServerApp.root_dir=chapters

test: install
	MINILINEAGE_FAST=1 $(BIN)/python -m pytest tests chapters --nbval-lax

unit: install
	$(BIN)/python -m pytest tests

notebooks: install
	MINILINEAGE_FAST=1 $(BIN)/python -m pytest chapters --nbval-lax

# Rebuild each chapter's .ipynb from its .py and store fresh fast-mode outputs.
sync: install
	for f in chapters/*.py; do $(BIN)/jupytext --to ipynb --update "$$f" && \
	  MINILINEAGE_FAST=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$${f%.py}.ipynb"; done

bench: install
	$(BIN)/minilineage bench

lint: install
	$(BIN)/ruff check minilineage tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
