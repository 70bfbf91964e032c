# repotune: `make run` sets up .venv and runs the workflow on the default config;
# `make test` sets up .venv and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run dry-run test lint fmt bench lock clean

setup: $(STAMP)

# Reinstall whenever the pins change. torch comes first so that nothing pulls a CUDA build.
$(STAMP): requirements.txt requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock torch
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)

dry-run: setup
	$(BIN)/snakemake --cores $(CORES) --dry-run

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules

# Each benchmark runs the project and its named baseline on the same input and prints the ratio.
bench: setup
	$(BIN)/python -m benchmarks.extract
	$(BIN)/python -m benchmarks.curate
	$(BIN)/python -m benchmarks.tokenize
	$(BIN)/python -m benchmarks.packing
	$(BIN)/python -m benchmarks.train
	$(BIN)/python -m benchmarks.generate
	$(BIN)/python -m benchmarks.noop_dryrun

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf results logs .snakemake

# -- manifest, verify, dag --
.PHONY: verify dag

# Recheck every hash in each model's manifest; non-zero exit when anything changed.
verify: setup
	@status=0; for manifest in results/*/manifest.json; do \
		$(BIN)/python -m repotune.manifest.verify "$$manifest" || status=1; done; exit $$status

# The rule graph as docs/rulegraph.svg (shown in the README) and docs/rulegraph.dot (its source,
# which tests/test_dag.py compares with the rules). Needs graphviz's `dot`.
dag: setup
	@command -v dot >/dev/null 2>&1 || { echo "make dag: graphviz 'dot' not found;" \
		"install it (apt-get install graphviz, brew install graphviz or conda install graphviz)"; exit 1; }
	$(BIN)/snakemake --rulegraph 2>/dev/null > docs/rulegraph.dot.new
	mv docs/rulegraph.dot.new docs/rulegraph.dot
	dot -Tsvg docs/rulegraph.dot > docs/rulegraph.svg
