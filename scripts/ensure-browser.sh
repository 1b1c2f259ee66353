#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed (/usr/bin/chromium): the console's browser test
# (tests/integration/test_console.py) drives it headless with Playwright, which is told to
# use it (executable_path) instead of downloading a browser of its own — nothing but the
# package registries is reachable from the build machines. Installed with apt-get when
# missing (needs root, or sudo); when it is there this only checks it (milliseconds).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

log() { printf 'ensure-browser: %s\n' "$*"; }
die() {
  printf 'ensure-browser: ERROR: %s\n' "$*" >&2
  exit 1
}

if [[ -x $CHROMIUM ]]; then
  log "chromium: already installed ($CHROMIUM)"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
  die "$CHROMIUM is missing and this script installs it only with apt-get (Debian/Ubuntu); install chromium yourself"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "need root to apt-get install chromium (or install sudo)"
  SUDO=(sudo)
fi

log "apt-get update ..."
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
log "apt-get install -y chromium ..."
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
  die "apt-get install chromium failed"
[[ -x $CHROMIUM ]] || die "$CHROMIUM is missing after apt-get install chromium"
log "chromium: installed ($CHROMIUM)"
