#!/usr/bin/env bash
# Installs the headless browser the end-to-end browser tests drive: Debian's `chromium` and
# `chromium-driver` (chromedriver speaks WebDriver to it; the tests start both themselves).
#
#   .ci/browser.sh
#
# Idempotent and quiet: when both packages are installed it only checks that the two commands
# run. Needs root and Debian's apt mirrors. Prints one line naming the versions.
set -euo pipefail

log() { echo "browser.sh: $*" >&2; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if ! installed chromium || ! installed chromium-driver; then
    if [[ $(id -u) -ne 0 ]]; then
        log "chromium and chromium-driver are missing; run this script as root (it uses apt-get)"
        exit 1
    fi
    log "installing chromium and chromium-driver from Debian"
    export DEBIAN_FRONTEND=noninteractive
    # apt's chatter goes to a file that is shown only when something fails. Another apt run
    # on this machine may hold the lock for a while: wait for it rather than fail.
    apt_log="$(mktemp)"
    trap 'rm -f "$apt_log"' EXIT
    if ! { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-liberation; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        log "apt-get failed (output above)"
        exit 1
    fi
fi

for command in chromium chromedriver; do
    if ! command -v "$command" >/dev/null 2>&1; then
        log "$command is not on PATH although its package is installed"
        exit 1
    fi
done
log "$(chromium --version 2>/dev/null | head -n1); $(chromedriver --version 2>/dev/null | head -n1 | cut -d' ' -f1-2)"
