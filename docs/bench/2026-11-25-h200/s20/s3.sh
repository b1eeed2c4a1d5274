#!/bin/bash
# session 20, call 3: int8 wgmma product, k order rotated per row tile (x and codes not read by every block at once)
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib
R=$OUT/r3; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 200 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
ROWS=16,32,48,64,128,256
for xp in 0 4 8 7; do RECUR_XP=$xp t gemm-int8-xp$xp $D/bin/bench_gemv_cuda int8 $ROWS; done
for xp in 0 4 8; do RECUR_XP=$xp t e-rwkv7-xp$xp $D/bin/recur bench --model rwkv7-7b --weights int8 --batch 16,32,48,64,128,256 --steps 20 --prompt ""; done
tar czf $OUT/r3.tgz -C $OUT r3 && rm -rf $R
