#!/bin/sh
# run_python.sh SCRIPT [ARGS...]: runs a Python test with Debian's python3 when there is
# one (python3-zmq and python3-protobuf are installed for it), else the python3 on PATH.
p=/usr/bin/python3
[ -x "$p" ] || p=python3
exec "$p" "$@"
