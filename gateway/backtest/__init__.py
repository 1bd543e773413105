"""`mw-gateway backtest PATH... --data FILE...`: how often would these rules have fired on this history?

data.py reads the files (CSV long or wide, Parquet), run.py drives the real engine over them, this module
checks the options (declared in gateway/cli.py with every command's, so that building the parser does not
import this package) and prints the report (table, json, csv). See docs/backtest.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TextIO

from gateway.backtest.data import DataError, parse_time, stderr_if_tty
from gateway.backtest.run import PLAN_QUOTAS, Result, iso, run_backtest
from gateway.core.durations import parse_duration
from gateway.core.errors import RuleError
from gateway.engine.loader import load_rules


def main(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        start = None if args.start is None else parse_time(args.start)
        end = None if args.end is None else parse_time(args.end)
        tick = None if args.tick is None else parse_duration(args.tick)
        assume_open = None if args.assume_open is None else parse_duration(args.assume_open)
    except ValueError as exc:
        print(f"backtest: {exc}", file=err)
        return 2
    if args.end is not None and len(args.end) == 10 and end is not None:
        end += 86400 - 1e-6  # --to 2026-01-31: the whole day
    if tick is not None and tick <= 0:
        print("backtest: --tick must be positive", file=err)
        return 2
    if args.quota is not None and args.quota < 0:
        print("backtest: --quota must be >= 0", file=err)
        return 2
    quota = args.quota if args.quota is not None else PLAN_QUOTAS.get(args.plan) if args.plan else None
    try:
        ruleset = load_rules(args.paths)
    except RuleError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return 2
    if not ruleset.rules:
        print(f"backtest: no rules in {', '.join(args.paths)}", file=err)
        return 2
    try:
        result = run_backtest(
            ruleset,
            [Path(p) for p in args.data],
            start=start,
            end=end,
            tick=tick,
            assume_open=assume_open,
            quota=quota,
            timezone=args.timezone,
            reader=args.reader,
            progress_out=stderr_if_tty(),
        )
    except DataError as exc:
        print(f"backtest: {exc}", file=err)
        return 2
    notes(result, err)
    if args.format == "json":
        json.dump(result.to_json(), out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        write_csv(result, out)
    else:
        write_table(result, out)
    return 0


def _some(names: list[str], limit: int = 20) -> str:
    more = f" ... (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def notes(result: Result, err: TextIO) -> None:
    """Unknown and missing signals, each listed once."""
    if result.unused_signals:
        n = len(result.unused_signals)
        print(f"note: {n} signal(s) in the data used by no rule: {_some(result.unused_signals)}", file=err)
    for signal, rules in result.missing_signals.items():
        print(f"warning: no data for {signal} (used by {', '.join(rules)})", file=err)


def write_table(result: Result, out: TextIO) -> None:
    tz = result.timezone
    span = (
        f"{iso(result.start, tz)} .. {iso(result.end, tz)}"
        if result.start is not None and result.end is not None
        else "no rows"
    )
    rate = result.samples / result.seconds if result.seconds > 0 else 0.0
    print(
        f"backtest: {len(result.rules)} rule(s) over {result.samples:,} samples ({span}) "
        f"in {result.seconds:.1f} s ({rate:,.0f} samples/s)",
        file=out,
    )
    months = sorted({m for r in result.rules for m in r.months})
    head = ["RULE", "FIRINGS", "SUPPRESSED", "TASKS", "FIRST", "LAST", *months]
    rows = [
        [
            r.id,
            str(r.firings),
            str(r.suppressed),
            str(r.tasks),
            iso(r.first, tz) if r.first is not None else "-",
            iso(r.last, tz) if r.last is not None else "-",
            *(str(r.months.get(m, 0)) for m in months),
        ]
        for r in result.rules
    ]
    print("", file=out)
    _table(head, rows, out)
    print("", file=out)
    quota = "-" if result.quota is None else str(result.quota)
    mrows = []
    for m in result.months:
        mark = ""
        if m.held_normal:
            mark = f"<- {m.held_normal} normal-priority task(s) held"
        if m.held - m.held_normal:
            mark += ("; " if mark else "<- ") + f"{m.held - m.held_normal} high-priority held"
        mrows.append([m.month, str(m.tasks), str(m.high), quota, str(m.held), mark])
    if mrows:
        _table(["MONTH", "TASKS", "HIGH", "QUOTA", "HELD", ""], mrows, out)
    else:
        print("no tasks", file=out)


def _table(head: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    for row in [head, *rows]:
        cells = [
            c.ljust(w) if i == 0 or not c[:1].isdigit() else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)


def write_csv(result: Result, out: TextIO) -> None:
    """One row per rule and month, then one `*` row per month with the month's tasks, quota and held."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["rule", "month", "firings", "suppressed", "tasks", "quota", "held"])
    for r in result.rules:
        for month, (firings, suppressed, tasks) in sorted(r.detail.items()):
            w.writerow([r.id, month, firings, suppressed, tasks, "", ""])
    for m in result.months:
        w.writerow(["*", m.month, "", "", m.tasks, "" if result.quota is None else result.quota, m.held])
