#!/usr/bin/env bash
# Check the local services end to end: build/install, start, topic, produce + consume with
# confluent-kafka, ClickHouse over HTTP, a second ClickHouse instance at the same time, stop,
# start again (warm), persistence across the restart, idempotent up/down. Prints timings.
# Usage: deploy/local/selftest.sh
# Uses its own instance directories and ports so it leaves the default services alone:
#   broker in $MODELWATCH_CACHE/run/selftest-broker, ClickHouse in .../selftest-clickhouse, a
#   second ClickHouse in .../selftest-clickhouse2, on the first free ports from 39092, 38123,
#   39000, 38223, 39100 (override with MODELWATCH_SELFTEST_PORTS="B H T H2 T2").
# confluent-kafka is pip-installed into a venv at $MODELWATCH_CACHE/pyvenv when missing.
# Set MODELWATCH_SELFTEST_KEEP=1 to leave the services running (and their data) at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

export MODELWATCH_CACHE
export MODELWATCH_BROKER_DIR="$MODELWATCH_CACHE/run/selftest-broker"
export MODELWATCH_BROKER_STORAGE=sqlite
export MODELWATCH_CH_DIR="$MODELWATCH_CACHE/run/selftest-clickhouse"
export MODELWATCH_SERVICES_ENV="$MODELWATCH_CACHE/run/selftest-services.env"
ch2_dir="$MODELWATCH_CACHE/run/selftest-clickhouse2"
# Stop what an earlier (interrupted) run left, before looking for free ports.
"$here/clickhouse-stop.sh" --dir "$ch2_dir" --wipe
"$here/services.sh" down --wipe
if [[ -n "${MODELWATCH_SELFTEST_PORTS:-}" ]]; then
    read -r MODELWATCH_BROKER_PORT MODELWATCH_CH_HTTP_PORT MODELWATCH_CH_TCP_PORT ch2_http ch2_tcp \
        <<<"$MODELWATCH_SELFTEST_PORTS"
else
    MODELWATCH_BROKER_PORT="$(free_port 39092)"
    MODELWATCH_CH_HTTP_PORT="$(free_port 38123)"
    MODELWATCH_CH_TCP_PORT="$(free_port 39000)"
    ch2_http="$(free_port 38223)"
    ch2_tcp="$(free_port 39100)"
fi
export MODELWATCH_BROKER_PORT MODELWATCH_CH_HTTP_PORT MODELWATCH_CH_TCP_PORT
log "ports: broker $MODELWATCH_BROKER_PORT, ClickHouse $MODELWATCH_CH_HTTP_PORT/$MODELWATCH_CH_TCP_PORT, second ClickHouse $ch2_http/$ch2_tcp"
topic=modelwatch-selftest
table=selftest_events

passed=0
failed=0
timings=()
check() { # check NAME CMD...: run CMD, count it
    local name="$1"
    shift
    if "$@"; then
        passed=$((passed + 1))
        log "PASS $name"
    else
        failed=$((failed + 1))
        log "FAIL $name"
    fi
}
timed() { # timed LABEL CMD...: run CMD, record its wall time
    local label="$1" t0 rc=0
    shift
    t0="$(now_ms)"
    "$@" || rc=$?
    timings+=("$label: $(($(now_ms) - t0)) ms")
    return "$rc"
}
ch_query() { # ch_query URL SQL: POST SQL, print the answer
    curl -sS --fail-with-body --max-time 10 --data-binary "$2" "$1/"
}
fails() { ! "$@" 2>/dev/null; }
status_is() {
    local rc=0
    "$here/services.sh" status || rc=$?
    ((rc == $1))
}
port_open_any() {
    local p
    for p in "$@"; do port_open "$p" && return 0; done
    return 1
}
topic_listed() { "$here/broker-topic.sh" list --port "$MODELWATCH_BROKER_PORT" | grep -qF "\"$1\""; }
ch_create_insert() {
    ch_query "$1" "CREATE TABLE IF NOT EXISTS $table (id UInt64, name String) ENGINE = MergeTree ORDER BY id" &&
        ch_query "$1" "INSERT INTO $table VALUES (1, 'a'), (2, 'b'), (3, 'c')"
}
cleanup() {
    if [[ "${MODELWATCH_SELFTEST_KEEP:-0}" == 1 ]]; then
        log "leaving services running (MODELWATCH_SELFTEST_KEEP=1)"
        "$here/clickhouse-stop.sh" --dir "$ch2_dir" --wipe >/dev/null 2>&1 || true
        return
    fi
    "$here/clickhouse-stop.sh" --dir "$ch2_dir" --wipe >/dev/null 2>&1 || true
    "$here/services.sh" down --wipe >/dev/null 2>&1 || true
}
trap cleanup EXIT

