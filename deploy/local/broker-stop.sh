#!/usr/bin/env bash
# Stop the tansu broker of a directory (SIGTERM, then SIGKILL after MODELWATCH_STOP_TIMEOUT).
# Usage: deploy/local/broker-stop.sh [--dir DIR] [--wipe]
# Env: MODELWATCH_BROKER_DIR (default $MODELWATCH_CACHE/run/broker), MODELWATCH_STOP_TIMEOUT (20 s).
# --wipe also deletes the instance directory (topics and messages). Not running: succeeds.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="$MODELWATCH_BROKER_DIR"
wipe=0
while (($#)); do
    case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --wipe) wipe=1; shift ;;
    -h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
if [[ ! -d "$dir" ]]; then
    log "broker is not running (no directory $dir)"
    exit 0
fi
dir="$(cd "$dir" && pwd)"
stop_pidfile "$dir/broker.pid" "tansu broker" "broker in $dir"
if ((wipe)); then
    rm -rf -- "$dir"
    log "removed $dir"
fi
