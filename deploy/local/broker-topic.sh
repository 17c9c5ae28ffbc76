#!/usr/bin/env bash
# Create, delete or list topics on a local tansu broker.
# Usage: deploy/local/broker-topic.sh create NAME [--partitions N] [--port N]
#        deploy/local/broker-topic.sh delete NAME [--port N]
#        deploy/local/broker-topic.sh list [--port N]          (JSON of the Metadata response)
# Env: MODELWATCH_BROKER_PORT (default 19092). create of an existing topic succeeds and says so
# (tansu does not change its partition count).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($#)) || die "usage: broker-topic.sh create NAME [--partitions N] [--port N] | delete NAME | list"
cmd="$1"
shift
name=""
case "$cmd" in
create | delete)
    if (($# == 0)) || [[ "$1" == --* ]]; then
        die "$cmd needs a topic name"
    fi
    name="$1"
    shift
    ;;
list) ;;
-h | --help) sed -n '2,7p' "${BASH_SOURCE[0]}"; exit 0 ;;
*) die "unknown command '$cmd' (create, delete or list)" ;;
esac
partitions=1
port="$MODELWATCH_BROKER_PORT"
while (($#)); do
    case "$1" in
    --partitions) partitions="${2:?--partitions needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    *) die "unknown argument '$1'" ;;
    esac
done
require_port "$port" "broker port"
[[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "--partitions must be a positive number, got '$partitions'"
[[ -x "$TANSU_BIN" ]] || die "tansu is not installed at $TANSU_BIN (run deploy/local/install-tansu.sh)"
broker="tcp://$MODELWATCH_HOST:$port"

case "$cmd" in
list) exec "$TANSU_BIN" topic list --broker "$broker" ;;
delete)
    if out="$("$TANSU_BIN" topic delete "$name" --broker "$broker" 2>&1)"; then
        log "deleted topic $name"
    else
        grep -qi "does not exist\|unknown topic" <<<"$out" || die "deleting topic $name on $broker failed: $out"
        log "topic $name did not exist"
    fi
    ;;
create)
    if out="$("$TANSU_BIN" topic create "$name" --partitions "$partitions" --broker "$broker" 2>&1)"; then
        log "created topic $name ($partitions partitions) on $broker"
    else
        grep -qi "already exists" <<<"$out" || die "creating topic $name on $broker failed: $out"
        have="$("$TANSU_BIN" topic list --broker "$broker" 2>/dev/null | python3 -c '
import json, sys
print(next((len(t["partitions"] or []) for t in json.load(sys.stdin) if t["name"] == sys.argv[1]), "?"))
' "$name" 2>/dev/null || echo "?")"
        log "topic $name already exists on $broker ($have partitions)"
        if [[ "$have" != "?" && "$have" != "$partitions" ]]; then
            log "WARNING: topic $name has $have partitions, not the $partitions asked for (delete it to change that)"
        fi
    fi
    ;;
esac
