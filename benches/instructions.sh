#!/usr/bin/env bash
# Instructions per event of the hot path (decode + record, as `hotpath` times it), counted by
# valgrind's callgrind over the timed passes only: a figure that does not move with the load of a
# shared machine, unlike the wall-clock ones. Prints the total per event and the functions that
# execute the most instructions (self cost, per event).
#
# Usage: benches/instructions.sh [avro|json|decode-avro|decode-json] [events]   (default: avro 100000)
# Needs valgrind (Debian package valgrind). Takes a minute or two: the warm-up runs under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-avro}"
events="${2:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${MODELWATCH_CACHE:-$HOME/.cache/modelwatch}/target}"
# HOTPATH_BIN: an already built hotpath binary (to compare builds); by default this tree's.
bin="${HOTPATH_BIN:-$CARGO_TARGET_DIR/release/examples/hotpath}"
[ -n "${HOTPATH_BIN:-}" ] || cargo build --release --quiet -p modelwatch-benches --example hotpath
# 10 s of event time freeze every layout (2 s do) and fill the pools.
env=(HOTPATH_PASSES=1 "HOTPATH_PER_PASS=$events" HOTPATH_WARMUP_S=10)
case "$what" in
    avro) ;;
    json) env+=(HOTPATH_JSON=1) ;;
    decode-avro) env+=(HOTPATH_DECODE_ONLY=1) ;;
    decode-json) env+=(HOTPATH_JSON=1 HOTPATH_DECODE_ONLY=1) ;;
    *) echo "usage: $0 [avro|json|decode-avro|decode-json] [events]" >&2; exit 2 ;;
esac
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
env "${env[@]}" valgrind --tool=callgrind --toggle-collect='hotpath::pass' \
    --callgrind-out-file="$out" "$bin" >/dev/null 2>&1
callgrind_annotate --threshold=100 --auto=no "$out" | python3 -c '
import re, sys
from collections import Counter
n, what = float(sys.argv[1]), sys.argv[2]
per_fn, total = Counter(), 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
    if not m:
        continue
    count, name = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in name:
        total = count
        continue
    # "file:function [object]": inlined code is charged to its source file; sum per function
    name = re.sub(r"\s*\[.*\]$", "", name)
    name = re.split(r"\.(?:rs|c|S|h):", name, maxsplit=1)[-1]
    per_fn[name] += count
print(f"{what}: {total / n:.0f} instructions per event")
for name, count in per_fn.most_common(25):
    print(f"{count / n:8.0f}  {name[:120]}")
' "$events" "$what"
