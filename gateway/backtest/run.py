"""`mw-gateway backtest`: the rule files through the real engine, on simulated time, over historical data.

The timeline is the data's: at every time T present in the data (any signal's row), in order,
  1. the tasks assumed closed by T are closed (`engine.task_closed`: `rearm: on_completion` sees them),
  2. the samples of time T of the rules' signals (every file merged) go through `engine.process_batch`,
  3. `engine.tick(T)` runs (`for` timers, running hours, stale signals, windows).
That is what `mw-gateway test` does at each step, so on the same data the two agree firing for firing
(tests/backtest/test_agreement.py proves it on every rule test and on random series). `--tick 1s` adds a
tick every second between the data's times, as `run` ticks: a `for: 90s` over one-minute data then matures
at 90 s rather than at the next sample; it costs a tick per second of history (slow on sparse data).

Each firing goes through the store's `while_open` rule: a firing of a `while_open: suppress` rule whose
previous task for the same equipment is still open is suppressed; a task is open from its firing until
`--assume-open` (default: the task's `duration`) later. Tasks are counted per month (in `--timezone`,
default UTC) against the plan's quota: normal priority may use the quota up to the high-priority reserve
(the last 10%), high priority all of it; the tasks over that are the month's `held` ones (in `run` they would
wait in the outbox for the next month).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.backtest.data import FileStream, merged, open_streams
from gateway.cmms.schema import PLAN_QUOTAS
from gateway.config import DispatcherSection
from gateway.core.firings import Firing, Priority
from gateway.core.samples import Sample
from gateway.engine.engine import Engine
from gateway.engine.loader import RuleSet
from gateway.runtime.quota import month_key, reserve_from, zone
from gateway.store.outbox import equipment_key

__all__ = ["PLAN_QUOTAS", "Backtest", "Result", "run_backtest"]

# the part of the monthly quota kept for high-priority tasks: `run`'s default
RESERVE_RATIO: float = DispatcherSection.model_fields["high_priority_reserve_ratio"].default


class _Values(dict[str, Sample]):
    """The engine's last values. The engine writes the samples of the rules' signals; the other signals'
    values are found in the data files when a template asks, as of the time being processed."""

    def __init__(self, streams: list[FileStream]) -> None:
        super().__init__()
        self.streams = streams
        self.now = -math.inf

    def _find(self, key: str) -> Sample | None:
        best: Sample | None = None
        for stream in self.streams:
            hit = stream.lookup(key, self.now)
            if hit is not None and (best is None or hit.ts >= best.ts):
                best = hit
        return best

    def get(self, key: str, default: Any = None) -> Any:
        hit = dict.get(self, key)
        if hit is not None:
            return hit
        found = self._find(key)
        return default if found is None else found

    def __getitem__(self, key: str) -> Sample:
        hit = dict.get(self, key)
        if hit is not None:
            return hit
        found = self._find(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (isinstance(key, str) and self._find(key) is not None)


@dataclass
class RuleStats:
    id: str
    name: str
    priority: str
    firings: int = 0
    suppressed: int = 0
    tasks: int = 0
    first: float | None = None
    last: float | None = None
    months: dict[str, int] = field(default_factory=dict)  # firings per month
    detail: dict[str, list[int]] = field(default_factory=dict)  # month -> [firings, suppressed, tasks]

    def to_json(self, timezone: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "firings": self.firings,
            "suppressed": self.suppressed,
            "tasks": self.tasks,
            "first": None if self.first is None else iso(self.first, timezone),
            "last": None if self.last is None else iso(self.last, timezone),
            "months": dict(sorted(self.months.items())),
        }


@dataclass
class MonthStats:
    month: str
    tasks: int = 0
    high: int = 0
    sent: int = 0  # within the quota
    held: int = 0  # over it: normal ones past the reserve, high ones past the quota
    held_normal: int = 0

    def to_json(self, quota: int | None) -> dict[str, Any]:
        return {
            "month": self.month,
            "tasks": self.tasks,
            "quota": quota,
            "held": self.held,
            "held_normal": self.held_normal,
            "high_priority": self.high,
        }


@dataclass
class Result:
    rules: list[RuleStats]
    months: list[MonthStats]
    quota: int | None
    timezone: str
    rows: int
    samples: int
    start: float | None
    end: float | None
    unused_signals: list[str]  # in the data, used by no rule
    missing_signals: dict[str, list[str]]  # signal -> rules that use it, absent from the data
    seconds: float
    firings: list[tuple[Firing, str]] = field(default_factory=list)  # (firing, "task" | "suppressed")

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [r.to_json(self.timezone) for r in self.rules],
            "months": [m.to_json(self.quota) for m in self.months],
            "quota": self.quota,
            "timezone": self.timezone,
            "data": {
                "rows": self.rows,
                "samples": self.samples,
                "from": None if self.start is None else iso(self.start, self.timezone),
                "to": None if self.end is None else iso(self.end, self.timezone),
                "unused_signals": self.unused_signals,
                "missing_signals": self.missing_signals,
            },
        }


def iso(ts: float, timezone: str) -> str:
    return datetime.fromtimestamp(ts, zone(timezone)).isoformat(timespec="seconds").replace("+00:00", "Z")


class Backtest:
    """The loop. `run()` feeds the whole data; `firings` keeps every firing with its fate."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        tick: float | None = None,
        assume_open: float | None = None,
        quota: int | None = None,
        timezone: str = "UTC",
        keep_firings: bool = False,
    ) -> None:
        if tick is not None and not tick > 0:
            raise ValueError("tick must be positive")
        self.ruleset = ruleset
        self.tick = tick
        self.assume_open = assume_open
        self.quota = quota
        self.timezone = timezone
        self.keep_firings = keep_firings
        self.relevant: frozenset[str] = frozenset(
            s for r in ruleset.rules if r.enabled for s in ruleset.compiled[r.id].trigger_signals
        )
        self.stats = {r.id: RuleStats(r.id, r.title, r.priority) for r in ruleset.rules}
        self.months: dict[str, MonthStats] = {}
        self._open_until: dict[tuple[str, str], float] = {}
        self._closing: list[tuple[float, int, str]] = []  # (time, seq, rule id): tasks assumed closed then
        self._seq = 0
        self.firings: list[tuple[Firing, str]] = []
        self.values: _Values | None = None

    # ------------------------------------------------------------ firings

    def _record(self, firings: list[Firing]) -> None:
        for firing in firings:
            stats = self.stats[firing.rule_id]
            stats.firings += 1
            t = firing.fired_at
            stats.first = t if stats.first is None else stats.first
            stats.last = t
            month = month_key(t, self.timezone)
            stats.months[month] = stats.months.get(month, 0) + 1
            detail = stats.detail.setdefault(month, [0, 0, 0])
            detail[0] += 1
            slot = (firing.rule_id, equipment_key(firing))
            if firing.while_open == "suppress" and self._open_until.get(slot, -math.inf) > t:
                stats.suppressed += 1
                detail[1] += 1
                if self.keep_firings:
                    self.firings.append((firing, "suppressed"))
                continue
            stats.tasks += 1
            detail[2] += 1
            if self.keep_firings:
                self.firings.append((firing, "task"))
            until = t + (firing.task.duration_s if self.assume_open is None else self.assume_open)
            self._open_until[slot] = max(until, self._open_until.get(slot, -math.inf))
            self._seq += 1
            heapq.heappush(self._closing, (until, self._seq, firing.rule_id))
            self._count(month, firing.priority is Priority.HIGH)

    def _count(self, month: str, high: bool) -> None:
        m = self.months.get(month)
        if m is None:
            m = self.months[month] = MonthStats(month)
        m.tasks += 1
        m.high += high
        if self.quota is None:
            m.sent += 1
            return
        if m.sent < (self.quota if high else reserve_from(self.quota, RESERVE_RATIO)):
            m.sent += 1
        else:
            m.held += 1
            m.held_normal += not high

    # ------------------------------------------------------------ the loop

    def _step(self, engine: Engine, t: float, samples: list[Sample], ticking: bool) -> None:
        closing = self._closing
        while closing and closing[0][0] <= t:
            at, _, rule_id = heapq.heappop(closing)
            engine.task_closed(rule_id, "completed", at)
        assert self.values is not None
        self.values.now = t
        fired = engine.process_batch(samples, t) if samples else []
        if ticking:
            fired += engine.tick(t)
        if fired:
            self._record(fired)

    def feed(self, engine: Engine, groups: Iterable[tuple[float, list[Sample]]]) -> None:
        """Every group (time, samples) in time order, a tick after each; with `tick`, also ticks every `tick`
        seconds between them (the grid starts at the first group)."""
        step = self._step
        ticking = engine.needs_tick
        tick = self.tick
        nxt = math.nan  # the next grid tick
        k0 = 0.0
        n = 0
        for t, samples in groups:
            if tick is not None and ticking:
                if nxt != nxt:  # the first time: the grid starts here
                    k0, n, nxt = t, 0, t
                while nxt < t:
                    step(engine, nxt, [], True)
                    n += 1
                    nxt = k0 + n * tick
                if nxt <= t:
                    n = math.floor((t - k0) / tick) + 1
                    nxt = k0 + n * tick
            step(engine, t, samples, ticking)


