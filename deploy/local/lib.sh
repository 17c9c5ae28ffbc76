#!/usr/bin/env bash
# Shared helpers for the deploy/local scripts. Source it; do not run it.
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file

# Where slow installs and the default instance directories live (outside any clone).
MODELWATCH_CACHE="${MODELWATCH_CACHE:-$HOME/.cache/modelwatch}"

# tansu: the version we build and expect, where it is installed, where cargo builds it.
MODELWATCH_TANSU_VERSION="${MODELWATCH_TANSU_VERSION:-0.6.0}"
MODELWATCH_TANSU_ROOT="${MODELWATCH_TANSU_ROOT:-$MODELWATCH_CACHE/tansu}"
MODELWATCH_TANSU_TARGET_DIR="${MODELWATCH_TANSU_TARGET_DIR:-$MODELWATCH_CACHE/tansu-target}"
TANSU_BIN="$MODELWATCH_TANSU_ROOT/bin/tansu"

# clickhouse_server_bin: path of clickhouse-server (Debian puts it in /usr/sbin, which a non-root
# user's PATH may lack); fails when it is not installed.
clickhouse_server_bin() {
    command -v clickhouse-server 2>/dev/null && return 0
    [[ -x /usr/sbin/clickhouse-server ]] && echo /usr/sbin/clickhouse-server
}

# Default instances. Only loopback is ever used.
MODELWATCH_HOST=127.0.0.1
MODELWATCH_BROKER_PORT="${MODELWATCH_BROKER_PORT:-19092}"
MODELWATCH_BROKER_DIR="${MODELWATCH_BROKER_DIR:-$MODELWATCH_CACHE/run/broker}"
MODELWATCH_BROKER_STORAGE="${MODELWATCH_BROKER_STORAGE:-sqlite}"
MODELWATCH_CH_HTTP_PORT="${MODELWATCH_CH_HTTP_PORT:-18123}"
MODELWATCH_CH_TCP_PORT="${MODELWATCH_CH_TCP_PORT:-19000}"
MODELWATCH_CH_DIR="${MODELWATCH_CH_DIR:-$MODELWATCH_CACHE/run/clickhouse}"
MODELWATCH_SMTP_PORT="${MODELWATCH_SMTP_PORT:-12525}"
MODELWATCH_SMTP_DIR="${MODELWATCH_SMTP_DIR:-$MODELWATCH_CACHE/run/smtp}"
MODELWATCH_AM_PORT="${MODELWATCH_AM_PORT:-19093}"
MODELWATCH_AM_DIR="${MODELWATCH_AM_DIR:-$MODELWATCH_CACHE/run/alertmanager}"

# The Python venv of the scripts and tests (confluent-kafka, aiosmtpd) and the aiosmtpd version.
MODELWATCH_PYVENV="${MODELWATCH_PYVENV:-$MODELWATCH_CACHE/pyvenv}"
MODELWATCH_AIOSMTPD_VERSION="${MODELWATCH_AIOSMTPD_VERSION:-1.4.6}"

# Where services.sh up writes the env lines for tests to source.
MODELWATCH_SERVICES_ENV="${MODELWATCH_SERVICES_ENV:-$MODELWATCH_CACHE/run/services.env}"

# Absolute paths, so pid checks (which match on paths) agree whatever the caller's directory.
MODELWATCH_BROKER_DIR="$(realpath -m -- "$MODELWATCH_BROKER_DIR")"
MODELWATCH_CH_DIR="$(realpath -m -- "$MODELWATCH_CH_DIR")"
MODELWATCH_SMTP_DIR="$(realpath -m -- "$MODELWATCH_SMTP_DIR")"
MODELWATCH_AM_DIR="$(realpath -m -- "$MODELWATCH_AM_DIR")"

# Seconds to wait for a service to answer after start, and for it to exit after SIGTERM.
MODELWATCH_START_TIMEOUT="${MODELWATCH_START_TIMEOUT:-60}"
MODELWATCH_STOP_TIMEOUT="${MODELWATCH_STOP_TIMEOUT:-20}"

# The name a script reports under in its messages.
MW_NAME="$(basename "${0:-deploy}")"

log() { printf '[%s] %s\n' "$MW_NAME" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$MW_NAME" "$*" >&2
    exit 1
}

# now_ms: milliseconds since the epoch.
now_ms() { date +%s%3N; }

# require_port VALUE NAME: VALUE must be a TCP port number.
require_port() {
    if ! [[ "$1" =~ ^[0-9]+$ ]] || (("$1" < 1 || "$1" > 65535)); then
        die "$2 must be a TCP port number, got '$1'"
    fi
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/$MODELWATCH_HOST/$1") 2>/dev/null
}

