#!/bin/bash
# session 21, call 1: layernorm + token shift fused (RECUR_NORM_SHIFT: 0 = two launches, 1|2|4|8 = column groups)
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib RECUR_FIXTURES_DIR=$D/fixtures
R=$OUT/c1; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 280 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > $R/gpu.txt
t test_backend_cuda $D/bin/test_backend_cuda cuda
t test_models_cuda $D/bin/test_models_cuda
t test_graph_decode $D/bin/test_graph_decode
t test_state_bf16_cuda $D/bin/test_state_bf16_cuda cuda
for rep in 1 2 3; do for w in bf16 int8 fp8; do for v in 0 x; do
  if [ $v = 0 ]; then export RECUR_NORM_SHIFT=0; else unset RECUR_NORM_SHIFT; fi
  t b1-$w-$v-$rep $D/bin/recur bench --model rwkv7-7b --weights $w --batch 1 --steps 200 --prompt "" --json $R/b1-$w-$v-$rep.json
done; done; done
unset RECUR_NORM_SHIFT
for g in 1 2 4 8; do RECUR_NORM_SHIFT=$g t g$g-int8 $D/bin/recur bench --model rwkv7-7b --weights int8 --batch 1 --steps 200 --prompt ""; done
for w in bf16 int8; do for v in 0 x; do
  if [ $v = 0 ]; then export RECUR_NORM_SHIFT=0; else unset RECUR_NORM_SHIFT; fi
  t wide-$w-$v $D/bin/recur bench --model rwkv7-7b --weights $w --batch 8,64,256 --steps 20 --prompt 2048
done; done
grep -h "decode  *batch 1 " $R/b1-*.txt | head -0
for f in $R/b1-*.txt $R/g*.txt; do echo "$(basename $f .txt) $(grep -m1 'decode  *batch 1 ' $f)"; done
tar czf $OUT/c1.tgz -C $OUT c1 && rm -rf $R
