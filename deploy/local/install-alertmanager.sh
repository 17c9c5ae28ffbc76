#!/usr/bin/env bash
# Install Debian's Prometheus Alertmanager (0.25) when prometheus-alertmanager is missing.
# Usage: deploy/local/install-alertmanager.sh
# Needs root (apt-get) only when something is missing; a no-op otherwise. Debian's service is not
# started here (policy-rc.d); alertmanager-start.sh runs private instances.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

present() {
    if command -v prometheus-alertmanager >/dev/null 2>&1; then
        log "prometheus-alertmanager present ($(prometheus-alertmanager --version 2>&1 | head -n 1))"
        exit 0
    fi
}
present
# Parallel starts install once: wait for another install, then check again.
lock_install apt
present
if [[ "$(id -u)" -ne 0 ]]; then
    die "prometheus-alertmanager is missing and this is not root: run as root, or 'sudo apt-get install -y prometheus-alertmanager'"
fi
command -v apt-get >/dev/null 2>&1 || die "prometheus-alertmanager is missing and apt-get is not available"
log "installing prometheus-alertmanager with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show prometheus-alertmanager >/dev/null 2>&1; then
    apt-get update -qq || die "apt-get update failed"
fi
apt-get install -y -qq prometheus-alertmanager >&2 || die "apt-get install prometheus-alertmanager failed"
command -v prometheus-alertmanager >/dev/null 2>&1 || die "prometheus-alertmanager still missing after apt-get install"
log "installed $(prometheus-alertmanager --version 2>&1 | head -n 1)"
unlock_install
