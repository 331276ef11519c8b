# Every target that needs the package builds its own virtualenv first, so a fresh clone needs only these.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-under-load test-redis-min lint docs dist demo bench chaos screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[prefect,dev]'
	touch $(STAMP)

install: $(STAMP)

PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

test: $(STAMP)
	$(PYTEST)

# The suite 3 times in a row with both cores kept busy by stress-ng (Debian's package):
# tests wait on state, never on a guess of how long a subprocess takes.
test-under-load: $(STAMP)
	.ci/test-under-load $(PYTEST)

# The oldest redis-py fifoflow supports (pyproject's lower bound): the suite without Prefect
# in a virtualenv of its own, so CI tests both ends of the range.
REDIS_MIN := 5.3.1
MIN_VENV := .venv-redis-min

$(MIN_VENV)/.installed: pyproject.toml
	test -x $(MIN_VENV)/bin/python || $(PY) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(MIN_VENV)/bin/python -m pip install -q -e '.[dev]' 'redis[hiredis]==$(REDIS_MIN)'
	touch $@

test-redis-min: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -c 'import redis; assert redis.__version__ == "$(REDIS_MIN)", redis.__version__'
	$(MIN_VENV)/bin/python -m pytest -n 2 --dist loadfile -q \
		--ignore=tests/test_prefect_worker.py --ignore=tests/test_prefect_demo.py \
		--ignore=tests/test_prefect_deployment.py --ignore=tests/test_prefect_runs.py \
		--ignore=tests/test_alerts_prefect.py --ignore=tests/test_prefect_cancel_process.py \
		--ignore=tests/test_prefect_gate.py --ignore=tests/test_package.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# docs/cli.md, the command reference, from the commands themselves (a test checks it is current).
docs: $(STAMP)
	$(BIN)/python -m fifoflow.cli.reference docs/cli.md

# The sdist, then the wheel built from it, in dist/ (tests/test_package.py does the same and
# installs the wheel in a fresh virtualenv).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build -o dist .

demo: $(STAMP)
	$(BIN)/fifoflow demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The dashboard's pictures in docs/images/, taken by its browser tests.
screenshots: $(STAMP)
	FIFOFLOW_SCREENSHOTS=$(CURDIR)/docs/images $(BIN)/python -m pytest -q tests/test_dashboard_browser.py

chaos: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_chaos.py --chaos-long -s

clean:
	rm -rf $(VENV) $(MIN_VENV) build dist src/*.egg-info
