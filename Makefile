# Two commands do all the set-up on a fresh machine:
#   make train   # creates .venv, installs what is missing, runs `python train.py $(ARGS)`
#   make test    # the same install, then the test suite (tests marked slow: make test-slow)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch is enough for everything here; `make TORCH=torch` takes pip's default build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train test test-slow lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" -e ".[test]"
	touch $@

train: install
	$(BIN)/python train.py $(ARGS)

test: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The NumPyro column of scripts/bench.py, for the slow test that runs it.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" -e ".[test,bench]"
	touch $@

# Long end-to-end runs (DDP, convergence to closed-form answers, compile, the NumPyro bench column); CI runs them too.
test-slow: $(BENCH_STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
