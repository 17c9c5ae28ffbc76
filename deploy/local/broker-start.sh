#!/usr/bin/env bash
# Start a tansu broker (Kafka-compatible) on a loopback port with its data in an instance
# directory, and wait until it serves metadata. Builds tansu into the cache when missing.
# Usage: deploy/local/broker-start.sh [--dir DIR] [--port N] [--storage sqlite|memory]
# Env (flags win): MODELWATCH_BROKER_DIR (default $MODELWATCH_CACHE/run/broker),
#      MODELWATCH_BROKER_PORT (default 19092), MODELWATCH_BROKER_STORAGE (default sqlite:
#      durable file DIR/tansu.db; memory: lost on stop), MODELWATCH_START_TIMEOUT (default 60 s),
#      MODELWATCH_BROKER_FRESH=1 (start a stopped broker on an empty database: SQLite storage slows
#      down as old test topics pile up, and the test suite creates fresh topics every run).
# Prints the bootstrap address (127.0.0.1:PORT) on stdout. Already running: reports it, succeeds.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=lib.sh
. "$here/lib.sh"

dir="$MODELWATCH_BROKER_DIR"
port="$MODELWATCH_BROKER_PORT"
storage="$MODELWATCH_BROKER_STORAGE"
while (($#)); do
    case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --storage) storage="${2:?--storage needs a value}"; shift 2 ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
require_port "$port" "broker port"
case "$storage" in
# A relative sqlite path is resolved against the working directory: the broker runs in $dir.
sqlite) engine="sqlite://tansu.db" ;;
memory) engine="memory://tansu/" ;;
*) die "storage must be sqlite or memory, got '$storage'" ;;
esac
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pidfile="$dir/broker.pid"
listener="tcp://$MODELWATCH_HOST:$port"
# The pid check matches the command line on the listener URL and the instance's own storage flag.
marker="--listener-url $listener"

# metadata_ok: the broker answers a Metadata request (tansu topic list).
metadata_ok() { timeout 10 "$TANSU_BIN" topic list --broker "$listener" >/dev/null 2>&1; }

if pid="$(pid_alive "$pidfile" "tansu broker")"; then
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    { grep -qF -- "$marker" <<<"$cmdline" && grep -qF -- "--storage-engine $engine" <<<"$cmdline"; } ||
        die "a broker already runs in $dir (pid $pid) with another port or storage ($cmdline); stop it first (broker-stop.sh --dir $dir)"
    metadata_ok || die "broker in $dir (pid $pid) runs but does not answer on $listener; see $dir/broker.log"
    log "broker already running in $dir (pid $pid) at $MODELWATCH_HOST:$port"
    echo "$MODELWATCH_HOST:$port"
    exit 0
fi

"$here/install-tansu.sh" >/dev/null
port_open "$port" && die "port $MODELWATCH_HOST:$port is already in use by another process (not the broker of $dir)"

if [[ "${MODELWATCH_BROKER_FRESH:-0}" == 1 && "$storage" == sqlite ]]; then
    log "fresh start: removing the old broker database in $dir"
    rm -f "$dir/tansu.db" "$dir/tansu.db-shm" "$dir/tansu.db-wal"
fi

start="$(now_ms)"
log "starting tansu broker in $dir on $listener (storage $engine)"
(
    cd "$dir"
    # tansu also reads CLUSTER_ID, LISTENER_URL, STORAGE_ENGINE, ... from the environment and a
    # .env file: the flags below win over both.
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn}" spawn "$dir/broker.log" "$pidfile" \
        "$TANSU_BIN" broker --cluster-id modelwatch \
        --listener-url "$listener" --advertised-listener-url "$listener" \
        --storage-engine "$engine"
)
deadline=$((SECONDS + MODELWATCH_START_TIMEOUT))
until port_open "$port" && metadata_ok; do
    if ! spawned_alive "$pidfile"; then
        log "broker exited during startup; last log lines:"
        tail -n 20 "$dir/broker.log" >&2 || true
        rm -f "$pidfile"
        die "broker in $dir failed to start"
    fi
    if ((SECONDS >= deadline)); then
        log "broker did not answer on $listener within ${MODELWATCH_START_TIMEOUT}s; last log lines:"
        tail -n 20 "$dir/broker.log" >&2 || true
        "$here/broker-stop.sh" --dir "$dir" || true
        die "broker in $dir did not become ready"
    fi
    sleep 0.1
done
if [[ "$storage" == sqlite ]]; then
    # tansu 0.6 reads each fetched record's headers from a table without an index: once dead
    # letters (five headers each) are in the database, every record fetched from any topic
    # scans them all (2.5 ms per record at 28,000 headers, so seconds per fetch and a stalled
    # consumer). An index makes it a lookup (8 us).
    python3 - "$dir/tansu.db" <<'PY' || log "warning: could not index tansu's header table"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("create index if not exists mw_header_record on header (topition, offset_id)")
db.commit()
PY
fi
log "broker ready at $MODELWATCH_HOST:$port (pid $(cat "$pidfile"), $(($(now_ms) - start)) ms)"
echo "$MODELWATCH_HOST:$port"