# free_port START: prints the first port from START up (at most 200 tried) that nothing listens on
# at 127.0.0.1. Another process may still take it before it is used: callers that start a
# service on it get a clear "port in use" error in that case.
free_port() {
    local p
    for ((p = $1; p < $1 + 200 && p < 65536; p++)); do
        if ! port_open "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# pid_alive PIDFILE MARKER: prints the pid and succeeds when the pid file names a live process
# whose command line contains MARKER (so a stale pid reused by another process does not count).
pid_alive() {
    local pidfile="$1" marker="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
    echo "$pid"
}

# stop_pidfile PIDFILE MARKER WHAT: SIGTERM, wait up to MODELWATCH_STOP_TIMEOUT, then SIGKILL.
# Succeeds when nothing is running (idempotent); removes the pid file.
stop_pidfile() {
    local pidfile="$1" marker="$2" what="$3" pid deadline
    if ! pid="$(pid_alive "$pidfile" "$marker")"; then
        rm -f "$pidfile"
        log "$what is not running"
        return 0
    fi
    log "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + MODELWATCH_STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$what (pid $pid) still running after ${MODELWATCH_STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$pidfile"
    log "$what stopped"
}

# stop_instance_main LABEL DEFAULT_DIR PIDNAME MARKER ARGS...: the body of the *-stop.sh scripts:
# parses [--dir DIR] [--wipe], stops the instance of DIR by its pid file (MARKER: a string of
# its command line; `{dir}` in it stands for the resolved directory) and, with --wipe, deletes
# DIR. Not running: succeeds.
stop_instance_main() {
    local label="$1" dir="$2" pidname="$3" marker="$4" wipe=0
    shift 4
    while (($#)); do
        case "$1" in
        --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
        --wipe) wipe=1; shift ;;
        -h | --help) sed -n '2,6p' "$0"; return 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
        esac
    done
    if [[ ! -d "$dir" ]]; then
        log "$label is not running (no directory $dir)"
        return 0
    fi
    dir="$(cd "$dir" && pwd)"
    stop_pidfile "$dir/$pidname" "${marker//\{dir\}/$dir}" "$label in $dir"
    if ((wipe)); then
        rm -rf -- "$dir"
        log "removed $dir"
    fi
}

# lock_install NAME / unlock_install: take and release an exclusive lock
# ($MODELWATCH_CACHE/NAME.lock on fd 9), so parallel tests that start services install a missing
# package once instead of racing (pip into one venv, apt-get's dpkg lock). Release it before
# starting a service: a child would inherit fd 9 and hold the lock for its whole life.
lock_install() {
    mkdir -p "$MODELWATCH_CACHE"
    exec 9>"$MODELWATCH_CACHE/$1.lock"
    flock 9
}
unlock_install() {
    flock -u 9 2>/dev/null || true
    exec 9>&-
}

# spawned_alive PIDFILE: succeeds while the process that spawn wrote to PIDFILE has not exited
# (a zombie counts as exited). For the wait right after spawn only: until the child has called
# exec, its command line is still its parent's, so pid_alive's MARKER check would take a service
# that is starting for one that died (seen in CI as "exited during startup" with an empty log).
# The pid cannot have been reused by then: the pid file was written a moment ago.
spawned_alive() {
    local pid stat state
    pid="$(cat "$1" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # Field 2 is the command name in parentheses, which may hold spaces: the state follows it.
    state="${stat##*) }"
    state="${state%% *}"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# wait_started LABEL DIR PIDFILE LOGFILE STOP_SCRIPT READY_CMD...: after spawn, polls READY_CMD
# until it succeeds. Fails with the log's last lines when the process of PIDFILE exits first
# (spawned_alive); after MODELWATCH_START_TIMEOUT runs STOP_SCRIPT --dir DIR and fails.
wait_started() {
    local label="$1" dir="$2" pidfile="$3" logfile="$4" stop="$5" deadline
    shift 5
    deadline=$((SECONDS + MODELWATCH_START_TIMEOUT))
    until "$@"; do
        if ! spawned_alive "$pidfile"; then
            log "$label exited during startup; last log lines:"
            tail -n 20 "$logfile" >&2 || true
            rm -f "$pidfile"
            die "$label in $dir failed to start"
        fi
        if ((SECONDS >= deadline)); then
            "$stop" --dir "$dir" || true
            die "$label in $dir did not become ready within ${MODELWATCH_START_TIMEOUT}s"
        fi
        sleep 0.05
    done
}

# spawn LOGFILE PIDFILE CMD...: start CMD in its own session in the background, detached from
# the caller's terminal and process group, output appended to LOGFILE; writes its pid to PIDFILE.
spawn() {
    local logfile="$1" pidfile="$2"
    shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    echo "$!" >"$pidfile"
}
