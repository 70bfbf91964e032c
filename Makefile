# repotune: `make run` sets up .venv and runs the workflow on the default config;
# `make test` sets up .venv and runs the whole test suite; `make test-fast` all but the slow tests.
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run dry-run base test test-fast test-export mutation planted-bugs lint fmt bench bench-gpu test-slurm lock clean

setup: $(STAMP)

# Reinstall whenever the pins change. torch comes first so that nothing pulls a CUDA build.
# Last, the project itself (editable, no dependencies): it puts the `repotune` command in .venv/bin.
$(STAMP): requirements.txt requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock torch
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# bubblewrap isolates behavioural python tests when code execution is enabled (docs/sandbox.md);
# graphviz draws the rule graph (make dag). Tests that need them skip with a reason where they
# cannot be installed (not root, no apt-get).
system-deps:
	@command -v bwrap >/dev/null 2>&1 && command -v dot >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq bubblewrap graphviz >/dev/null 2>&1; } \
		|| echo "bubblewrap/graphviz not installed (needs root and apt-get): their tests will skip"

run: setup
	$(BIN)/snakemake --cores $(CORES)

dry-run: setup
	$(BIN)/snakemake --cores $(CORES) --dry-run

# Opt-in: a small code model pretrained here on this machine's Python (docs/base.md), the base of
# the local-python preset. Cached by corpus and settings: a second `make base` does nothing.
base: setup
	$(BIN)/snakemake --cores $(CORES) pretrain_base

# Test files are spread over TEST_WORKERS processes (pytest-xdist; whole files, so a module's
# fixtures are built once); TEST_WORKERS=0 runs them in this process. Files go out in
# collection order, the longest first (tests/conftest.py), not xdist's by number of tests.
TEST_WORKERS ?= auto
test: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The inner loop: every test but those marked slow (they run the workflow or train a model).
test-fast: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# llama.cpp as a real client of the export: llama-cpp-python compiles llama.cpp from source on
# install (long on a small machine), so it goes to $(LLAMA_CPP), outside .venv, only here.
LLAMA_CPP ?= .llama-cpp
test-export: setup $(LLAMA_CPP)/.installed
	PYTHONPATH=$(LLAMA_CPP) $(BIN)/pytest tests/test_llama_cpp.py tests/test_gguf.py tests/test_export.py

# Mutation score per module (CONTRIBUTING.md); not part of `make test`: it reruns each
# module's unit tests once per mutant. Niced, one mutant at a time; MODULES picks some, e.g.
# `make mutation MODULES="timesplit filters"`.
MODULES ?=
mutation: setup
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c requirements.lock
	nice -n 15 $(BIN)/python ci/mutation.py --max-children 1 $(MODULES)

# Each document/prompt bug of issue 27 put back must fail tests/test_learnability.py
# (CONTRIBUTING.md): one workflow run per bug, a few minutes each on 2 cores.
planted-bugs: setup
	$(BIN)/python ci/planted_bugs.py

# Only the library is built (no llama.cpp tests, examples, tools, server or llava).
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF
$(LLAMA_CPP)/.installed:
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-deps \
		--target $(LLAMA_CPP) llama-cpp-python==0.3.36 diskcache==5.6.3
	touch $@

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
	$(BIN)/python -m benchmarks.decode_step
	$(BIN)/python -m benchmarks.suggest
	$(BIN)/python -m benchmarks.serve
	$(BIN)/python -m benchmarks.snapshot
	$(BIN)/python -m benchmarks.noop_dryrun
	$(BIN)/python -m benchmarks.scale --sizes 5000 50000

# One CUDA GPU, no downloads: QLoRA/bf16/fp16 training, OOM back-off, 8-bit optimizer, int8,
# GPU generation and the workflow end to end, in at most 8 minutes (BENCHMARKS.md, GPU check).
GPU_OUT ?= benchmarks/out/gpu-check
bench-gpu: setup
	$(BIN)/python -m benchmarks.gpu_check --out $(GPU_OUT)

# Opt-in, as root: a one-node SLURM cluster on this machine from Debian's packages, then the
# workflow end to end through profiles/slurm with the train job scancel'ed mid-run
# (docs/cluster.md). Niced: it takes the machine for several minutes.
test-slurm: setup
	ci/slurm/start-cluster.sh
	nice $(BIN)/python ci/slurm/run_workflow.py

# The runtime lock: requirements.txt and what it needs, transitively, as installed in .venv; not
# a pip freeze, which would also lock what `make mutation` installed (requirements-dev.txt).
lock: setup
	$(BIN)/python ci/lock.py requirements.txt > requirements.lock.new
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
