#!/usr/bin/env bash
# Stop the SMTP server of a directory (SIGTERM, then SIGKILL after MODELWATCH_STOP_TIMEOUT).
# Usage: deploy/local/smtp-stop.sh [--dir DIR] [--wipe]
# Env: MODELWATCH_SMTP_DIR (default $MODELWATCH_CACHE/run/smtp), MODELWATCH_STOP_TIMEOUT (20 s).
# --wipe also deletes the directory (stored messages and certificate included). Not running: succeeds.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_instance_main "SMTP server" "$MODELWATCH_SMTP_DIR" smtp.pid "smtp_server.py --dir {dir}" "$@"
