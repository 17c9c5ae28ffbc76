#!/usr/bin/env bash
# Build and install the tansu broker (SQLite + memory storage engines) into the cache, unless the
# expected version is already there.
# Usage: deploy/local/install-tansu.sh
# Env: MODELWATCH_CACHE (default ~/.cache/modelwatch), MODELWATCH_TANSU_VERSION (default 0.6.0),
#      MODELWATCH_TANSU_ROOT (default $MODELWATCH_CACHE/tansu; binary in bin/tansu),
#      MODELWATCH_TANSU_TARGET_DIR (default $MODELWATCH_CACHE/tansu-target; kept for rebuilds).
# Prints the binary's path on stdout. A cold build takes about 7 minutes on 2 cores.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

installed_version() {
    [[ -x "$TANSU_BIN" ]] || return 1
    "$TANSU_BIN" --version 2>/dev/null | awk '{print $NF}'
}

if v="$(installed_version)" && [[ "$v" == "$MODELWATCH_TANSU_VERSION" ]]; then
    log "tansu $v present at $TANSU_BIN"
    echo "$TANSU_BIN"
    exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH: install a Rust toolchain to build tansu"
mkdir -p "$MODELWATCH_TANSU_ROOT" "$MODELWATCH_TANSU_TARGET_DIR"
log "building tansu $MODELWATCH_TANSU_VERSION (features libsql,dynostore) into $MODELWATCH_TANSU_ROOT"
log "target dir $MODELWATCH_TANSU_TARGET_DIR; a cold build takes ~7 minutes on 2 cores"
start="$(now_ms)"
# Build from outside any workspace so the project's own Cargo config does not apply.
(
    cd "$MODELWATCH_CACHE"
    CARGO_TARGET_DIR="$MODELWATCH_TANSU_TARGET_DIR" nice -n 10 \
        cargo install tansu --version "=$MODELWATCH_TANSU_VERSION" --locked \
        --features libsql,dynostore --root "$MODELWATCH_TANSU_ROOT" >&2
) || die "cargo install tansu failed (see the output above)"
v="$(installed_version)" || die "tansu binary missing at $TANSU_BIN after cargo install"
[[ "$v" == "$MODELWATCH_TANSU_VERSION" ]] || die "tansu at $TANSU_BIN reports version '$v', expected $MODELWATCH_TANSU_VERSION"
log "tansu $v built in $((($(now_ms) - start) / 1000))s"
echo "$TANSU_BIN"
