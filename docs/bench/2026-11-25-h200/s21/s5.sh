#!/bin/bash
# session 21, call 5: GPU tests on the final commit, and batch 1 once more
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib RECUR_FIXTURES_DIR=$D/fixtures
R=$OUT/c5; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 280 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt) $(grep -c FAIL $R/$n.txt) FAIL"; }
t test_backend_cuda $D/bin/test_backend_cuda cuda
t test_models_cuda $D/bin/test_models_cuda
t test_graph_decode $D/bin/test_graph_decode
t test_state_bf16_cuda $D/bin/test_state_bf16_cuda cuda
t test_quant_cuda $D/bin/test_quant_cuda cuda
for m in rwkv7-7b xlstm-7b; do for w in bf16 int8 fp8; do
  t b1-$m-$w $D/bin/recur bench --model $m --weights $w --batch 1 --steps 200 --prompt ""
  grep -m1 "decode  *batch 1 " $R/b1-$m-$w.txt
done; done
tar czf $OUT/c5.tgz -C $OUT c5 && rm -rf $R
