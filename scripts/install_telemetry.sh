#!/usr/bin/env bash
# Installs what the telemetry tests (pytest marker `telemetry`) need beside the Python packages
# scripts/install.sh installs: Debian's `prometheus` (the real server tests/test_prometheus_scrape.py
# starts against a node and queries back) and `chromium` (the headless browser that loads the status
# page). README: the telemetry test command, which .ci/run runs too:
#   bash scripts/install_telemetry.sh && python3 -m pytest -m telemetry
# Idempotent: where both programs are already on PATH it installs nothing. Otherwise it needs apt-get
# (Debian, Ubuntu) and root (or sudo without a password); without them it says what to install by
# hand and exits 2. Services are not started: the tests run the prometheus binary themselves.
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

# program on PATH -> Debian package that provides it
declare -A PACKAGE_OF=([prometheus]=prometheus [chromium]=chromium)

missing() {
    local program
    for program in prometheus chromium; do
        command -v "$program" >/dev/null 2>&1 || echo "${PACKAGE_OF[$program]}"
    done
}

versions() {
    # Debian's chromium launcher prints a shell warning on stderr on some machines: stdout only
    echo "prometheus: $(prometheus --version 2>&1 | head -1)"
    echo "chromium: $(chromium --version 2>/dev/null | head -1)"
}

MISSING=$(missing)
if [ -z "$MISSING" ]; then
    echo "prometheus and chromium are already installed"
    versions
    exit 0
fi
# shellcheck disable=SC2086  # one package name a line
MISSING=$(echo $MISSING)

command -v apt-get >/dev/null 2>&1 || die "apt-get is not available on this machine: install \
$MISSING with its package manager (Prometheus 2.x as \`prometheus\`, Chromium as \`chromium\`, both \
on PATH), then run the telemetry tests"

SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || die "installing $MISSING with \
apt-get needs root: run this script as root or with sudo"
    SUDO=(sudo -n)
fi

APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
# without the recommends (upower, a notification daemon, ...): a headless browser needs none of them
# but a font for the page's text
EXTRA=()
case " $MISSING " in *" chromium "*) EXTRA=(fonts-liberation) ;; esac
echo "installing $MISSING with apt-get"
"${APT[@]}" update >/dev/null || die "apt-get update failed (above)"
# shellcheck disable=SC2086
"${APT[@]}" install --no-install-recommends $MISSING "${EXTRA[@]}" >/dev/null \
    || die "apt-get install $MISSING failed (above)"

MISSING=$(missing)
[ -z "$MISSING" ] || die "apt-get installed the packages but these programs are still not on PATH: $MISSING"
versions
