#!/usr/bin/env bash
# setup.sh: install the Debian packages recur needs to build and test (Debian 12, as root
# or with sudo). Idempotent: does nothing when everything is already there.
#
# The CUDA toolkit is not a Debian package: when /usr/local/cuda (nvcc 13) is present the
# build compiles the CUDA backend too (RECUR_CUDA=AUTO); see ../shared/DEVICE.md.
set -euo pipefail

PACKAGES=(
  build-essential   # gcc, g++, make
  cmake             # >= 3.24
  pkg-config
  git
  libcjson-dev      # safetensors headers, config.json, tokenizer vectors
  libpcre2-dev      # BPE tokenizer (xLSTM): the GPT-2 split regex (\p{L}, \p{N}, lookahead)
  libutf8proc-dev   # BPE tokenizer (xLSTM): NFC normalisation
  python3           # scripts/pth_to_safetensors.py and the script tests (stdlib only)
  libopenmpi-dev    # worker ranks: launch, rank grid, the CPU backend's collectives
  openmpi-bin       # mpirun (the multi-rank tests run on the CPU backend)
  libzmq3-dev       # coordinator <-> clients and workers
  libprotobuf-c-dev # the client API and the internal messages (proto/)
  protobuf-c-compiler # protoc-c: generates the C code of proto/*.proto at build time
  libmicrohttpd-dev # the OpenAI-compatible HTTP API
  python3-zmq       # scripts/recur_client.py, the Python client example (and its test)
  python3-protobuf  #   "
  protobuf-compiler # protoc --python_out: the client example's recur_api_pb2
  zlib1g-dev        # CRC-32 of session checkpoint files
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