# lib.sh's wait after spawn, on stand-in processes (no services needed).
lib_dir="$(mktemp -d)"
late_exec_is_waited_for() { # the command line holds the marker only after a late exec
    (
        # shellcheck disable=SC2016  # $0 is the child's
        spawn "$lib_dir/late.log" "$lib_dir/late.pid" bash -c 'sleep 0.5; exec -a "$0-up" sleep 30' mw-selftest
        # shellcheck disable=SC2317  # called by wait_started
        up() { tr '\0' ' ' <"/proc/$(cat "$lib_dir/late.pid")/cmdline" 2>/dev/null | grep -qF mw-selftest-up; }
        wait_started "late exec" "$lib_dir" "$lib_dir/late.pid" "$lib_dir/late.log" true up
    )
    local rc=$?
    kill "$(cat "$lib_dir/late.pid")" 2>/dev/null || true
    return "$rc"
}
early_exit_is_reported() { # fails at once (not at the deadline), with the child's output
    local out rc=0
    out="$(
        MODELWATCH_START_TIMEOUT=30
        spawn "$lib_dir/exit.log" "$lib_dir/exit.pid" sh -c 'echo boom-from-child; exit 3'
        wait_started "early exit" "$lib_dir" "$lib_dir/exit.pid" "$lib_dir/exit.log" true false 2>&1
    )" || rc=$?
    ((rc != 0)) && grep -q "exited during startup" <<<"$out" && grep -q boom-from-child <<<"$out"
}
check "a service that execs late is waited for" late_exec_is_waited_for
check "a service that exits at start is reported" early_exit_is_reported
rm -rf "$lib_dir"

# Python client (Debian's librdkafka is too old for tansu; PyPI's confluent-kafka bundles a new one).
venv="$MODELWATCH_CACHE/pyvenv"
if ! "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
    log "installing confluent-kafka into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q confluent-kafka || die "pip install confluent-kafka failed"
fi

tansu_was_built=no
[[ -x "$TANSU_BIN" ]] && tansu_was_built=yes
check "install tansu" timed "install-tansu.sh (binary present before: $tansu_was_built)" "$here/install-tansu.sh"
check "install clickhouse" timed "install-clickhouse.sh" "$here/install-clickhouse.sh"

check "services up (fresh data)" timed "services.sh up, fresh data dirs" "$here/services.sh" up
if ((failed)); then
    echo "selftest: $passed passed, $failed failed (services did not start; nothing more to check)"
    exit 1
fi
check "services up again while running" timed "services.sh up, already running" "$here/services.sh" up
check "status says both run" "$here/services.sh" status
# shellcheck disable=SC1090,SC1091
set -a && . "$MODELWATCH_SERVICES_ENV" && set +a
check "env names the brokers" test "$MODELWATCH_TEST_BROKERS" = "127.0.0.1:$MODELWATCH_BROKER_PORT"
check "env names the ClickHouse URL" test "$MODELWATCH_TEST_CLICKHOUSE_URL" = "http://127.0.0.1:$MODELWATCH_CH_HTTP_PORT"

