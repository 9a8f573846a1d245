#!/usr/bin/env bash
# Install rnnkit and its test dependencies into .venv. torch is pinned first to the CPU build
# (a bare `torch` requirement would pull a multi-GB CUDA build); pyproject keeps a range.
#
# System packages come first, through apt where it is missing them: a C compiler, because
# installing rnnkit compiles its native LSTM kernel (without one the install still succeeds
# and rnnkit uses torch's LSTM, slower for small models), and Debian's tcmalloc, which
# `rnnkit train` preloads when it is present (the published figures were measured with it).
set -euo pipefail
cd "$(dirname "$0")/.."

TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
packages=()
if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
    packages+=(gcc libc6-dev)
elif command -v dpkg-query >/dev/null 2>&1 \
        && ! dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q "ok installed"; then
    packages+=(libc6-dev)  # a compiler without the C library's headers builds nothing
fi
if [ "$(uname -m)" = x86_64 ] && [ ! -e "$TCMALLOC" ]; then
    packages+=(libtcmalloc-minimal4)
fi
if [ ${#packages[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: no apt-get here: install ${packages[*]} (or their equivalents)" \
             "yourself and rerun; rnnkit works without them, slower" >&2
    else
        SUDO=()
        [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
        if ! { "${SUDO[@]}" apt-get update -qq \
               && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                      --no-install-recommends "${packages[@]}" >/dev/null; }; then
            echo "install.sh: apt-get could not install ${packages[*]}; rnnkit works" \
                 "without them, slower" >&2
        fi
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
# Builds rnnkit in an isolated environment holding only setuptools (pyproject's
# [build-system]): no torch there, so no second, CUDA, torch is downloaded for the build.
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
# rnnkit loads its kernel only from a file and folder no one else can write; a umask of 002
# leaves both group-writable.
chmod go-w src/rnnkit/kernels src/rnnkit/kernels/_lstm*.so 2>/dev/null || true
# One line on stderr if the native kernel was not built or cannot be loaded.
.venv/bin/python -c "from rnnkit import kernels; kernels.available()"
