#!/bin/bash
# session 20, call 4: prefill floors at the pieces' GEMM rate (commit 3908451), every format
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib
R=$OUT/floor; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 200 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
for m in rwkv7-7b xlstm-7b; do for w in bf16 int8 fp8; do
  t p-$m-$w $D/bin/recur bench --model $m --weights $w --batch 1 --prompt 512,2048,8192 --steps 10 --json $R/p-$m-$w.json
done; done
tar czf $OUT/floor.tgz -C $OUT floor && rm -rf $R
