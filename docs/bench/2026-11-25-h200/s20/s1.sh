#!/bin/bash
# session 20, call 1: int8 wgmma product with 256-row blocks (16 warps) against 128-row blocks
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib RECUR_FIXTURES_DIR=$D/fixtures
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/smi.txt; nvidia-smi --query-gpu=driver_version,clocks.max.sm --format=csv >> $R/smi.txt
t() { local n=$1; shift; local t0=$(date +%s); timeout 240 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
t test_quant_cuda $D/bin/test_quant_cuda cuda
RECUR_QGEMM_WIDE_MIN_M=9 t test_quant_cuda-wide9 $D/bin/test_quant_cuda cuda
ROWS=16,32,48,64,96,128,192,256,384
RECUR_QGEMM_WIDE_MIN_M=100000 t gemm-int8-narrow $D/bin/bench_gemv_cuda int8 $ROWS
RECUR_QGEMM_WIDE_MIN_M=9 t gemm-int8-wide $D/bin/bench_gemv_cuda int8 $ROWS
RECUR_QGEMM_WIDE_MIN_M=9 RECUR_XP_KS1=1 t gemm-int8-wideks1 $D/bin/bench_gemv_cuda int8 $ROWS
t gemm-bf16 $D/bin/bench_gemv_cuda bf16 $ROWS
for m in rwkv7-7b xlstm-7b; do
  RECUR_QGEMM_WIDE_MIN_M=100000 t e-$m-narrow $D/bin/recur bench --model $m --weights int8 --batch 16,32,48,64,96,128,256 --steps 20 --prompt ""
  RECUR_QGEMM_WIDE_MIN_M=9 t e-$m-wide $D/bin/recur bench --model $m --weights int8 --batch 16,32,48,64,96,128,256 --steps 20 --prompt ""
  RECUR_QGEMM_WIDE_MIN_M=9 RECUR_XP_KS1=1 t e-$m-wideks1 $D/bin/recur bench --model $m --weights int8 --batch 16,32,48,64,96,128,256 --steps 20 --prompt ""
  t e-$m-bf16 $D/bin/recur bench --model $m --weights bf16 --batch 16,32,48,64,96,128,256 --steps 20 --prompt ""
done
