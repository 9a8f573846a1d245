#!/usr/bin/env bash
# Install Debian's chromium for the web page test (tests/test_web.py drives it with
# Playwright; `playwright install` cannot download browsers here), and a CJK font so that the
# page's Chinese text renders as glyphs, not boxes. Needs root (or sudo).
set -euo pipefail
packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || packages+=(fonts-wqy-zenhei)
if [ ${#packages[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${packages[@]}"
fi
