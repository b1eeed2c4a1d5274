#!/bin/bash
# session 21, call 4: what the remaining small launches cost at batch 1 (--skip), commit ee279e7
B=/tmp/b; rm -rf $B; mkdir -p $B; tar xJf .gpu/b.txz -C $B; D=$B/.devbundle
export LD_LIBRARY_PATH=$D/lib
R=$OUT/c4; mkdir -p $R
t() { local n=$1; shift; local t0=$(date +%s); timeout 280 "$@" > $R/$n.txt 2>&1; echo "rc=$? $(( $(date +%s)-t0 ))s" >> $R/$n.txt; echo "$n $(tail -1 $R/$n.txt)"; }
for w in bf16 int8; do
  t skip-xlstm-$w $D/bin/recur bench --model xlstm-7b --weights $w --batch 1 --steps 200 --prompt "" --skip "ffn_act;norm1;norm2;norm1,norm2,ffn_act;recur_out"
  t skip-rwkv7-$w $D/bin/recur bench --model rwkv7-7b --weights $w --batch 1 --steps 200 --prompt "" --skip "norm1,shift1;norm2,shift2;lora2;recur"
done
tar czf $OUT/c4.tgz -C $OUT c4 && rm -rf $R
