# make lab   : create .venv if missing, install minilineage, open JupyterLab on chapters/
# make test  : same set-up, then unit tests and every chapter under nbval (fast mode); with Debian's
#              chromium installed also the browser tests (exported pages, slides, JupyterLab)
# make html  : every chapter executed (fast mode) and exported to build/html/ (offline; open index.html)
# make slides: the same as reveal.js decks in build/slides/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Optional pip constraints file, e.g. CONSTRAINTS=.ci/constraints.txt pins the torch pair CI tests.
CONSTRAINTS ?=
# The extras `make install` adds: the tools (dev) and what the tests of the optional parts need
# (diffusers for the bench, PyAV for video files, torchmetrics for standard FID).
EXTRAS ?= dev,bench,video,fid
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

NPM ?= npm

.PHONY: install lab test unit notebooks bench sync lint clean html slides site-assets

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[$(EXTRAS)]" $(PIP_CONSTRAINTS)
	@touch $@

# Jupyter refuses to run as root without --allow-root (Docker, cloud notebooks, CI): add it only then.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Extra server options, e.g. LAB_ARGS="--no-browser --ip 0.0.0.0 --port 8890" on a remote machine.
LAB_ARGS ?=

lab: install
	@echo "Starting JupyterLab on chapters/. Open the http://127.0.0.1:...?token=... address it prints below"
	@echo "(on a machine without a browser it keeps serving; stop it with Ctrl-C)."
	$(BIN)/jupyter lab --ServerApp.root_dir=chapters $(ROOT_FLAG) $(LAB_ARGS)

# The browser tests (tests/test_browser.py, tests/test_lab.py) need Debian's chromium (.ci/run
# installs it) and the pages' npm assets; without either they skip and say so in one line.
test: install
	@if [ -x /usr/bin/chromium ] && command -v $(NPM) >/dev/null 2>&1; then $(MAKE) --no-print-directory site-assets || \
	  echo "npm ci failed (no registry?): the exported-page tests will skip"; fi
	MINILINEAGE_FAST=1 $(BIN)/python -m pytest tests chapters --nbval-lax

unit: install
	$(BIN)/python -m pytest tests

notebooks: install
	MINILINEAGE_FAST=1 $(BIN)/python -m pytest chapters --nbval-lax

# Rebuild each chapter's .ipynb from its .py and store fresh fast-mode outputs.
sync: install
	for f in chapters/*.py; do $(BIN)/jupytext --to ipynb --update "$$f" && \
	  MINILINEAGE_FAST=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$${f%.py}.ipynb"; done

# What the exported pages load instead of a CDN, pinned in site/package-lock.json: the Jupyter widget
# manager (with the Play buttons' icon font), require.js, MathJax 2, reveal.js and jQuery.
site-assets: site/node_modules/.installed

site/node_modules/.installed: site/package.json site/package-lock.json
	cd site && $(NPM) ci --no-audit --no-fund --ignore-scripts
	@touch $@

# Each chapter run top to bottom in fast mode (cached in build/executed/ until the chapter, the
# package or a checkpoint changes), then exported with its widget state and offline assets.
html: install site-assets
	$(BIN)/python site/export.py html

slides: install site-assets
	$(BIN)/python site/export.py slides

bench: install
	$(BIN)/minilineage bench

lint: install
	$(BIN)/ruff check minilineage tests site benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
