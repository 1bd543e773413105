"""Run the fault campaigns and print `N passed, N failed` per campaign and overall.

Usage: python -m torture [CAMPAIGN ...]   CAMPAIGN: power_cut, outage, links, input, disk, sqlite_faults,
       source_edges, fleet, http_edges, absurd
       (all of them by default, in that order)
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import traceback

from torture import Report

CAMPAIGNS = (
    "power_cut",
    "outage",
    "links",
    "input",
    "disk",
    "sqlite_faults",
    "source_edges",
    "fleet",
    "http_edges",
    "absurd",
)


def main(argv: list[str]) -> int:
    wanted = argv or list(CAMPAIGNS)
    unknown = [n for n in wanted if n not in CAMPAIGNS]
    if unknown:
        print(f"unknown campaign {', '.join(unknown)}; known: {', '.join(CAMPAIGNS)}", file=sys.stderr)
        return 2
    reports: list[Report] = []
    started = time.monotonic()
    for name in wanted:
        report = Report(name)
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"torture.{name}")
            asyncio.run(module.run(report))
        except Exception:
            traceback.print_exc()
            report.check(False, "the campaign itself crashed (traceback above)")
        report.finish()
        reports.append(report)
        print(
            f"== {name}: {report.passed} passed, {report.failed} failed ({report.elapsed_s:.0f}s)\n",
            flush=True,
        )
    print("Summary")
    for r in reports:
        print(f"  {r.name:<10} {r.passed:>5} passed, {r.failed:>3} failed  ({r.elapsed_s:.0f}s)")
        for what in r.failures:
            print(f"      FAILED: {what}")
    passed = sum(r.passed for r in reports)
    failed = sum(r.failed for r in reports)
    print(f"  {'overall':<10} {passed:>5} passed, {failed:>3} failed  ({time.monotonic() - started:.0f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
