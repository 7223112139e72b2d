#!/usr/bin/env bash
# The CUDA backend's checks on a GPU, in one run of under 8 minutes (an H100's lease is short;
# the steps' time limits add up to 470 s):
#   1. `grist gpu check`: every kernel against its CPU twin on fresh random inputs, outputs
#      poisoned first (f32 paths < 1e-5, bf16 paths < 1e-2, relative to the largest reference
#      value; NaN never passes), attention with and without document masking, every RoPE
#      scaling; and the check model trained 20 steps on cuda and on cpu from the same start.
#   2. Speed against PyTorch on the same GPU: the 124 M Llama of tests/gpu/llama-124m.json at
#      batch 8 × 1,024, grist's `gpu bench` and tests/gpu/torch_bench.py (torch.compile, SDPA
#      flash attention, bf16 autocast, fused AdamW): tokens/s and MFU.
#   3. Long context: 8 k, 16 k and 32 k tokens with document masking, tokens/s and device memory.
#   4. Continual pretraining of SmolLM2-135M (from its GGUF) on tinyshakespeare, 50 steps: the
#      loss falls; tokens/s.
# Full logs go to $OUT (one file per step); a short table is printed last (tests/gpu/summarize.py).
#
# On the GPU machine (from the repository root; nothing is built there):
#   GRIST=.gpu/grist SMOLLM2=.gpu/SmolLM2-135M-Instruct.Q4_1.gguf TEXT=.gpu/tinyshakespeare.txt \
#     bash tests/gpu/check.sh
# where .gpu/ (git-ignored, carried) holds `cargo build --release`'s stripped binary and the
# inputs. Here, without a GPU, `bash tests/gpu/check.sh --dry-run` runs the same steps at toy
# sizes on the host reference device (GRIST_CUDA_DEVICE=reference) with the debug binary.
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-/tmp/grist-gpu-check}"
mkdir -p "$OUT"
GRIST="${GRIST:-target/release/grist}"
PY="${PYTHON:-python3}"
SMOLLM2="${SMOLLM2:-runs/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
TEXT="${TEXT:-../shared/data/tinyshakespeare/input.txt}"
export GRIST_CACHE_DIR="$OUT/cache"
export RUST_LOG="${RUST_LOG:-info}"

if [ $DRY = 1 ]; then
  export GRIST_CUDA_DEVICE=reference
  GRIST="${GRIST_DRY:-${CARGO_TARGET_DIR:-$HOME/.cache/grist-target}/debug/grist}"
  export GRIST_NVRTC_LIB="${GRIST_NVRTC_LIB:-$(bash tests/fetch_nvrtc.sh)}"
  MODEL="$OUT/tiny.json"
  echo '{"vocab_size": 512, "hidden_size": 64, "intermediate_size": 192, "num_layers": 2, "num_heads": 4, "max_position_embeddings": 64}' > "$MODEL"
  SPEED="--batch 2 --seq 64 --steps 2 --warmup 1"
  TORCH="--device cpu --batch 2 --seq 64 --steps 2 --warmup 1"
  LONG="256 512"
  SMOL="--batch 1 --seq 32 --steps 2 --warmup 0 --lr-warmup 2"
  SMOL_LIMIT=150  # the reference device runs a 135 M model slowly
else
  MODEL=tests/gpu/llama-124m.json
  SPEED="--batch 8 --seq 1024 --steps 20 --warmup 3"
  TORCH="--batch 8 --seq 1024 --steps 20 --warmup 10"
  LONG="8192 16384 32768"
  SMOL="--batch 8 --seq 512 --steps 50 --warmup 0 --lr-warmup 10"
  SMOL_LIMIT=50
fi
[ -x "$GRIST" ] || { echo "no grist binary at $GRIST (set GRIST)"; exit 2; }

# step NAME SECONDS COMMAND...: runs one step with a time limit, its output in $OUT/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" >&2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0))" >>"$OUT/steps.txt"
  [ $rc = 0 ] || { echo "   $name exited $rc (log: $OUT/$name.log)" >&2; tail -5 "$OUT/$name.log" >&2; }
}
: >"$OUT/steps.txt"

"$GRIST" --version >"$OUT/version.txt" 2>&1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } >"$OUT/device.txt"

step check 90 "$GRIST" gpu check --json
step grist_speed 60 "$GRIST" gpu bench --model "$MODEL" $SPEED
if "$PY" -c 'import torch' 2>/dev/null; then
  step torch_speed 150 "$PY" tests/gpu/torch_bench.py --config "$MODEL" $TORCH
else
  echo "torch_speed rc=skipped seconds=0 (no torch for $PY)" >>"$OUT/steps.txt"
fi
for seq in $LONG; do
  step "long_$seq" 40 "$GRIST" gpu bench --model "$MODEL" --batch 1 --seq "$seq" --steps 2 --warmup 1 --document-masking
done
if [ -s "$SMOLLM2" ] && [ -s "$TEXT" ]; then
  step smollm2 "$SMOL_LIMIT" "$GRIST" gpu bench --init "$SMOLLM2" --text "$TEXT" --lr 1e-4 $SMOL
else
  echo "smollm2 rc=skipped seconds=0 (no $SMOLLM2 or $TEXT)" >>"$OUT/steps.txt"
fi
"$PY" tests/gpu/summarize.py "$OUT" | tee "$OUT/summary.md"
