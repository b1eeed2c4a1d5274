#!/bin/bash
# session 20, call 2: where the int8 wgmma product's time goes at 64-128 rows
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib
R=$OUT/r2; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 200 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
ROWS=16,32,48,64,96,128,192,256,384
RECUR_QGEMM_WIDE_MIN_M=100000 t gemm-int8-narrow $D/bin/bench_gemv_cuda int8 $ROWS
RECUR_QGEMM_WIDE_MIN_M=9 t gemm-int8-wide $D/bin/bench_gemv_cuda int8 $ROWS
t gemm-bf16 $D/bin/bench_gemv_cuda bf16 $ROWS
for xp in 1 2 3; do RECUR_XP=$xp RECUR_QGEMM_WIDE_MIN_M=100000 t gemm-int8-xp$xp $D/bin/bench_gemv_cuda int8 16,64,128; done
NCU="ncu --clock-control none --launch-count 1 -k regex:qgemm_i8_wgmma --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
for m in 64 128; do RECUR_QGEMM_WIDE_MIN_M=100000 t ncu-ffnkey-m$m $NCU $D/bin/bench_gemv_cuda int8 $m "ffn key"; done
RECUR_QGEMM_WIDE_MIN_M=9 t ncu-ffnkey-m64-wide $NCU $D/bin/bench_gemv_cuda int8 64 "ffn key"
tar czf $OUT/r2.tgz -C $OUT r2 && rm -rf $R