check "create topic (4 partitions)" timed "broker-topic.sh create (first topic after start)" \
    "$here/broker-topic.sh" create "$topic" --partitions 4 --port "$MODELWATCH_BROKER_PORT"
check "create topic again is fine" "$here/broker-topic.sh" create "$topic" --partitions 4 --port "$MODELWATCH_BROKER_PORT"
check "topic listed" topic_listed "$topic"
check "produce + consume 20 messages" timed "produce + consume 20 messages (confluent-kafka)" \
    "$venv/bin/python" "$here/kafka_check.py" --brokers "$MODELWATCH_TEST_BROKERS" --topic "$topic" --count 20

ch_version="$(curl -sS --max-time 5 "$MODELWATCH_TEST_CLICKHOUSE_URL/?query=SELECT%20version()" || true)"
log "ClickHouse version over HTTP GET: $ch_version"
check "ClickHouse SELECT version() over HTTP" grep -Eq '^[0-9]+\.[0-9]+' <<<"$ch_version"
check "ClickHouse create + insert" ch_create_insert "$MODELWATCH_TEST_CLICKHOUSE_URL"
check "ClickHouse count = 3" test "$(ch_query "$MODELWATCH_TEST_CLICKHOUSE_URL" "SELECT count() FROM $table")" = 3

# A second, private ClickHouse at the same time (as an outage test would start).
check "second ClickHouse starts" timed "second ClickHouse start" \
    "$here/clickhouse-start.sh" --dir "$ch2_dir" --http-port "$ch2_http" --tcp-port "$ch2_tcp"
check "second ClickHouse answers" test "$(ch_query "http://127.0.0.1:$ch2_http" 'SELECT 1')" = 1
check "second ClickHouse has its own data" test \
    "$(ch_query "http://127.0.0.1:$ch2_http" "EXISTS TABLE $table")" = 0
check "clickhouse-client on the tcp port" test "$(clickhouse-client --port "$ch2_tcp" -q 'SELECT 2')" = 2
check "first ClickHouse still answers" test "$(ch_query "$MODELWATCH_TEST_CLICKHOUSE_URL" 'SELECT 1')" = 1
check "same ports in another dir refused" fails "$here/clickhouse-start.sh" \
    --dir "$MODELWATCH_CACHE/run/selftest-clickhouse3" --http-port "$ch2_http" --tcp-port "$(free_port 39200)"
rm -rf "$MODELWATCH_CACHE/run/selftest-clickhouse3"
check "second ClickHouse stops" timed "second ClickHouse stop" "$here/clickhouse-stop.sh" --dir "$ch2_dir" --wipe

check "services down" timed "services.sh down" "$here/services.sh" down
check "services down again" "$here/services.sh" down
check "status says stopped" status_is 3
check "ports released" fails port_open_any "$MODELWATCH_BROKER_PORT" "$MODELWATCH_CH_HTTP_PORT" "$MODELWATCH_CH_TCP_PORT"

check "services up (warm, existing data)" timed "services.sh up, warm restart" "$here/services.sh" up
check "topic survived restart" topic_listed "$topic"
check "ClickHouse rows survived restart" test "$(ch_query "$MODELWATCH_TEST_CLICKHOUSE_URL" "SELECT count() FROM $table")" = 3
check "produce + consume after restart" timed "produce + consume 20 messages after restart" \
    "$venv/bin/python" "$here/kafka_check.py" --brokers "$MODELWATCH_TEST_BROKERS" --topic "$topic" --count 20
check "new topic right after restart" timed "broker-topic.sh create after warm restart" \
    "$here/broker-topic.sh" create "$topic-2" --partitions 2 --port "$MODELWATCH_BROKER_PORT"

echo "== timings"
printf '  %s\n' "${timings[@]}"
echo "selftest: $passed passed, $failed failed"
((failed == 0))
