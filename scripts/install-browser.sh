#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the end-to-end tests (tests/e2e). Nothing else downloads a browser.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: the browser tests need Chromium and ChromeDriver at /usr/bin (Debian: apt-get install chromium chromium-driver)" >&2
  exit 2
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
