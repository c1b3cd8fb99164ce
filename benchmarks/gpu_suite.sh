#!/usr/bin/env bash
# Every GPU measurement of the project in one command that fits one 10-minute run on one GPU:
#
#   bash benchmarks/gpu_wheels.sh              # here, once: the wheels the GPU machine lacks, into .whl/
#   bash benchmarks/gpu_suite.sh [OUT_DIR]     # there: results under OUT_DIR, else $OUT, else gpu-results/
#
# Each part has its own time limit and log, so a part that fails or hangs still leaves the others' results.
# summary.md lists every part with its exit status and the tables the benchmarks printed; card.txt names the GPU.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-results}}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHON="${PYTHON:-python3}"
# SMOKE="--tiny --device cpu" runs the suite's logic on a CPU in a minute (tiny models; the sharded parts fail there).
SMOKE="${SMOKE:-}"
# PARTS="qwenimage_eager sd35m_compiled" runs only the parts named (default: all), e.g. to finish in a second call
# what the first one's 10 minutes did not reach.
PARTS="${PARTS:-}"

if compgen -G ".whl/*.whl" >/dev/null; then  # the machine has no registry: carried wheels, installed aside
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >"$OUT_DIR/install.log" 2>&1 || echo "wheel install failed, see install.log" >>"$OUT_DIR/summary.md"
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PYTHON" -c \
    "import torch, diffusers, peft, accelerate; print('torch', torch.__version__, '| diffusers', diffusers.__version__, \
'| peft', peft.__version__, '| accelerate', accelerate.__version__)"; } >"$OUT_DIR/card.txt" 2>&1

echo "# GPU suite, $(date -u +%Y-%m-%dT%H:%MZ), $(head -2 "$OUT_DIR/card.txt" | tail -1)" >>"$OUT_DIR/summary.md"

# wanted NAME: whether PARTS names it (or is empty).
wanted() { [ -z "$PARTS" ] || [[ " $PARTS " == *" $1 "* ]]; }
# skip NAME WHY: say in summary.md why a wanted part did not run.
skip() { if wanted "$1"; then echo -e "\n## $1: SKIPPED, $2" >>"$OUT_DIR/summary.md"; fi; }
# part NAME SECONDS COMMAND...: run with a time limit, log to NAME.log, and copy its tables into summary.md.
part() {
    local name=$1 limit=$2 start status
    shift 2
    wanted "$name" || return 0
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    status=$?
    {
        echo; echo "## $name: exit $status in $(( $(date +%s) - start )) s (limit $limit s)"
        grep -E '^\||images/s|peak memory|sampling batch' "$OUT_DIR/$name.log" || grep -v -E 'torchvision|AutoencoderKL' "$OUT_DIR/$name.log" | tail -5
    } >>"$OUT_DIR/summary.md"
}

SUITE_START=$(date +%s)
BUDGET=${SUITE_BUDGET:-570}  # seconds: the whole suite inside one 10-minute device call
# part_in_time_left NAME COMMAND...: the part, limited to what is left of BUDGET; skipped at 60 s or less.
part_in_time_left() {
    local name=$1 left=$(( BUDGET - ($(date +%s) - SUITE_START) ))
    shift
    if [ "$left" -gt 60 ]; then
        part "$name" "$left" "$@"
    else
        skip "$name" "${left} s left (run it alone: PARTS=$name)"
    fi
}

part sd35m_eager 90 "$PYTHON" benchmarks/gpu_iteration.py --iterations 1 $SMOKE
part flux1dev_eager 100 "$PYTHON" benchmarks/gpu_iteration.py --model flux1dev --gradient_checkpointing \
    --prompts 1 --group_size 8 --micro_batch 8 --iterations 1 $SMOKE
part qwenimage_eager 120 "$PYTHON" benchmarks/gpu_iteration.py --model qwenimage --gradient_checkpointing \
    --prompts 1 --group_size 8 --micro_batch 8 --iterations 1 $SMOKE

# FSDP2 and DeepSpeed ZeRO-2: train 4 iterations, resume a copy from checkpoint-2, compare the two LoRAs.
sharded() {
    local config=$1 dir
    dir=$(mktemp -d)
    accelerate launch --config_file "$config" --num_processes 1 benchmarks/sharded_check.py train "$dir/full" &&
        mkdir -p "$dir/resumed" && cp -r "$dir/full/checkpoint-2" "$dir/resumed/" &&
        accelerate launch --config_file "$config" --num_processes 1 benchmarks/sharded_check.py train "$dir/resumed" &&
        "$PYTHON" benchmarks/sharded_check.py compare "$dir/full" "$dir/resumed"
}
export -f sharded  # `timeout` runs programs, not functions: each sharded part runs it in a bash of its own
part fsdp2_resume 60 bash -c 'sharded "$1"' _ examples/accelerate_configs/fsdp.yaml
if "$PYTHON" -c "import deepspeed" >/dev/null 2>&1; then
    part deepspeed_zero2_resume 60 bash -c 'sharded "$1"' _ examples/accelerate_configs/deepspeed_zero2.yaml
else
    skip deepspeed_zero2_resume "DeepSpeed does not import on this machine"
fi
# Last, with whatever time is left: compilation alone took 328 s on an H200 (README).
part_in_time_left sd35m_compiled "$PYTHON" benchmarks/gpu_iteration.py --compile --iterations 1 $SMOKE
# Then the eager iteration as before the old/reference pair and fused AdamW, for their gain.
part_in_time_left sd35m_eager_before_pair "$PYTHON" benchmarks/gpu_iteration.py --iterations 1 --before_pair $SMOKE
# And the sampling batch chosen from the device's memory (sample_batch_size unset).
part_in_time_left sd35m_eager_batch_from_memory "$PYTHON" benchmarks/gpu_iteration.py --iterations 1 \
    --sampling_batch_from_memory $SMOKE
cat "$OUT_DIR/summary.md"
