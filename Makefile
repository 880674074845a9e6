# The two commands of the README: `make demo` and `make test`.
# Both create .venv from requirements.txt when it is missing (torch first: see requirements.txt); `make test`
# and `make lint` also install the test and lint tools of requirements-dev.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test venv lint clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(DEV_STAMP)

# FRESH=1 regenerates data and retrains every stage instead of reusing outputs/demo.
demo: $(STAMP)
	$(PY) scripts/demo.py --out outputs/demo $(if $(FRESH),--fresh,)

test: $(DEV_STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

# The linter (rules in pyproject.toml) and the formatter's check; .ci/run runs both before the tests.
lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
