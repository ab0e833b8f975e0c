# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean constraints faults

venv: $(STAMP)

# Re-installs when pyproject.toml or constraints.txt is newer than the stamp.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[embedded,dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/batchbridge demo

test: venv
	$(BIN)/pytest -q

# Every row of the fault matrix (tests/faults) and its table; `make test` runs a fast subset.
FAULTS_SEEDS ?= 3
faults: venv
	FAULTS_MATRIX=full FAULTS_SEEDS=$(FAULTS_SEEDS) $(BIN)/pytest -q tests/faults

# Style, formatting and types; CI runs it before the tests.
lint: venv
	$(BIN)/ruff check connector tests benchmarks
	$(BIN)/ruff format --check connector tests benchmarks
	$(BIN)/mypy connector

# One table per goal of the scale issue, each with its same-run baseline; BENCH_SCALE
# (default 1) multiplies the sizes, BENCH_INFLIGHT sets the in-flight size. Fails only when
# a benchmark could not run, not when it misses its target.
bench: venv
	@status=0; for f in benchmarks/bench_*.py; do \
		[ -e "$$f" ] || { echo "no benchmarks"; exit 1; }; \
		echo "== $$f"; $(BIN)/python $$f || { echo "!! $$f could not run"; status=1; }; \
	done; exit $$status

# Pins what CI installs; run after changing dependencies in pyproject.toml.
constraints: venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^kafka-batch-bridge' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .batchbridge build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
