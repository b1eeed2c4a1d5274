#!/bin/bash
# session 20, call 5: the quantized GEMM's epilogue 4 columns a thread (new) against one (old)
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib
R=$OUT/epi; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 250 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
for v in old new; do b=bench_gemv_cuda; [ $v = old ] && b=bench_gemv_cuda-old
  for w in int8 fp8; do t gemm-$w-$v $D/bin/$b $w 64,512,2048; done; done
for m in rwkv7-7b xlstm-7b; do for w in int8 fp8; do for v in old new; do r=recur; [ $v = old ] && r=recur-old
  t e-$m-$w-$v $D/bin/$r bench --model $m --weights $w --batch 64,256 --prompt 2048,8192 --steps 10 --json $R/e-$m-$w-$v.json
done; done; done
t test_quant_cuda $D/bin/test_quant_cuda cuda
tar czf $OUT/epi.tgz -C $OUT epi && rm -rf $R
