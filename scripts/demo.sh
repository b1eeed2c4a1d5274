#!/usr/bin/env bash
# demo.sh: set up, build, and generate text with the bundled tiny RWKV-7 on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build >/dev/null
echo "== recur generate (bundled 834K-parameter RWKV-7, CPU) =="
build/bin/recur generate --prompt "Once upon a time" --max-tokens 120 --temperature 0.8 --top-p 0.9 --seed 42 \
  --log-level info
