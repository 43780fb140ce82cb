#!/usr/bin/env bash
# Every GPU figure of issue 17 in one call: training-step time and peak GPU memory of each network at 160×224×192
# (fp32, bf16, bf16 + channels_last, bf16 + torch.compile), whether DP-ConvIC-MFC fits 48 GB with and without level
# checkpointing, `dirbench register` seconds per pair, and the `mini` tier if its config and data are there.
#
# Usage (from the repository root, the project installed):
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine; writes results/gpu_check/
#   bash benchmarks/gpu_check.sh --smoke         # CPU, 32×32×32, one step, a few methods: the script runs end to end
# Options: --out DIR (default results/gpu_check), --device cuda:N. Environment: STEPS (3), WARMUP (1),
# METHODS (default: Table 1's networks), MINI_TIMEOUT (seconds for the mini tier, default 900; 0 skips it).
# Every section goes on after a failure (a method that does not fit is an error row); summary.txt collects them.
set -uo pipefail

SMOKE=0
OUT=results/gpu_check
DEVICE=cuda
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --out) OUT="$2"; shift ;;
        --device) DEVICE="$2"; shift ;;
        *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

TABLE1=voxelmorph,transmorph,vfa,sitreg,dp-conv-mf,dp-conv-mfc,dp-conv-c,dp-convic-mf,dp-convic-c,dp-vfa,dp-convic-mfc
if [[ $SMOKE == 1 ]]; then
    DEVICE=cpu
    SIZE=(32 32 32)
    STEPS=${STEPS:-1}
    WARMUP=${WARMUP:-0}
    METHODS=${METHODS:-voxelmorph,dp-conv-mf,dp-convic-mfc}
    FOCUS=dp-conv-mf
    REG_SHAPE="32, 32, 32"
    OUT=${OUT%/}-smoke
else
    SIZE=(160 224 192)
    STEPS=${STEPS:-3}
    WARMUP=${WARMUP:-1}
    METHODS=${METHODS:-$TABLE1}
    FOCUS=dp-conv-mf,dp-convic-c,vfa,sitreg
    REG_SHAPE="160, 224, 192"
fi
MINI_TIMEOUT=${MINI_TIMEOUT:-900}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
log() { echo "$*" | tee -a "$SUMMARY"; }
step() { python benchmarks/train_step.py --device "$DEVICE" --size "${SIZE[@]}" --steps "$STEPS" --warmup "$WARMUP" "$@"; }

log "gpu_check $(date -Is), device $DEVICE, size ${SIZE[*]}, steps $STEPS (+$WARMUP warm-up)"
{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; python -c "import torch; print('torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"; } \
    > "$OUT/environment.txt" 2>&1
log "$(tail -n 1 "$OUT/environment.txt")"

# 1. training step, every method: fp32 and bf16 (channels_last and torch.compile: section 4, on FOCUS).
run_variant() {  # name, methods, flags...
    local name=$1 methods=$2
    shift 2
    log ""
    log "== train step: $name ($methods)"
    step --methods "$methods" --json "$OUT/train_$name.json" "$@" > "$OUT/train_$name.txt" 2>&1
    log "exit status $?"
    sed -n '/^| method/,$p' "$OUT/train_$name.txt" | tee -a "$SUMMARY" > /dev/null
}
run_variant fp32 "$METHODS"
run_variant bf16 "$METHODS" --amp bf16
# 2. DP-ConvIC-MFC at full size: does it fit 48 GB (CUDA max allocated + ~1 GiB context), with / without checkpointing?
run_variant mfc_fp32 dp-convic-mfc
run_variant mfc_fp32_checkpoint dp-convic-mfc --checkpoint
run_variant mfc_bf16_checkpoint dp-convic-mfc --amp bf16 --checkpoint
python - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\n== DP-ConvIC-MFC and a 48 GB card (peak allocated + 1 GiB CUDA context and allocator slack)")
for name in ("mfc_fp32", "mfc_fp32_checkpoint", "mfc_bf16_checkpoint", "bf16"):
    path = out / f"train_{name}.json"
    rows = [r for r in json.loads(path.read_text())["rows"] if r["method"] == "dp-convic-mfc"] if path.is_file() else []
    for r in rows:
        if "error" in r:
            print(f"{name}: error ({r['error']})")
        else:
            need = r["peak_mib"] / 1024 + 1.0
            print(f"{name}: peak {r['peak_mib'] / 1024:.1f} GiB ({r['peak_kind']}), step {r['train_s']:.2f} s: "
                  f"fits 48 GB: {'yes' if need <= 48 * 1e9 / 2**30 else 'NO'}")
EOF

# 3. `dirbench register`: seconds per pair (batch mode, model loaded once) on a synthetic dataset of the full size.
log ""
log "== dirbench register, seconds per pair (shape $REG_SHAPE)"
REG="$OUT/register"
rm -rf "$REG"
mkdir -p "$REG"
python - "$REG" "$REG_SHAPE" <<'EOF' >> "$OUT/register.log" 2>&1
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from synthetic import make_dataset
root = Path(sys.argv[1]) / "data"
make_dataset(root, n_train=2, n_eval=3, shape=tuple(int(n) for n in sys.argv[2].split(",")))
EOF
for method in dp-conv-mf dp-convic-c; do
    if dirbench train --method "$method" --dataset "$REG/data/dataset.json" --out "$REG/run_$method" --epochs 1 \
        --samples-per-epoch 2 --val-max-pairs 1 --device "$DEVICE" --no-progress >> "$OUT/register.log" 2>&1; then
        start=$(date +%s.%N)
        dirbench register --checkpoint "$REG/run_$method/best.pt" --pairs "$REG/data/dataset.json:test" \
            --out-dir "$REG/disp_$method" --device "$DEVICE" >> "$OUT/register.log" 2>&1
        status=$?
        end=$(date +%s.%N)
        pairs=$(find "$REG/disp_$method" -name 'disp_*.nii.gz' 2>/dev/null | wc -l)
        log "$method: exit status $status, $pairs pairs in $(python -c "print(f'{$end - $start:.1f}')") s" \
            "($(python -c "print(f'{($end - $start) / max($pairs, 1):.2f}')") s per pair, start-up and model load included)"
    else
        log "$method: training the throw-away checkpoint failed (see register.log)"
    fi
done

# 4. channels_last and torch.compile (compilation takes minutes: last but the mini tier), methods in FOCUS.
run_variant bf16_channels_last "$FOCUS" --amp bf16 --channels-last
run_variant bf16_compile "$FOCUS" --amp bf16 --compile


# 5. the mini tier (workflow/config/mini.yaml), if it exists and time is left.
log ""
if [[ $SMOKE == 1 || $MINI_TIMEOUT == 0 ]]; then
    log "== mini tier: skipped (smoke run or MINI_TIMEOUT=0)"
elif [[ -f workflow/config/mini.yaml ]]; then
    start=$(date +%s)
    timeout "$MINI_TIMEOUT" snakemake --configfile workflow/config/mini.yaml --cores all > "$OUT/mini.log" 2>&1
    log "== mini tier: exit status $? after $(( $(date +%s) - start )) s (timeout $MINI_TIMEOUT s; log mini.log)"
else
    log "== mini tier: workflow/config/mini.yaml not found"
fi
log ""
log "done $(date -Is); tables and logs in $OUT"
