#!/usr/bin/env bash
# Install Debian's ClickHouse server and client when clickhouse-server is missing.
# Usage: deploy/local/install-clickhouse.sh
# Needs root (apt-get) only when something is missing; a no-op otherwise.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if clickhouse_server_bin >/dev/null && command -v clickhouse-client >/dev/null 2>&1; then
    log "clickhouse-server present ($(clickhouse-client --version 2>/dev/null | tr -d '\n'))"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    die "clickhouse-server/clickhouse-client are missing and this is not root: run as root, or 'sudo apt-get install -y clickhouse-server clickhouse-client'"
fi
command -v apt-get >/dev/null 2>&1 || die "clickhouse-server is missing and apt-get is not available"
log "installing clickhouse-server and clickhouse-client with apt-get"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine: update when the package is unknown.
if ! apt-cache show clickhouse-server >/dev/null 2>&1; then
    apt-get update -qq || die "apt-get update failed"
fi
apt-get install -y -qq clickhouse-server clickhouse-client >&2 || die "apt-get install clickhouse-server clickhouse-client failed"
clickhouse_server_bin >/dev/null || die "clickhouse-server still missing after apt-get install"
log "installed $(clickhouse-client --version 2>/dev/null | tr -d '\n')"
