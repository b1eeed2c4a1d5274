#!/usr/bin/env bash
# gpu_dist.sh [BUNDLE_DIR] [check|bench|all]: on a machine with 2 GPUs (NVLink), from the repository root, the
# split-model checks and benchmarks of a bundle made by scripts/bundle.sh:
#   1. test_dist on the CUDA backend (NCCL): TP2 and PP2 on the fixtures, f32 weights;
#   2. the 7B shapes (random bf16 weights): `recur logits` on one GPU, TP2 and PP2 over a
#      64-token prompt, compared (max |diff|, relative error, greedy agreement);
#   3. `recur bench` on one GPU, TP2 and PP2: decode at batch 1 / 256 / the largest batch,
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
     -x RECUR_SOURCE_DIR -np 2)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sed 's/^/# gpu: /'
nvidia-smi topo -m 2>/dev/null | head -3 | sed 's/^/# topo: /'
rc=0

if [ "$what" != bench ]; then
echo "== 1. test_dist (NCCL)"
for layout in "2 1" "1 2"; do
  "${mpi[@]}" "$bin/test_dist" cuda $layout >"$out/test_dist_${layout// /x}.log" 2>&1
  r=$?; tail -3 "$out/test_dist_${layout// /x}.log"; [ $r = 0 ] || { echo "test_dist $layout: exit $r"; rc=1; }
done

echo "== 2. 7B shapes: one GPU vs TP2 vs PP2 logits"
toks=$(python3 -c "print(','.join(str((i * 7919 + 11) % 50000) for i in range(64)))")
for model in rwkv7-7b xlstm-7b; do
  "$bin/recur" logits --backend cuda --model $model --tokens "$toks" --out "$out/$model-1gpu.f32" \
    --chunk 64 2>>"$out/logits.log" || { echo "$model 1gpu: failed"; rc=1; }
  for layout in "--tp 2" "--pp 2"; do
    tag=${layout// /}; tag=${tag#--}
    "${mpi[@]}" "$bin/recur" logits --backend cuda --model $model --tokens "$toks" --out "$out/$model-$tag.f32" \
      --chunk 64 $layout --log-level info >>"$out/logits.log" 2>&1 || { echo "$model $tag: failed"; rc=1; }
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

echo "== 3. bench: one GPU, TP2, PP2"
for model in rwkv7-7b xlstm-7b; do
  "$bin/recur" bench --model $model --batch ${BATCH:-1,256,max} --prompt 8192 --steps 20 \
    --json "$out/bench-$model-1gpu.json" || rc=1
  "${mpi[@]}" "$bin/recur" bench --model $model --tp 2 --batch ${BATCH:-1,256,max} --prompt 8192 --steps 20 \
    --json "$out/bench-$model-tp2.json" || rc=1
  "${mpi[@]}" "$bin/recur" bench --model $model --pp 2 --batch ${BATCH:-1,256,max} --prompt 8192 --steps 20 \
    --json "$out/bench-$model-pp2.json" || rc=1
done
exit $rc
