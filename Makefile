# The two commands: `make serve` (set up, then run the service on the bundled model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test bench
setup: $(VENV)/.installed

# torch==2.13.0 first, on its own: pip takes the CPU build from the machine's wheel folder (see README).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev,train]'
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy models
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/engine.py
