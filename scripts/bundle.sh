#!/usr/bin/env bash
# bundle.sh [BUILD_DIR] [OUT_DIR]: gather what the built programs need on a machine that
# lacks our Debian libraries (the GPU machines, a container's runtime stage):
#   OUT_DIR/bin       the programs and test binaries
#   OUT_DIR/lib       shared libraries that such machines do not have (see ../shared/DEVICE.md)
#   OUT_DIR/fixtures  ../shared/fixtures, for the tests
# Run the programs there with LD_LIBRARY_PATH=OUT_DIR/lib (scripts/gpu_check.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-.devbundle}
# Libraries known to be absent on the GPU machines (DEVICE.md), with their own needs.
# utf8proc: Ubuntu 24.04 there has another soname than Debian 12's libutf8proc.so.2 (PCRE2's
# libpcre2-8.so.0 is there and compatible, so it is not bundled).
# Only these are copied (an allow-list). Never bundled, on purpose: MPI (libmpi, libopen-rte,
# libopen-pal, hwloc, libevent, PMIx) must be the host's own, matching its mpirun and
# daemons (Open MPI 4.1.x keeps the libmpi.so.40 ABI); NCCL, the CUDA runtime, cuBLAS and
# the driver libraries must match the host's driver and GPUs.
missing_re='^(libcjson|libzmq|libsodium|libpgm|libnorm|libprotobuf-c|libmicrohttpd|libutf8proc)[-0-9.]*\.so'
never_re='^(libmpi|libopen-rte|libopen-pal|libhwloc|libevent|libpmix|libnccl|libcuda|libcudart|libcublas|libnvidia)'
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp -a "$build"/bin/. "$out/bin/"
# Debug info is most of each binary (every test links the CUDA kernels): keep it out of
# the bundle, whose size a transfer limit bounds.
for exe in "$out"/bin/*; do strip --strip-debug "$exe" 2>/dev/null || true; done
for exe in "$out"/bin/*; do
  ldd "$exe" 2>/dev/null | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ $name =~ $never_re ]]; then continue; fi   # (cannot be in missing_re; kept as a guard for edits)
  if [[ $name =~ $missing_re ]]; then cp -L "$path" "$out/lib/$name"; fi
done
if [ -d ../shared/fixtures ]; then cp -a ../shared/fixtures "$out/fixtures"; fi
du -sh "$out" | awk '{print "bundle: " $1 " in '"$out"'"}'
ls "$out/lib"
