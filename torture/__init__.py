"""Fault campaigns: `python -m torture [NAME ...]` (power_cut, outage, links, input, disk,
sqlite_faults, source_edges, fleet, http_edges, absurd).

Each campaign is a module with `async def run(report: Report) -> None`; it is bounded in time and count, runs
on loopback only, and records every verified property with `report.check(ok, what)`. These are not part of
`make test` (too long); see docs/reliability.md for what each one proves and the last run's figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    name: str
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def check(self, ok: bool, what: str) -> bool:
        """One verified property; a failure is printed at once and listed again at the end."""
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(what)
            print(f"  [{self.name}] FAILED: {what}", flush=True)
        return ok

    def fact(self, text: str) -> None:
        """A figure worth printing (counts, durations), not a pass/fail."""
        self.facts.append(text)
        print(f"  [{self.name}] {text}", flush=True)

    def finish(self) -> None:
        self.finished = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "torture"


def keep_log(name: str, text: str) -> Path:
    """Keep a process's log after the campaign's temporary directory is gone (test-artifacts/ is ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(text, encoding="utf-8")
    return path
