#!/usr/bin/env bash
# Install rnnkit and its test dependencies into .venv. torch is pinned first to the CPU build
# (a bare `torch` requirement would pull a multi-GB CUDA build); pyproject keeps a range.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
