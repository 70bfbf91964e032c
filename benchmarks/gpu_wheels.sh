#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.py on a lent GPU machine that cannot reach PyPI.
#
# That machine's image has Python 3.12 with a CUDA build of PyTorch, numpy, pyarrow, pandas,
# accelerate, tokenizers, safetensors, matplotlib and PyYAML, but not bitsandbytes, datasets,
# snakemake, and an older transformers than we pin. This fetches the missing ones, at the
# versions requirements.lock pins, as cp312 manylinux wheels into two folders that each stay
# under a call's 64 MiB carry limit (bitsandbytes alone is 43 MB):
#
#   benchmarks/out/wheels-train     bitsandbytes, transformers, peft, datasets, jsonschema (+ deps)
#   benchmarks/out/wheels-workflow  transformers, peft, datasets, snakemake with its dependencies
#                                   (not PuLP: Snakemake falls back to its greedy scheduler), and
#                                   what the stages import beyond the model parts: pyahocorasick
#                                   (curate's redaction) and gguf (export)
#
# benchmarks/out/ is git-ignored. Run here (with PyPI), then see BENCHMARKS.md for the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=(.venv/bin/python -m pip)
TARGET=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)

pin() {  # NAME -> NAME==VERSION from requirements.lock (case-insensitive, - and _ alike)
    local wanted
    wanted=$(echo "$1" | tr 'A-Z_' 'a-z-')
    awk -F'==' -v want="$wanted" \
        '{name = tolower($1); gsub("_", "-", name); if (name == want) print $0}' requirements.lock
}

fetch() {  # FOLDER NAME... : download the pinned wheels of NAME... into FOLDER
    local folder=$1
    shift
    mkdir -p "$folder"
    local pins=()
    for name in "$@"; do
        pins+=("$(pin "$name")")
    done
    "${PIP[@]}" download -q --no-deps --only-binary=:all: "${TARGET[@]}" -d "$folder" "${pins[@]}"
}

MODEL=(transformers peft datasets dill multiprocess jsonschema jsonschema-specifications referencing
    rpds-py)
SNAKEMAKE=(snakemake GitPython gitdb smmap immutables ConfigArgParse docutils humanfriendly
    nbformat fastjsonschema
    jupyter_core traitlets platformdirs tenacity smart_open snakemake-interface-common
    snakemake-interface-executor-plugins snakemake-interface-logger-plugins
    snakemake-interface-report-plugins snakemake-interface-scheduler-plugins
    snakemake-interface-storage-plugins throttler yte dpath conda-inject sqlmodel SQLAlchemy
    greenlet pydantic pydantic_core annotated-types typing-inspection argparse-dataclass)

rm -rf benchmarks/out/wheels-train benchmarks/out/wheels-workflow
fetch benchmarks/out/wheels-train bitsandbytes "${MODEL[@]}"
fetch benchmarks/out/wheels-workflow "${MODEL[@]}" "${SNAKEMAKE[@]}" pyahocorasick gguf
# connection_pool is published as a source archive only: build its (pure Python) wheel here.
"${PIP[@]}" wheel -q --no-deps --no-binary=:all: -w benchmarks/out/wheels-workflow \
    "$(pin connection_pool)"
du -sh benchmarks/out/wheels-train benchmarks/out/wheels-workflow
