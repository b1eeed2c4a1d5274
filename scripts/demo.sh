#!/usr/bin/env bash
# demo.sh: set up, build, and generate text with the bundled tiny RWKV-7 on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build >/dev/null
echo "== recur generate (bundled 834K-parameter byte-level RWKV-7 from rwkv.cpp's tests, CPU; expect rough text) =="
build/bin/recur generate --prompt "Once upon a time" --max-tokens 120 --temperature 0.7 --top-p 0.5 --seed 42 \
  --log-level info
