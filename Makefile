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

# Jupyter refuses to run as root without --allow-root (Docker, cloud notebooks, CI): add it only then.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Extra server options, e.g. LAB_ARGS="--no-browser --ip 0.0.0.0 --port 8890" on a remote machine.
LAB_ARGS ?=

lab: install
	@echo "Starting JupyterLab on chapters/. Open the http://127.0.0.1:...?token=... address it prints below"
	@echo "(on a machine without a browser it keeps serving; stop it with Ctrl-C)."
	$(BIN)/jupyter lab --ServerApp.root_dir=chapters $(ROOT_FLAG) $(LAB_ARGS)

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
