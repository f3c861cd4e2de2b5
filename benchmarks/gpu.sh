#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, in one command, most important
# first, each stage under its own time limit and all within DEADLINE seconds:
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # JSON lines in OUT_DIR/results.jsonl, log beside
#   STAGES="b16_infer h14_remat" bash benchmarks/gpu.sh   # some of the stages below, in that order
#
# Needs jax with CUDA, keras, torch and timm (not TensorFlow: model benchmarks run without it).
# 1. ViT-B/16 training, batch 256, bf16, batches from host memory: vitbench (Keras `fit`, as the
#    training loops run) against timm eager and timm + torch.compile.
# 2. ViT-B/16 inference, batch 1024, against the same peers.
# 3. ViT-L/16 training, batch 128, with the official dropout 0.1 and without, and inference,
#    batch 1024.
# 4. ViT-H/14 at VTAB's 384 px (27x27 patches), bf16, rematerialised: the largest micro-batch
#    (512 halved) whose training step fits in 74 GiB, i.e. on an 80 GB card, wherever this runs
#    (compiling it takes about two minutes).
# 5. ViT-B/16 training and inference with the batch already on the device.
# 6. Where ViT-L/16's training step spends its GPU time, vitbench against timm + torch.compile
#    (benchmarks/profile_kernels.py; its summary goes to the log).
# Not run unless STAGES names them: the candidates of benchmarks/variants.py for the two rows
# still behind timm + torch.compile, `transfer_variants` (ViT-B/16 inference from host memory,
# ~4 minutes) and `dropout_variants` (ViT-L/16 training with dropout 0.1, ~7 minutes), each
# beside timm + compile; more than one 10-minute command holds, so run them as two:
#   STAGES=transfer_variants DEADLINE=280 bash benchmarks/gpu.sh
#   STAGES=dropout_variants DEADLINE=460 bash benchmarks/gpu.sh
# And `b16_sweep` (~5 minutes): 4 ViT-B/16 fine-tuning runs at VTAB-1k's 384 px stacked, as
# `vitbench run --sweep` trains a task's tune runs, against one run alone (vitbench bench --mode
# sweep):
#   STAGES=b16_sweep DEADLINE=330 bash benchmarks/gpu.sh
set -u
OUT_DIR=${1:-${OUT:-/tmp/vitbench-gpu}}
DEADLINE=${DEADLINE:-560}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
LOG=$OUT_DIR/log.txt
START=$(date +%s)
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2
# JAX and torch share the card inside peers.py: JAX takes memory as it needs it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

left() { echo $((DEADLINE - ($(date +%s) - START))); }

stage() {  # stage LIMIT_SECONDS COMMAND...: run if time is left, JSON lines to RESULTS
    local limit=$1; shift
    local budget; budget=$(left)
    if [ "$budget" -lt 30 ]; then echo "skipped (no time left): $*" | tee -a "$LOG"; return 1; fi
    [ "$limit" -gt "$budget" ] && limit=$budget
    echo "=== [$(($(date +%s) - START)) s] $* (limit ${limit} s)" | tee -a "$LOG"
    timeout "$limit" "$@" > "$OUT_DIR/stage.out" 2> "$OUT_DIR/stage.err"
    local status=$?
    cat "$OUT_DIR/stage.err" >> "$LOG"
    grep '^{' "$OUT_DIR/stage.out" >> "$RESULTS"
    grep -v '^{' "$OUT_DIR/stage.out" | tee -a "$LOG"
    grep '^{' "$OUT_DIR/stage.out" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    name = r["implementation"] + (" " + r["variant"] if r.get("variant", "timm") != "timm" else "")
    copy = ", copy %.1f GB/s" % r["copy_gb_per_second"] if "copy_gb_per_second" in r else ""
    print("  %-24s %s %s b%d %dpx %s: %.1f img/s, MFU %.3f, peak %.1f GiB%s" % (
        name, r["model"], r["mode"], r["batch_size"], r["resolution"],
        r.get("input", ""), r["images_per_second"], r["mfu"] or 0, r["peak_memory_gb"] or 0,
        copy))
' | tee -a "$LOG"
    echo "    exit $status" | tee -a "$LOG"
    return $status
}

bench=(python3 -c "from vitbench.cli import run; run()" bench)
peers=(python3 benchmarks/peers.py)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
python3 -c "import jax, keras, torch, timm; print('jax', jax.__version__, jax.devices(), \
'keras', keras.__version__, 'torch', torch.__version__, 'timm', timm.__version__)" 2>&1 | tee -a "$LOG"

b16_train() {
    stage 170 "${peers[@]}" --model vit_b16 --mode train --batch_size 256 --precision bf16 --batches 16
}

h14_remat() {  # an 80 GB card: 74 GiB for JAX's pool whatever this card has
    local total_mib fraction micro
    total_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    fraction=$(python3 -c "print(round(74 * 1024 / $total_mib, 3))")
    for micro in 512 256 128 64 32; do
        if (export XLA_PYTHON_CLIENT_PREALLOCATE=true XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction
            stage 240 "${bench[@]}" --mode train --model vit_h14 --resolution 384 \
            --precision bf16 --remat --batch_size "$micro" --batches 2 --warmup 1 \
            --input device); then
            echo "largest micro-batch (ViT-H/14, 384 px, remat, 74 GiB): $micro" | tee -a "$LOG"
            return 0
        fi
        grep -q "RESOURCE_EXHAUSTED\|Out of memory\|out of memory" "$OUT_DIR/stage.err" || return 1
    done
}

b16_infer() {
    stage 120 "${peers[@]}" --model vit_b16 --mode infer --batch_size 1024 --precision bf16 --batches 10
}
l16_train() {
    stage 150 "${peers[@]}" --model vit_l16 --mode train --batch_size 128 --precision bf16 --batches 16
    stage 150 "${peers[@]}" --model vit_l16 --mode train --batch_size 128 --precision bf16 --batches 16 \
        --dropout 0
}
l16_infer() {
    stage 120 "${peers[@]}" --model vit_l16 --mode infer --batch_size 1024 --precision bf16 --batches 10
}
b16_device() {
    stage 60 "${bench[@]}" --mode train --model vit_b16 --batch_size 256 --precision bf16 \
        --batches 16 --input device
    stage 60 "${bench[@]}" --mode infer --model vit_b16 --batch_size 1024 --precision bf16 \
        --batches 10 --input device
}

l16_kernels() {
    stage 200 python3 benchmarks/profile_kernels.py --model vit_l16 --batch_size 128 --out "$OUT_DIR/kernels"
    rm -rf "$OUT_DIR/kernels/jax_trace"  # large; the summary is in the log and kernels/*.json
}

b16_sweep() {
    stage 320 "${bench[@]}" --mode sweep --model vit_b16 --members 4 --resolution 384 \
        --batch_size 512 --micro_batch_size 64 --precision bf16 --batches 4 --warmup 1
}

transfer_variants() {
    stage 240 python3 benchmarks/variants.py transfer --model vit_b16 --batch_size 1024 \
        --batches 10 --variants pinned,dispatch_first,chunks4,chunks2
}
dropout_variants() {  # the likeliest first; Keras' masks and none were measured before (docs/performance.md)
    stage 420 python3 benchmarks/variants.py dropout --model vit_l16 --batch_size 128 \
        --variants packed,recomputed,materialised,kernel,rbg
}

for group in ${STAGES:-b16_train b16_infer l16_train l16_infer h14_remat b16_device l16_kernels}; do
    "$group"
done
echo "=== done in $(($(date +%s) - START)) s" | tee -a "$LOG"
