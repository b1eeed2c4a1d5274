#!/usr/bin/env bash
# build.sh [BUILD_DIR] [cmake options...]: configure and build recur (programs in BUILD_DIR/bin).
# RECUR_CUDA (env) = AUTO (default) | ON | OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECUR_CUDA="${RECUR_CUDA:-AUTO}" "$@" >"$dir.configure.log" 2>&1 \
  || { cat "$dir.configure.log"; exit 1; }
grep -E "recur:" "$dir.configure.log" || true
cmake --build "$dir" -j"$jobs"
