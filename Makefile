# schedb developer targets. `make cluster` and `make test` work on a fresh clone:
# they create the virtualenv (.venv) themselves when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := schedb devkit scripts tests

.PHONY: install lock cluster stop status test test-unit test-system test-browser chaos sim bench bench-quick lint clean

install: $(STAMP)

# The exact versions of constraints.txt (make lock writes it); the extras are in pyproject.toml.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Upgrade the pins: a scratch virtualenv gets .[dev] without constraints (the newest versions
# pyproject.toml allows) and its pip freeze becomes constraints.txt. Review the diff, then
# `make install` and `make test`. Leaves .venv alone.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[dev]'; \
	{ printf '%s\n' \
	    "# Exact versions of every package \`make install\` puts in .venv (pip install -c constraints.txt" \
	    "# -e '.[dev]'), so every clone, CI run and machine tests the same dependencies. Not edited by" \
	    "# hand. To upgrade: \`make lock\` (a scratch virtualenv gets .[dev] without these constraints," \
	    "# i.e. the newest versions pyproject.toml allows, and its \`pip freeze\` is written here), then" \
	    "# review the diff, \`make install\` and \`make test\`. croniter, tzdata, pysyncobj and msgpack are" \
	    "# pinned in pyproject.toml itself (the state machine's apply depends on them): change them there." \
	    "# Resolved with Python $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')."; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt; \
	echo "constraints.txt written: review git diff constraints.txt, then make install"

cluster: $(STAMP)
	$(PY) scripts/localcluster.py start

stop:
	@if [ -x $(PY) ]; then $(PY) scripts/localcluster.py stop; else echo "nothing to stop"; fi

status: $(STAMP)
	$(PY) scripts/localcluster.py status

# Two test files at a time; a module's tests share one cluster, so they stay on one worker.
# (.ci/run runs exactly this.)
test: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m pytest -q -n 2 --dist loadfile

# Parts of the suite, without ruff: the unit and property tests (no processes, seconds) ...
test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# ... the system tests against real node processes and a receiver (minutes) ...
test-system: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests/integration

# ... and the console in Chromium (needs /usr/bin/chromium; skipped without it).
test-browser: $(STAMP)
	$(PY) -m pytest -q tests/browser

# One scenario, or several: make chaos ARGS="--scenario freeze" (scripts/chaos.py --list).
chaos: $(STAMP)
	$(PY) scripts/chaos.py $(ARGS)

# The deterministic simulator (docs/simulation.md): seeds for about a minute on every core, or
# one seed again with its whole trace: make sim SEED=1234. More: make sim ARGS="--count 1000".
sim: $(STAMP)
	$(PY) -m devkit.sim $(if $(SEED),--seed $(SEED)) $(ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py

bench-quick: $(STAMP)
	$(PY) scripts/bench.py --quick

# ruff, then the import layers (tests/unit/test_layering.py: imports point down, the state
# machine imports only pure helpers).
lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m pytest -q tests/unit/test_layering.py

clean: stop
	rm -rf .data .run
