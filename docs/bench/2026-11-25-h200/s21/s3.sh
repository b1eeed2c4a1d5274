#!/bin/bash
# session 21, call 3: commit ee279e7: GPU tests; before (RECUR_NORM_SHIFT=0 RECUR_MLSTM_HEAD_OUT=0: the launches as before) against after, both models, every format
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib RECUR_FIXTURES_DIR=$D/fixtures
R=$OUT/c3; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 280 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
nvidia-smi --query-gpu=name,driver_version --format=csv > $R/gpu.txt
t test_backend_cuda $D/bin/test_backend_cuda cuda
t test_models_cuda $D/bin/test_models_cuda
t test_graph_decode $D/bin/test_graph_decode
t test_state_bf16_cuda $D/bin/test_state_bf16_cuda cuda
for rep in 1 2 3; do for m in rwkv7-7b xlstm-7b; do for w in bf16 int8 fp8; do for v in before after; do
  if [ $v = before ]; then export RECUR_NORM_SHIFT=0 RECUR_MLSTM_HEAD_OUT=0; else unset RECUR_NORM_SHIFT RECUR_MLSTM_HEAD_OUT; fi
  t b1-$m-$w-$v-$rep $D/bin/recur bench --model $m --weights $w --batch 1 --steps 200 --prompt "" --json $R/b1-$m-$w-$v-$rep.json
done; done; done; done
for m in rwkv7-7b xlstm-7b; do for w in bf16 int8 fp8; do for v in before after; do
  if [ $v = before ]; then export RECUR_NORM_SHIFT=0 RECUR_MLSTM_HEAD_OUT=0; else unset RECUR_NORM_SHIFT RECUR_MLSTM_HEAD_OUT; fi
  t bw-$m-$w-$v $D/bin/recur bench --model $m --weights $w --batch 2,8,32,64 --steps 50 --prompt 2048 --json $R/bw-$m-$w-$v.json
done; done; done
unset RECUR_NORM_SHIFT RECUR_MLSTM_HEAD_OUT
tar czf $OUT/c3.tgz -C $OUT c3 && rm -rf $R
