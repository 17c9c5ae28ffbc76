#!/usr/bin/env bash
# Stop the tansu broker of a directory (SIGTERM, then SIGKILL after MODELWATCH_STOP_TIMEOUT).
# Usage: deploy/local/broker-stop.sh [--dir DIR] [--wipe]
# Env: MODELWATCH_BROKER_DIR (default $MODELWATCH_CACHE/run/broker), MODELWATCH_STOP_TIMEOUT (20 s).
# --wipe also deletes the instance directory (topics and messages). Not running: succeeds.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_instance_main "broker" "$MODELWATCH_BROKER_DIR" broker.pid "tansu broker" "$@"