def run_backtest(
    ruleset: RuleSet,
    data: list[Path],
    *,
    start: float | None = None,
    end: float | None = None,
    tick: float | None = None,
    assume_open: float | None = None,
    quota: int | None = None,
    timezone: str = "UTC",
    reader: str = "auto",
    progress_out: TextIO | None = None,
    keep_firings: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Result:
    """Raises data.DataError for a bad data file."""
    started = clock()
    bt = Backtest(
        ruleset, tick=tick, assume_open=assume_open, quota=quota, timezone=timezone, keep_firings=keep_firings
    )
    streams, progress = open_streams(
        data, bt.relevant, start=start, end=end, reader=reader, progress_out=progress_out, clock=clock
    )
    values = _Values(streams)
    bt.values = values
    engine = Engine(ruleset, gateway_id="backtest", values=values)
    groups = merged(streams)
    try:
        bt.feed(engine, _LastEnd(groups, streams, end))
    finally:
        progress.close()
    seen: set[str] = set()
    for s in streams:
        seen |= s.signals
    used: dict[str, list[str]] = {}
    for rule in ruleset.rules:
        c = ruleset.compiled[rule.id]
        for signal in (*c.trigger_signals, *c.template_signals):
            used.setdefault(signal, [])
            if rule.id not in used[signal]:
                used[signal].append(rule.id)
    first = min((st.first for st in streams if st.first < math.inf), default=None)
    last = max((st.last for st in streams if st.last > -math.inf), default=None)
    return Result(
        rules=list(bt.stats.values()),
        months=[bt.months[m] for m in sorted(bt.months)],
        quota=quota,
        timezone=timezone,
        rows=sum(s.rows for s in streams),
        samples=sum(s.samples for s in streams),
        start=start if start is not None else first,
        end=end if end is not None and math.isfinite(end) else last,
        unused_signals=sorted(seen - set(used)),
        missing_signals={s: r for s, r in sorted(used.items()) if s not in seen and "*" not in s},
        seconds=clock() - started,
        firings=bt.firings,
    )


class _LastEnd:
    """The merged groups, then one last empty group at the end of the data (or `--to`): ticks run up to the
    last row of any signal, not only to the last sample of a rule's signal."""

    def __init__(self, groups: Any, streams: list[FileStream], end: float | None) -> None:
        self.groups = groups
        self.streams = streams
        self.end = end

    def __iter__(self) -> Iterator[tuple[float, list[Sample]]]:
        last = -math.inf
        for item in self.groups:
            last = item[0]
            yield item
        stop = self.end if self.end is not None and math.isfinite(self.end) else None
        if stop is None:
            stop = max((s.last for s in self.streams), default=-math.inf)
        if stop > last and math.isfinite(stop):
            yield stop, []
