#!/bin/bash
# session 20, call 6: GPU tests on the epilogue commit, and the products old/new at 64-1024 rows
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib RECUR_FIXTURES_DIR=$D/fixtures
R=$OUT/final; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 280 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
for v in old new; do b=bench_gemv_cuda; [ $v = old ] && b=bench_gemv_cuda-old
  for w in int8 fp8; do t gemm-$w-$v $D/bin/$b $w 64,512,1024; done; done
t test_backend_cuda $D/bin/test_backend_cuda cuda
t test_models_cuda $D/bin/test_models_cuda
t test_quant_cuda $D/bin/test_quant_cuda cuda
tar czf $OUT/final.tgz -C $OUT final && rm -rf $R
