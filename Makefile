# Robust Explainability: every task a reader, learner, instructor or CI needs.
#   make book        set up .venv and build the static book into _build/html
#   make test        set up .venv (with test dependencies) and run every check
#   make notebooks   re-execute every notebook in place (stores outputs and widget state)
#   make weights     retrain the models shipped in xaiutils/weights
#   make benchmark   time every attribution method against the reference libraries

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Measured faster on the 2-core build machines; notebooks never hard-code thread counts.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export PYTHONWARNINGS := ignore::DeprecationWarning

JB_FLAGS := --all -W -n --keep-going
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: all setup setup-dev vendor book test test-unit test-notebooks test-book chromium notebooks weights benchmark clean

all: book

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# MathJax, require.js and the widgets HTML manager, served by the book itself (no CDN).
book/_vendor/.stamp: book/vendor/package.json book/vendor/package-lock.json scripts/vendor_assets.py
	cd book/vendor && npm ci --no-audit --no-fund --ignore-scripts
	$(PYTHON) scripts/vendor_assets.py
	touch $@

vendor: book/_vendor/.stamp

book: setup vendor
	$(VENV)/bin/jupyter-book build $(JB_FLAGS) .
	@echo "Open _build/html/index.html in a browser (or: $(PY) -m http.server -d _build/html)."

test: setup-dev vendor chromium
	$(MAKE) test-unit test-notebooks test-book

test-unit: setup-dev
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/book

test-notebooks: setup-dev
	$(PY) -m pytest -q -p no:cacheprovider --nbval --sanitize-with tests/nbval_sanitize.cfg notebooks

test-book: setup-dev vendor
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build $(JB_FLAGS) .
	$(PY) -m pytest -q -p no:cacheprovider tests/book

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; }

notebooks: setup-dev
	$(PY) scripts/execute_notebooks.py $(NOTEBOOKS)

weights: setup
	$(PY) -m xaiutils.models

benchmark: setup-dev
	$(PY) benchmarks/attribution_speed.py

clean:
	rm -rf _build book/_vendor
