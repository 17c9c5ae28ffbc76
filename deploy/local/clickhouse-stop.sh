#!/usr/bin/env bash
# Stop the ClickHouse instance of a directory (SIGTERM, then SIGKILL after MODELWATCH_STOP_TIMEOUT).
# Usage: deploy/local/clickhouse-stop.sh [--dir DIR] [--wipe]
# Env: MODELWATCH_CH_DIR (default $MODELWATCH_CACHE/run/clickhouse), MODELWATCH_STOP_TIMEOUT (20 s).
# --wipe also deletes the instance directory (data included). Not running: succeeds.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_instance_main "ClickHouse" "$MODELWATCH_CH_DIR" clickhouse.pid "{dir}/config.xml" "$@"
