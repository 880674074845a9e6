# The two commands of the README: `make demo` and `make test`.
# Both create .venv from requirements.txt when it is missing (torch first: see requirements.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# FRESH=1 regenerates data and retrains every stage instead of reusing outputs/demo.
demo: $(STAMP)
	$(PY) scripts/demo.py --out outputs/demo $(if $(FRESH),--fresh,)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

# The linter (rules in pyproject.toml) and the formatter's check; .ci/run runs both before the tests.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
