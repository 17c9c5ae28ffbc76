#!/usr/bin/env bash
# Start a real SMTP server for the e-mail tests (Python aiosmtpd from PyPI, installed into the venv
# $MODELWATCH_CACHE/pyvenv when missing) on loopback, storing every message it accepts as a file.
# Usage: deploy/local/smtp-start.sh [--dir DIR] [--port N] [--tls-port N] [--auth USER:PASSWORD]
#   --port      plain SMTP with STARTTLS offered (optional for the client)      (default 12525)
#   --tls-port  also implicit TLS (SMTPS) on this port                          (default: none)
#   --auth      require SMTP AUTH with these credentials (plain port: only after STARTTLS)
# Env (flags win): MODELWATCH_SMTP_DIR (default $MODELWATCH_CACHE/run/smtp), MODELWATCH_SMTP_PORT,
#      MODELWATCH_START_TIMEOUT (default 60 s).
# DIR holds: messages/*.eml (one file per accepted message, renamed into place when complete,
# with X-Test-Envelope-From/-To, X-Test-TLS, X-Test-Auth and X-Test-Helo headers prepended), tls/cert.pem and
# tls/key.pem (a self-signed certificate for 127.0.0.1 and localhost, made by openssl on first
# start; a client trusts tls/cert.pem as its CA), smtp.log, smtp.pid.
# Recipients "defer-*@..." get 451, "reject-*@..." get 550 (for error-handling tests).
# Prints 127.0.0.1:PORT on stdout (and 127.0.0.1:TLS_PORT on a second line with --tls-port).
# Already running in DIR with the same ports: reports it, succeeds.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

dir="$MODELWATCH_SMTP_DIR"
port="$MODELWATCH_SMTP_PORT"
tls_port=0
auth=""
while (($#)); do
    case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --tls-port) tls_port="${2:?--tls-port needs a value}"; shift 2 ;;
    --auth) auth="${2:?--auth needs a value}"; shift 2 ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
require_port "$port" "port"
if [[ "$tls_port" != 0 ]]; then
    require_port "$tls_port" "tls port"
    [[ "$port" != "$tls_port" ]] || die "port and tls port must differ"
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pidfile="$dir/smtp.pid"
marker="smtp_server.py --dir $dir"

addresses() {
    echo "$MODELWATCH_HOST:$port"
    if [[ "$tls_port" != 0 ]]; then echo "$MODELWATCH_HOST:$tls_port"; fi
}

if pid="$(pid_alive "$pidfile" "$marker")"; then
    [[ "$(cat "$dir/ready" 2>/dev/null)" == "$port $tls_port" ]] ||
        die "an SMTP server already runs in $dir (pid $pid) on other ports; stop it first (smtp-stop.sh --dir $dir)"
    log "SMTP server already running in $dir (pid $pid) at $MODELWATCH_HOST:$port"
    addresses
    exit 0
fi

for p in "$port" "$tls_port"; do
    [[ "$p" == 0 ]] && continue
    port_open "$p" && die "port $MODELWATCH_HOST:$p is already in use by another process (not the SMTP server of $dir)"
done

# aiosmtpd in the project's venv (the same venv selftest.sh puts confluent-kafka in).
python="$MODELWATCH_PYVENV/bin/python"
if ! "$python" -c 'import aiosmtpd' 2>/dev/null; then
    lock_install pyvenv
fi
if ! "$python" -c 'import aiosmtpd' 2>/dev/null; then
    log "installing aiosmtpd into $MODELWATCH_PYVENV"
    [[ -x "$python" ]] || python3 -m venv "$MODELWATCH_PYVENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$MODELWATCH_PYVENV/bin/pip" install -q "aiosmtpd==$MODELWATCH_AIOSMTPD_VERSION" || die "pip install aiosmtpd failed"
fi
unlock_install

# A self-signed certificate valid for 127.0.0.1 and localhost, made once per directory.
mkdir -p "$dir/tls" "$dir/messages" "$dir/tmp"
if [[ ! -s "$dir/tls/cert.pem" || ! -s "$dir/tls/key.pem" ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the test certificate"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=modelwatch-test-smtp" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" 2>"$dir/tls/openssl.log" ||
        die "openssl could not make the certificate (see $dir/tls/openssl.log)"
fi

args=(--dir "$dir" --port "$port" --cert "$dir/tls/cert.pem" --key "$dir/tls/key.pem")
[[ "$tls_port" != 0 ]] && args+=(--tls-port "$tls_port")
[[ -n "$auth" ]] && args+=(--auth "$auth")
rm -f "$dir/ready"
start="$(now_ms)"
log "starting SMTP server in $dir (port $port, implicit TLS port ${tls_port/#0/-})"
spawn "$dir/smtp.log" "$pidfile" "$python" -u "$here/smtp_server.py" "${args[@]}"
smtp_ready() { [[ -f "$dir/ready" ]] && port_open "$port"; }
wait_started "SMTP server" "$dir" "$pidfile" "$dir/smtp.log" "$here/smtp-stop.sh" smtp_ready
log "SMTP server ready at $MODELWATCH_HOST:$port (pid $(cat "$pidfile"), $(($(now_ms) - start)) ms)"
addresses
