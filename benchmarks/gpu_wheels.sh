#!/usr/bin/env bash
# Download, here, the wheels that the GPU machine lacks (it has torch, transformers, peft and accelerate but no
# registry), into .whl/ at the repository root, for `benchmarks/gpu_suite.sh` there. .whl/ stays out of git.
#   bash benchmarks/gpu_wheels.sh       # then run the suite with .whl carried (device tool: carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .whl "$@"
}
download "diffusers==$(python3 -c 'import diffusers; print(diffusers.__version__)')"
download "datasets==$(python3 -c 'import datasets; print(datasets.__version__)')" dill multiprocess importlib_metadata
# The version the tests use; PyPI has DeepSpeed as a source archive only, so this usually finds no wheel.
download "deepspeed==$(python3 -c 'import deepspeed; print(deepspeed.__version__)' 2>/dev/null)" 2>/dev/null ||
    echo "No DeepSpeed wheel on the registry: the suite skips its DeepSpeed part."
ls -l .whl
