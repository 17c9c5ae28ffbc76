#!/usr/bin/env python3
"""Run every query of the modelwatch Grafana dashboards against a real ClickHouse.

Extracts each panel target's `rawSql` and each query variable's SQL from the dashboard JSON
files, expands the ClickHouse plugin's macros for a fixed time range the way the plugin does
(grafana-clickhouse-datasource v4: `$__timeFilter(col)` is `col >= toDateTime(FROM) AND col <=
toDateTime(TO)`, and so on), substitutes the dashboard variables, and sends each query over
ClickHouse's HTTP interface. A query fails when ClickHouse rejects it (parse or analysis error,
unknown table or column); with --require-rows, also when it returns no row.

Usage:
    MODELWATCH_TEST_CLICKHOUSE_URL=http://127.0.0.1:18123 deploy/grafana/check_queries.py
        [--require-rows] [--from EPOCH_S] [--to EPOCH_S] [--var model=fraud-detector]
        [DASHBOARD.json ...]

Environment: MODELWATCH_TEST_CLICKHOUSE_URL (required), MODELWATCH_TEST_CLICKHOUSE_DB (default
`modelwatch`: the queries use unqualified table names, as the data source's default database),
MODELWATCH_TEST_CLICKHOUSE_USER / _PASSWORD (optional). Standard library only.
Exit status: 0 all passed, 1 a query failed, 2 usage or setup error.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
DEFAULT_VARS = {"model": "fraud-detector"}
# The plugin's interval for $__interval_s / $__timeInterval: Grafana derives it from the range
# and the panel width; any positive whole number of seconds exercises the same SQL.
INTERVAL_S = 20


def expand_macros(sql: str, start: int, end: int) -> str:
    """Expands the plugin's macros for the range [start, end] (epoch seconds)."""

    def date(t: int) -> str:
        return time.strftime("toDate('%Y-%m-%d')", time.gmtime(t))

    def one_arg(name: str, args: list[str]) -> str:
        if len(args) != 1:
            raise ValueError(f"$__{name} expects 1 argument, got {len(args)}")
        return args[0]

    macros = {
        "timeFilter": lambda a: f"{one_arg('timeFilter', a)} >= toDateTime({start}) AND "
        f"{a[0]} <= toDateTime({end})",
        "timeFilter_ms": lambda a: f"{one_arg('timeFilter_ms', a)} >= fromUnixTimestamp64Milli("
        f"{start * 1000}) AND {a[0]} <= fromUnixTimestamp64Milli({end * 1000})",
        "dateFilter": lambda a: f"{one_arg('dateFilter', a)} >= {date(start)} AND "
        f"{a[0]} <= {date(end)}",
        "timeInterval": lambda a: f"toStartOfInterval(toDateTime({one_arg('timeInterval', a)}), "
        f"INTERVAL {INTERVAL_S} second)",
        "fromTime": lambda a: f"toDateTime({start})",
        "toTime": lambda a: f"toDateTime({end})",
        "fromTime_ms": lambda a: f"fromUnixTimestamp64Milli({start * 1000})",
        "toTime_ms": lambda a: f"fromUnixTimestamp64Milli({end * 1000})",
        "interval_s": lambda a: str(INTERVAL_S),
    }
    pattern = re.compile(r"\$__(" + "|".join(sorted(macros, key=len, reverse=True)) + r")\b(?:\(([^()]*)\))?")

    def replace(m: re.Match[str]) -> str:
        args = [x.strip() for x in m.group(2).split(",")] if m.group(2) is not None else []
        return macros[m.group(1)](args)

    out = pattern.sub(replace, sql)
    left = re.findall(r"\$__\w+", out)
    if left:
        raise ValueError(f"macro not supported by the checker (nor used by the dashboards): {left}")
    return out


def substitute_vars(sql: str, variables: dict[str, str]) -> str:
    """Replaces `${name}`, `${name:raw}` and `$name` as Grafana does for a single value."""

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name not in variables:
            raise ValueError(f"dashboard variable ${name} has no value (pass --var {name}=...)")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::(raw))?\}|\$(?!__)(\w+)", replace, sql)


def queries(path: Path) -> list[tuple[str, str]]:
    """(label, rawSql) of every panel target and query variable of a dashboard."""
    dash = json.loads(path.read_text())
    found: list[tuple[str, str]] = []

    def walk_panels(panels: list[dict]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                sql = t.get("rawSql", "")
                if not sql.strip():
                    raise ValueError(f"{path.name}: panel {p.get('title')!r} target {t.get('refId')} has no rawSql")
                found.append((f"panel {p.get('title')!r} {t.get('refId', '')}", sql))
            walk_panels(p.get("panels", []))  # rows

    walk_panels(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            sql = q.get("rawSql") if isinstance(q, dict) else q
            found.append((f"variable ${v.get('name')}", sql))
    return found


def run(url: str, db: str, user: str | None, password: str | None, sql: str) -> tuple[bool, int, str]:
    """Runs one query; (ok, rows, error text)."""
    params = urllib.parse.urlencode({"database": db})
    req = urllib.request.Request(f"{url.rstrip('/')}/?{params}", data=(sql + "\nFORMAT TabSeparated").encode(), method="POST")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return False, 0, e.read().decode(errors="replace").strip()
    rows = [line for line in body.split("\n") if line]
    return True, len(rows), ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboards", nargs="*", type=Path, help="dashboard JSON files (default: deploy/grafana/dashboards/*.json)")
    ap.add_argument("--require-rows", action="store_true", help="fail a query that returns no row")
    now = int(time.time())
    ap.add_argument("--from", dest="start", type=int, default=now - 6 * 3600, help="range start, epoch seconds (default now - 6h)")
    ap.add_argument("--to", dest="end", type=int, default=now, help="range end, epoch seconds (default now)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a dashboard variable's value")
    args = ap.parse_args()

    url = os.environ.get("MODELWATCH_TEST_CLICKHOUSE_URL")
    if not url:
        print("check_queries: set MODELWATCH_TEST_CLICKHOUSE_URL (e.g. http://127.0.0.1:18123)", file=sys.stderr)
        return 2
    db = os.environ.get("MODELWATCH_TEST_CLICKHOUSE_DB", "modelwatch")
    user = os.environ.get("MODELWATCH_TEST_CLICKHOUSE_USER")
    password = os.environ.get("MODELWATCH_TEST_CLICKHOUSE_PASSWORD")
    variables = dict(DEFAULT_VARS)
    for kv in args.var:
        name, sep, value = kv.partition("=")
        if not sep:
            ap.error(f"--var wants NAME=VALUE, got {kv!r}")
        variables[name] = value
    files = args.dashboards or sorted(DASHBOARD_DIR.glob("*.json"))
    if not files:
        print(f"check_queries: no dashboard in {DASHBOARD_DIR}", file=sys.stderr)
        return 2

    passed = failed = 0
    for path in files:
        for label, raw in queries(path):
            try:
                sql = substitute_vars(expand_macros(raw, args.start, args.end), variables)
            except ValueError as e:
                ok, rows, err = False, 0, str(e)
            else:
                ok, rows, err = run(url, db, user, password, sql)
            if ok and args.require_rows and rows == 0:
                ok, err = False, "no rows (--require-rows)"
            if ok:
                passed += 1
                print(f"ok   {path.name}: {label}: {rows} row(s)")
            else:
                failed += 1
                first = err.splitlines()[0] if err else "?"
                print(f"FAIL {path.name}: {label}: {first[:400]}")
    print(f"check_queries: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
