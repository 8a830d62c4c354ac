#!/usr/bin/env bash
# The GPU check, ready for a machine with one NVIDIA GPU (at most ~5 minutes there):
#   1. the CUDA-marked tests (training in fp32 and bf16, resume after kill -9, device tensors into the Recorder)
#   2. `confusion train --device cuda` for a short run, then `confusion score`
#   3. bench/train.py --device cuda (the trainer against a plain loop on the GPU)
# and a table of what passed and how long each took.
#   bash bench/gpu_check.sh            # on the GPU machine (python with torch there; the package from src/)
#   bash bench/gpu_check.sh --dry-run  # the same steps on the CPU, tiny, to check the script itself
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
epochs=3
if [ "${1:-}" = "--dry-run" ]; then device=cpu; epochs=1; export CONFUSION_TEST_DEVICE=cpu; fi
python="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
rows=()

step() {  # step NAME COMMAND...: run it, keep its log, record pass/fail and seconds
  local name="$1"; shift
  local started=$SECONDS
  if "$@" >"$scratch/$name.log" 2>&1; then status=passed; else status="FAILED (exit $?)"; fi
  rows+=("$(printf '%-34s %-16s %6d s' "$name" "$status" $((SECONDS - started)))")
  tail -n 15 "$scratch/$name.log"
}

echo "gpu_check on $device with $python"
if [ "$device" = cuda ]; then
  step device "$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0), 'bf16:', torch.cuda.is_bf16_supported())"
fi
step cuda-tests "$python" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider
step train "$python" -m confusion.cli train --data digits --arch cnn-s --members 3 --epochs "$epochs" --device "$device" --out "$scratch/run"
step score "$python" -m confusion.cli score "$scratch/run" --out "$scratch/scores.csv"
step bench-train "$python" bench/train.py --device "$device" --epochs 1 --limit-train $([ "$device" = cuda ] && echo 12000 || echo 1000)

echo
printf '%-34s %-16s %8s\n' step status time
for row in "${rows[@]}"; do echo "$row"; done
! printf '%s\n' "${rows[@]}" | grep -q FAILED
