#!/usr/bin/env bash
# Starts or stops a private ClickHouse for this crate's integration tests, until deploy/local/
# provides one. Loopback only, its own config and data dir, non-default ports.
#
#   scripts/test-clickhouse.sh start|stop|status   (env: MW_CH_DIR, MW_CH_HTTP_PORT, MW_CH_TCP_PORT)
#   export MODELWATCH_TEST_CLICKHOUSE_URL=http://127.0.0.1:${MW_CH_HTTP_PORT:-28123}
set -euo pipefail

DIR="${MW_CH_DIR:-/tmp/modelwatch-ch-test}"
HTTP_PORT="${MW_CH_HTTP_PORT:-28123}"
TCP_PORT="${MW_CH_TCP_PORT:-29000}"
SERVER="${MW_CH_SERVER:-clickhouse-server}"

write_config() {
    mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$DIR/log"
    cat >"$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$DIR/log/server.log</log>
        <errorlog>$DIR/log/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$DIR/data/</path>
    <tmp_path>$DIR/tmp/</tmp_path>
    <user_files_path>$DIR/user_files/</user_files_path>
    <format_schema_path>$DIR/format_schemas/</format_schema_path>
    <users_config>$DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
    cat >"$DIR/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
XML
}

up() { curl -fsS "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1; }

case "${1:-}" in
start)
    if up; then echo "already running on $HTTP_PORT"; exit 0; fi
    write_config
    (cd "$DIR" && nohup "$SERVER" --config-file="$DIR/config.xml" >"$DIR/log/stdout.log" 2>&1 & echo $! >"$DIR/server.pid")
    for _ in $(seq 1 120); do
        if up; then echo "clickhouse up: http://127.0.0.1:$HTTP_PORT (pid $(cat "$DIR/server.pid"))"; exit 0; fi
        sleep 0.25
    done
    echo "clickhouse did not start; see $DIR/log" >&2; exit 1
    ;;
stop)
    if [[ -f "$DIR/server.pid" ]]; then
        pid="$(cat "$DIR/server.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        rm -f "$DIR/server.pid"
    fi
    ;;
status) up && echo up || { echo down; exit 1; } ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
