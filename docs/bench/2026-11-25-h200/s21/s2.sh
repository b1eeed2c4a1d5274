#!/bin/bash
# session 21, call 2: tests; xLSTM head norm in the n/m kernel (RECUR_MLSTM_HEAD_OUT=0: apart); RWKV-7 norm+shift up to n rows (RECUR_NORM_SHIFT=n)
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib RECUR_FIXTURES_DIR=$D/fixtures
R=$OUT/c2; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 280 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
t test_backend_cuda $D/bin/test_backend_cuda cuda
t test_models_cuda $D/bin/test_models_cuda
t test_graph_decode $D/bin/test_graph_decode
t test_state_bf16_cuda $D/bin/test_state_bf16_cuda cuda
for rep in 1 2 3; do for w in bf16 int8 fp8; do for v in 0 x; do
  if [ $v = 0 ]; then export RECUR_MLSTM_HEAD_OUT=0; else unset RECUR_MLSTM_HEAD_OUT; fi
  t x1-$w-$v-$rep $D/bin/recur bench --model xlstm-7b --weights $w --batch 1 --steps 200 --prompt "" --json $R/x1-$w-$v-$rep.json
done; done; done
unset RECUR_MLSTM_HEAD_OUT
for rep in 1 2; do for w in bf16 int8; do for v in 0 x; do
  if [ $v = 0 ]; then export RECUR_MLSTM_HEAD_OUT=0; else unset RECUR_MLSTM_HEAD_OUT; fi
  t xw-$w-$v-$rep $D/bin/recur bench --model xlstm-7b --weights $w --batch 2,8,64,256 --steps 30 --prompt ""
done; done; done
unset RECUR_MLSTM_HEAD_OUT
for rep in 1 2; do for w in bf16 int8; do for v in 0 8 32; do
  RECUR_NORM_SHIFT=$v t rw-$w-$v-$rep $D/bin/recur bench --model rwkv7-7b --weights $w --batch 2,4,8,16,32 --steps 50 --prompt ""
done; done; done
for f in $R/x1-*.txt; do echo "$(basename $f .txt) $(grep -m1 'decode  *batch 1 ' $f)"; done
tar czf $OUT/c2.tgz -C $OUT c2 && rm -rf $R
