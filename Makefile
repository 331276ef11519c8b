# Every target that needs the package builds its own virtualenv first, so a fresh clone needs only these.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-under-load lint demo bench chaos clean

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

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/fifoflow demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

chaos: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_chaos.py --chaos-long -s

clean:
	rm -rf $(VENV) build dist src/*.egg-info
