#!/usr/bin/env bash
# gpu_dist.sh [BUNDLE_DIR] [check|bench|all]: on a machine with 2, 4 or 8 GPUs (NVLink), from the repository
# root, the split-model checks and benchmarks of a bundle made by scripts/bundle.sh, for every
# layout the GPUs allow (LAYOUTS="TPxPP ..." to choose): 2 GPUs: TP2, PP2; 4: also TP4, TP2xPP2,
# PP4 (issue 12); 8: also TP8, TP4xPP2, PP8 (issue 13):
#   1. test_dist on the CUDA backend (NCCL): each layout on the fixtures and the 8-head
#      synthetic models (f32 weights; a layout a fixture does not fit must be refused);
#   2. the 7B shapes (random bf16 weights): `recur logits` on one GPU and each layout over a
#      64-token prompt, compared (max |diff|, relative error, greedy agreement);
#   3. `recur bench` on one GPU and each layout: decode at batch 1 / 256 / the largest batch,
#      and the communication time per step.
# Logs and JSON to $OUT (or /tmp). NCCL_NVLS_ENABLE=0 for every rank (../shared/DEVICE.md).
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-.devbundle}" && pwd)
what=${2:-all}
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
export RECUR_FIXTURES_DIR="$bundle/fixtures" RECUR_SOURCE_DIR="$PWD"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=${OUT:-/tmp}
bin=$bundle/bin
mpi=(mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH -x RECUR_FIXTURES_DIR
     -x RECUR_SOURCE_DIR)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sed 's/^/# gpu: /'
nvidia-smi topo -m 2>/dev/null | head -3 | sed 's/^/# topo: /'
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
if [ -z "${LAYOUTS:-}" ]; then
  LAYOUTS="2x1 1x2"
  [ "$ngpu" -ge 4 ] && LAYOUTS="$LAYOUTS 4x1 2x2 1x4"
  [ "$ngpu" -ge 8 ] && LAYOUTS="$LAYOUTS 8x1 4x2 1x8"
fi
echo "# $ngpu GPUs; layouts (TPxPP): $LAYOUTS"
np_of() { echo $(( ${1%x*} * ${1#*x} )); }
flags_of() { local t=${1%x*} p=${1#*x} f=; [ "$t" != 1 ] && f="--tp $t"; [ "$p" != 1 ] && f="$f --pp $p"; echo $f; }
tag_of() { local t=${1%x*} p=${1#*x} g=; [ "$t" != 1 ] && g="tp$t"; [ "$p" != 1 ] && g="${g}pp$p"; echo $g; }
rc=0

if [ "$what" != bench ]; then
echo "== 1. test_dist (NCCL)"
for layout in $LAYOUTS; do
  "${mpi[@]}" -np "$(np_of $layout)" "$bin/test_dist" cuda ${layout%x*} ${layout#*x} >"$out/test_dist_$layout.log" 2>&1
  r=$?; tail -3 "$out/test_dist_$layout.log"; [ $r = 0 ] || { echo "test_dist $layout: exit $r"; rc=1; }
done

echo "== 2. 7B shapes: one GPU vs each layout's logits"
toks=$(python3 -c "print(','.join(str((i * 7919 + 11) % 50000) for i in range(64)))")
for model in rwkv7-7b xlstm-7b; do
  "$bin/recur" logits --backend cuda --model $model --tokens "$toks" --out "$out/$model-1gpu.f32" \
    --chunk 64 2>>"$out/logits.log" || { echo "$model 1gpu: failed"; rc=1; }
  for layout in $LAYOUTS; do
    tag=$(tag_of $layout)
    "${mpi[@]}" -np "$(np_of $layout)" "$bin/recur" logits --backend cuda --model $model --tokens "$toks" \
      --out "$out/$model-$tag.f32" --chunk 64 $(flags_of $layout) --log-level info >>"$out/logits.log" 2>&1 ||
      { echo "$model $tag: failed"; rc=1; }
    python3 - "$out/$model-1gpu.f32" "$out/$model-$tag.f32" "$model $tag" <<'EOF' || rc=1
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype=np.float32); b = np.fromfile(sys.argv[2], dtype=np.float32)
V = 65536 if "rwkv" in sys.argv[3] else 50304
a = a.reshape(-1, V); b = b.reshape(-1, V)
rel = np.linalg.norm(a - b) / np.linalg.norm(a)
agree = (a.argmax(1) == b.argmax(1)).mean()
print(f"{sys.argv[3]:>16}: max|diff| {np.abs(a-b).max():.3e}  rel {rel:.3e}  greedy agree {agree*100:.1f}%  "
      f"finite {np.isfinite(b).all()}")
sys.exit(0 if rel < 1e-2 and agree >= 0.95 and np.isfinite(b).all() else 1)
EOF
  done
done
grep -h "rank .* read" "$out/logits.log" | sed 's/^/# /' | head -8
fi
[ "$what" = check ] && exit $rc

echo "== 3. bench: one GPU and each layout"
for model in rwkv7-7b xlstm-7b; do
  "$bin/recur" bench --model $model --batch ${BATCH:-1,256,max} --prompt 8192 --steps 20 \
    --json "$out/bench-$model-1gpu.json" || rc=1
  for layout in $LAYOUTS; do
    "${mpi[@]}" -np "$(np_of $layout)" "$bin/recur" bench --model $model $(flags_of $layout) \
      --batch ${BATCH:-1,256,max} --prompt 8192 --steps 20 --json "$out/bench-$model-$(tag_of $layout).json" || rc=1
  done
done
exit $rc
