#!/usr/bin/env bash
# Install Debian's chromium for the web page test (tests/test_web.py drives it with
# Playwright; `playwright install` cannot download browsers here). Needs root (or sudo).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium
fi
