# The two commands: `make serve` (set up, then run the service on the bundled model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test bench protos
setup: $(VENV)/.installed

# torch==2.13.0 first, on its own: pip takes the CPU build from the machine's wheel folder (see README).
$(VENV)/.installed: pyproject.toml setup.py $(wildcard models/generate/csrc/*)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev,train]'
	touch $@

serve: setup
	$(VENV)/bin/wavenet-server

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy models server client wavenet
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/queues.py
	$(PY) bench/engine.py
	$(PY) bench/serve.py

# Regenerate the checked-in stubs after editing protos/ (tests/test_protos.py checks they match).
protos: setup
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/wavenet/v1/wavenet.proto
