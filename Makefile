# The two commands: `make demo` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kerastricks-installed

.PHONY: setup demo test test-extended lint format bench docs mutants clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cv]'
	# tfimm's metadata says Python < 3.11 and pins old deps; it is pure Python and works here.
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python tfimm==0.2.14
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/kerastricks train configs/digits.yaml --overwrite

# Two test processes: most of the suite's time is single-threaded Python (tracing, model
# building), so two workers on two cores finish in ~45 % of the serial time (5.5 vs 12 min).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# Parity checks over every backbone family (timm's layer-decay LRs for 10 more families):
# ~2 min on 2 cores, kept out of `make test` to hold the suite under 15 min.
test-extended: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m extended

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/write_tfrecords.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/decode_costs.py
	$(BIN)/python benchmarks/lr_multipliers.py

# Mutation check, not part of `make test`: breaks one trick at a time in a private copy of
# the tree and runs the tests that must notice (tools/mutants.py; README "Mutation check").
# MUTANTS_ARGS="--rev HEAD" checks what is committed, "--fast" leaves out the resume mutants.
MUTANTS_ARGS ?=

mutants: $(STAMP)
	$(BIN)/python tools/mutants.py $(MUTANTS_ARGS)

docs: $(STAMP)
	$(BIN)/python -m kerastricks.config.reference --update

clean:
	rm -rf $(VENV) runs .pytest_cache
