# nanoTLDR. `make demo` and `make test` do their own set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install test bench clean

# The environment is rebuilt when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench.py

clean:
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__
