#!/usr/bin/env bash
# gpu_bench.sh [BUNDLE_DIR] [--peers] [extra recur bench options...]: on a GPU machine, from the
# repository root, `recur bench` for RWKV-7 7.2B and xLSTM 7B shapes (random bf16 weights),
# tables to stdout and JSON to $OUT (or /tmp). With --peers, then the peers at the same shapes
# on the same GPU (scripts/peer_bench.py), from wheels carried in .whl/ (see
# ../shared/DEVICE.md): flash-linear-attention's RWKV-7, transformers' xLSTM with the
# mlstm_kernels Triton kernels, and transformers' pure-PyTorch xLSTM.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-.devbundle}" && pwd)
shift || true
peers=0
if [ "${1:-}" = "--peers" ]; then peers=1; shift; fi
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
rc=0
for model in rwkv7-7b xlstm-7b; do
  echo "== recur bench --model $model $*"
  "$bundle/bin/recur" bench --model "$model" --json "$out/bench-$model.json" "$@" || rc=1
done
if [ $peers = 1 ]; then
  # Separate site dirs: the pure-PyTorch xLSTM must run without `xlstm` importable, since
  # transformers switches to xlstm's own blocks whenever it imports.
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_fla .whl/einops-*.whl .whl/fla_core-*.whl .whl/flash_linear_attention-*.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_xl .whl/einops-*.whl .whl/mlstm_kernels-*.whl .whl/xlstm-*.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_plain .whl/einops-*.whl
  for spec in "fla-rwkv7:/tmp/site_fla" "hf-xlstm-triton:/tmp/site_xl" "hf-xlstm-native:/tmp/site_plain"; do
    which=${spec%%:*}; site=${spec#*:}
    echo "== peer $which"
    PYTHONPATH=$site PYTHONUNBUFFERED=1 timeout "${PEER_TIMEOUT:-200}" \
      python3 scripts/peer_bench.py --which "$which" --json "$out/peer-$which.json" || echo "peer $which: exit $?"
  done
fi
exit $rc
