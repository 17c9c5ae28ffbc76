#!/usr/bin/env bash
# Stop the Alertmanager of a directory (SIGTERM, then SIGKILL after MODELWATCH_STOP_TIMEOUT).
# Usage: deploy/local/alertmanager-stop.sh [--dir DIR] [--wipe]
# Env: MODELWATCH_AM_DIR (default $MODELWATCH_CACHE/run/alertmanager), MODELWATCH_STOP_TIMEOUT (20 s).
# --wipe also deletes the directory. Not running: succeeds.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_instance_main "Alertmanager" "$MODELWATCH_AM_DIR" alertmanager.pid "--config.file={dir}/alertmanager.yml" "$@"
