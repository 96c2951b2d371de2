# schedb developer targets. `make cluster` and `make test` work on a fresh clone:
# they create the virtualenv (.venv) themselves when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install cluster stop status test chaos bench bench-quick lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

cluster: $(STAMP)
	$(PY) scripts/localcluster.py start

stop:
	@if [ -x $(PY) ]; then $(PY) scripts/localcluster.py stop; else echo "nothing to stop"; fi

status: $(STAMP)
	$(PY) scripts/localcluster.py status

# Two test files at a time; a module's tests share one cluster, so they stay on one worker.
test: $(STAMP)
	$(PY) -m ruff check schedb scripts tests
	$(PY) -m pytest -q -n 2 --dist loadfile

# One scenario, or several: make chaos ARGS="--scenario freeze" (scripts/chaos.py --list).
chaos: $(STAMP)
	$(PY) scripts/chaos.py $(ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py

bench-quick: $(STAMP)
	$(PY) scripts/bench.py --quick

lint: $(STAMP)
	$(PY) -m ruff check schedb scripts tests

clean: stop
	rm -rf .data .run
