#!/usr/bin/env bash
# One entry point for the local test services: a tansu broker and a ClickHouse instance.
# Usage: deploy/local/services.sh up|down|status|env [--wipe]
#   up      install what is missing (tansu build ~7 min cold), start both, wait until they answer,
#           print the env lines below on stdout and write them to $MODELWATCH_SERVICES_ENV
#           (default $MODELWATCH_CACHE/run/services.env)
#   down    stop both (idempotent); with --wipe also delete their data directories
#   status  report each; exit 0 when both run, 3 otherwise
#   env     print the env lines (whether or not the services run)
# Env lines:  MODELWATCH_TEST_BROKERS=127.0.0.1:19092
#             MODELWATCH_TEST_CLICKHOUSE_URL=http://127.0.0.1:18123
#             MODELWATCH_TANSU_BIN=$MODELWATCH_CACHE/tansu/bin/tansu
# Ports and directories come from MODELWATCH_BROKER_PORT, MODELWATCH_BROKER_DIR,
# MODELWATCH_BROKER_STORAGE, MODELWATCH_CH_HTTP_PORT, MODELWATCH_CH_TCP_PORT, MODELWATCH_CH_DIR.
# Each of these scripts runs fine in parallel with other instances (other dirs and ports).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=lib.sh
. "$here/lib.sh"

env_lines() {
    echo "MODELWATCH_TEST_BROKERS=$MODELWATCH_HOST:$MODELWATCH_BROKER_PORT"
    echo "MODELWATCH_TEST_CLICKHOUSE_URL=http://$MODELWATCH_HOST:$MODELWATCH_CH_HTTP_PORT"
    echo "MODELWATCH_TANSU_BIN=$TANSU_BIN"
}

(($#)) || die "usage: services.sh up|down|status|env [--wipe]"
cmd="$1"
shift
wipe=()
while (($#)); do
    case "$1" in
    --wipe) wipe=(--wipe); shift ;;
    *) die "unknown argument '$1'" ;;
    esac
done

case "$cmd" in
up)
    start="$(now_ms)"
    "$here/clickhouse-start.sh" --dir "$MODELWATCH_CH_DIR" \
        --http-port "$MODELWATCH_CH_HTTP_PORT" --tcp-port "$MODELWATCH_CH_TCP_PORT" >/dev/null
    "$here/broker-start.sh" --dir "$MODELWATCH_BROKER_DIR" --port "$MODELWATCH_BROKER_PORT" \
        --storage "$MODELWATCH_BROKER_STORAGE" >/dev/null
    mkdir -p "$(dirname "$MODELWATCH_SERVICES_ENV")"
    env_lines >"$MODELWATCH_SERVICES_ENV"
    log "services up in $(($(now_ms) - start)) ms; env in $MODELWATCH_SERVICES_ENV"
    env_lines
    ;;
down)
    "$here/broker-stop.sh" --dir "$MODELWATCH_BROKER_DIR" "${wipe[@]}"
    "$here/clickhouse-stop.sh" --dir "$MODELWATCH_CH_DIR" "${wipe[@]}"
    rm -f "$MODELWATCH_SERVICES_ENV"
    ;;
status)
    rc=0
    if pid="$(pid_alive "$MODELWATCH_BROKER_DIR/broker.pid" "tansu broker")"; then
        log "broker running (pid $pid) at $MODELWATCH_HOST:$MODELWATCH_BROKER_PORT, data in $MODELWATCH_BROKER_DIR"
    else
        log "broker not running ($MODELWATCH_BROKER_DIR)"
        rc=3
    fi
    if pid="$(pid_alive "$MODELWATCH_CH_DIR/clickhouse.pid" "$MODELWATCH_CH_DIR/config.xml")"; then
        log "ClickHouse running (pid $pid) at http://$MODELWATCH_HOST:$MODELWATCH_CH_HTTP_PORT, data in $MODELWATCH_CH_DIR"
    else
        log "ClickHouse not running ($MODELWATCH_CH_DIR)"
        rc=3
    fi
    exit "$rc"
    ;;
env) env_lines ;;
*) die "unknown command '$cmd' (up, down, status or env)" ;;
esac
