#!/usr/bin/env bash
# Install rnnkit and its test dependencies into .venv. torch is pinned first to the CPU build
# (a bare `torch` requirement would pull a multi-GB CUDA build); pyproject keeps a range.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
# A C compiler for rnnkit's native LSTM kernel (built on first use; without one rnnkit falls
# back to torch's LSTM, slower for small models).
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq gcc libc6-dev; } \
        || echo "no C compiler installed: rnnkit will use torch's LSTM kernels" >&2
fi
