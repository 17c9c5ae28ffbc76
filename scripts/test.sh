#!/usr/bin/env bash
# The whole test suite: format check, clippy with warnings denied, the deploy/local self test,
# the static validators of deploy/ (deploy/validate.sh: yamllint, compose-spec schema,
# kubernetes-validate, hadolint; PyPI venv cached in $MODELWATCH_CACHE/venv-deploy),
# and every test of the workspace against a real broker (tansu) and a real ClickHouse, which this
# script installs when missing (tansu is built once into ~/.cache/modelwatch, ~7 min cold) and
# starts on loopback ports, then stops again.
#
# Usage: scripts/test.sh   (from anywhere; CI runs it through .ci/run with CI=true, where a
# test that needs a service it cannot reach fails instead of skipping)
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep the build cache outside the clone, so a fresh clone rebuilds only what changed.
export MODELWATCH_CACHE="${MODELWATCH_CACHE:-$HOME/.cache/modelwatch}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MODELWATCH_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== services (tansu broker, ClickHouse)"
MODELWATCH_BROKER_FRESH=1 MODELWATCH_CLICKHOUSE_FRESH=1 deploy/local/services.sh up
# shellcheck disable=SC1091
set -a && . "$MODELWATCH_CACHE/run/services.env" && set +a
trap 'deploy/local/services.sh down || true' EXIT

echo "== deploy/local self test"
deploy/local/selftest.sh

echo "== deploy validators"
deploy/validate.sh

echo "== cargo test"
cargo test --workspace --all-features --locked
