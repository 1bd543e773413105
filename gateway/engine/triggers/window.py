"""The sliding time windows behind the windowed kinds (avg / min / max, change, count): what one signal did
over the last `W`, kept in bounded memory and updated in constant (amortized) time per sample.

`Segments` is the time-weighted history of one signal's good values. Each good value holds from the time it
was seen until the next sample of the signal (a bad sample, or the gateway's own downtime, holds nothing: a
hole). Closed stretches of history are *cells* in a deque, oldest first: `[start, end, integral, covered, lo,
hi, last, merged]`. A cell is normally one value that held over `[start, end)` (exact). Once the deque holds
`DENSE_CELLS` cells, a new stretch that starts in the same time slot (`W / DENSE_CELLS` wide, counted from the
epoch) as the last cell is merged into that cell, up to the slot's end: the deque then never holds more than
`2 * DENSE_CELLS + 2` cells, whatever the sample rate (memory per windowed rule bounded by the window's
resolution, not by its sample count). A merged cell keeps its integral, good time, min, max and last value,
not where inside the slot each value held: only a merged cell cut by the window's old edge is approximate (the
avg prorates it by time; min / max count it whole; change reads its last value). The error is thus confined to
one slot at the old edge: at most `W / DENSE_CELLS` of history (14 s for a 1 h window, 5.6 min for a 24 h
window) is counted or missed there. With fewer than `DENSE_CELLS` value changes in the window (every rule test
of a sane size, a value sampled once a minute over hours) every answer is exact.

Running sums (integral, good time) over the deque give the average without rescanning the window; monotonic
deques (ascending minima / descending maxima, cells ending in order) give min and max in O(1) amortized. Every
`DENSE_CELLS` expiries the sums are recomputed from the cells (math.fsum), so floating-point drift of the
running sums stays bounded.

`Edges` is the same for the rising edges of a count: the times of the edges in the window, one entry per edge,
merged per slot once the deque is `DENSE_CELLS` long (a merged entry counts its edges and keeps the time of
its last one: it leaves the window at most one slot late, so a count is never lower than the exact one).

Time is the engine's `now` (in a rule test or a backtest: the sample's time). A `now` earlier than the last
one seen is taken as the last one seen (a clock stepping back does not rewrite history).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

DENSE_CELLS = 256  # cells before merging per slot; the window's resolution is W / DENSE_CELLS
_EPS = 1e-9

# The fields of a cell (a list, mutated in place when merged).
START, END, INTEGRAL, COVERED, LO, HI, LAST, MERGED = range(8)


class Segments:
    """The good-value history of one signal over a window of `window` seconds (see the module docstring).

    `good(now, v)` / `bad(now)` record a sample; `aggregate(now)`, `minimum(now)`, `maximum(now)`,
    `value_at_edge(now)` read the window `[now - window, now]`; `current()` is the value holding now.
    """

    __slots__ = (
        "cells",
        "covered",
        "expired",
        "hi",
        "integral",
        "lo",
        "open_start",
        "open_ts",
        "open_value",
        "seen",
        "slot",
        "tiny",
        "track_hi",
        "track_lo",
        "window",
    )

    def __init__(self, window: float, *, track_lo: bool = False, track_hi: bool = False) -> None:
        self.window = window
        self.slot = window / DENSE_CELLS
        self.tiny = _EPS * max(1.0, window)  # good time under this is none (float noise)
        self.cells: deque[list[float]] = deque()
        self.integral = 0.0  # over the whole cells in the deque
        self.covered = 0.0
        self.expired = 0
        self.track_lo = track_lo
        self.track_hi = track_hi
        self.lo: deque[list[float]] = deque()  # the cells, ascending `lo` (min); the same list objects
        self.hi: deque[list[float]] = deque()  # descending `hi` (max)
        self.open_start: float | None = None  # the good value holding now: since when, what, its sample time
        self.open_value: float = 0.0
        self.open_ts: float = 0.0
        self.seen = -math.inf  # the last `now` seen

    # ------------------------------------------------------------ recording

    def clamp(self, now: float) -> float:
        if now < self.seen:
            return self.seen
        self.seen = now
        return now

    def good(self, now: float, value: float, ts: float) -> None:
        if now < self.seen:
            now = self.seen
        else:
            self.seen = now
        start = self.open_start
        if start is not None:
            if value == self.open_value:
                self.open_ts = ts
                return  # the same value goes on holding
            if now > start:
                self._add(start, now, self.open_value)
        self.open_start = now
        self.open_value = value
        self.open_ts = ts

    def bad(self, now: float) -> None:
        now = self.clamp(now)
        self.close(now)

    def close(self, at: float) -> None:
        """End the holding value at `at` (a bad sample; the gateway's downtime after a restart)."""
        start = self.open_start
        if start is not None:
            if at > start:
                self._add(start, at, self.open_value)
            self.open_start = None

    def _add(self, start: float, end: float, value: float) -> None:
        cells = self.cells
        if len(cells) >= DENSE_CELLS:
            last = cells[-1]
            slot = self.slot
            n = last[START] // slot
            if start // slot == n:  # merge into the last cell, up to its slot's end
                slot_end = (n + 1) * slot
                cut = end if end < slot_end else slot_end
                dt = cut - start
                if cut > last[END]:
                    last[END] = cut
                last[INTEGRAL] += value * dt
                last[COVERED] += dt
                self.integral += value * dt
                self.covered += dt
                last[LAST] = value
                last[MERGED] = 1.0
                if value < last[LO]:
                    last[LO] = value
                if value > last[HI]:
                    last[HI] = value
                if self.track_lo or self.track_hi:
                    self._push_extremes(last, replace=True)
                if end <= slot_end:
                    return
                start = slot_end
        dt = end - start
        cell = [start, end, value * dt, dt, value, value, value, 0.0]
        cells.append(cell)
        self.integral += value * dt
        self.covered += dt
        if self.track_lo or self.track_hi:
            self._push_extremes(cell, replace=False)

    def _push_extremes(self, cell: list[float], *, replace: bool) -> None:
        if self.track_lo:
            lo = self.lo
            if replace and lo and lo[-1] is cell:
                lo.pop()
            v = cell[LO]
            while lo and lo[-1][LO] >= v:
                lo.pop()
            lo.append(cell)
        if self.track_hi:
            hi = self.hi
            if replace and hi and hi[-1] is cell:
                hi.pop()
            v = cell[HI]
            while hi and hi[-1][HI] <= v:
                hi.pop()
            hi.append(cell)

    # ------------------------------------------------------------ reading

    def expire(self, now: float) -> float:
        """Drop the cells wholly before the window; returns the window's start."""
        edge = now - self.window
        cells = self.cells
        if not cells or cells[0][END] > edge:
            return edge  # nothing to expire (the min / max deques hold cells of the deque: nothing there)
        while cells and cells[0][END] <= edge:
            cell = cells.popleft()
            self.integral -= cell[INTEGRAL]
            self.covered -= cell[COVERED]
            self.expired += 1
        if self.expired >= DENSE_CELLS:
            self.expired = 0
            self.integral = math.fsum(c[INTEGRAL] for c in cells)
            self.covered = math.fsum(c[COVERED] for c in cells)
        if self.track_lo:
            lo = self.lo
            while lo and lo[0][END] <= edge:
                lo.popleft()
        if self.track_hi:
            hi = self.hi
            while hi and hi[0][END] <= edge:
                hi.popleft()
        return edge

    def aggregate(self, now: float, function: str = "avg") -> tuple[float | None, float]:
        """(the time-weighted mean, or with `function` "min" / "max" the extreme; None when there is no good
        time in the window, good time in the window) at `now`."""
        if now < self.seen:
            now = self.seen
        else:
            self.seen = now
        edge = now - self.window
        cells = self.cells
        if cells and cells[0][END] <= edge:
            self.expire(now)
        integral = self.integral
        covered = self.covered
        if cells:
            first = cells[0]
            if first[START] < edge:
                if first[MERGED]:
                    f = (edge - first[START]) / (first[END] - first[START])
                    integral -= first[INTEGRAL] * f
                    covered -= first[COVERED] * f
                else:
                    dt = edge - first[START]
                    integral -= first[LO] * dt
                    covered -= dt
        start = self.open_start
        if start is not None:
            dt = now - (start if start > edge else edge)
            if dt > 0:
                integral += self.open_value * dt
                covered += dt
        if covered <= self.tiny:
            return None, max(covered, 0.0)
        if function == "avg":
            return integral / covered, covered
        return self._extreme(function == "min"), covered

    def coverage(self, now: float) -> float:
        return self.aggregate(now)[1] / self.window

    def minimum(self, now: float) -> float | None:
        """The lowest good value that held at some time in `[now - W, now]` (the value holding now counts)."""
        self.expire(self.clamp(now))
        return self._extreme(True)

    def maximum(self, now: float) -> float | None:
        self.expire(self.clamp(now))
        return self._extreme(False)

    def _extreme(self, low: bool) -> float | None:
        """min (low) or max over the window, once expired."""
        if low:
            best = self.lo[0][LO] if self.lo else None
            if self.open_start is not None and (best is None or self.open_value < best):
                best = self.open_value
        else:
            best = self.hi[0][HI] if self.hi else None
            if self.open_start is not None and (best is None or self.open_value > best):
                best = self.open_value
        return best

    def current(self) -> float | None:
        return self.open_value if self.open_start is not None else None

    def value_at_edge(self, now: float) -> float | None:
        """The good value that held at `now - W`, or None (a hole, or before the first sample)."""
        now = self.clamp(now)
        edge = self.expire(now)
        cells = self.cells
        if cells and cells[0][START] <= edge:
            first = cells[0]
            return first[LAST] if first[MERGED] else first[LO]
        if cells:
            return None
        start = self.open_start
        if start is not None and start <= edge:
            return self.open_value
        return None

    def __len__(self) -> int:
        return len(self.cells)

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` (engine/clockwatch.py): the history moves with it, so the window
        keeps covering the last W of real time (sample times, evidence only, stay as they are)."""
        for cell in self.cells:  # the min / max deques hold the same cells
            cell[START] += delta
            cell[END] += delta
        if self.open_start is not None:
            self.open_start += delta
        self.seen += delta  # -inf stays -inf

    # ------------------------------------------------------------ persistence

    def export(self) -> dict[str, Any]:
        return {
            "cells": [list(c) for c in self.cells],
            "open": None if self.open_start is None else [self.open_start, self.open_value, self.open_ts],
            "seen": None if self.seen == -math.inf else self.seen,
        }

    def restore(self, state: dict[str, Any], current: tuple[float, float] | None) -> None:
        """Rebuild from `export()`. The value that was holding is cut at the last time seen (the gateway's
        downtime is a hole) unless `current` (sample time, value of the signal's last good sample, known
        in a reload) shows that same sample still holds."""
        cells = _cells(state.get("cells") or [])
        seen = state.get("seen")
        self.seen = -math.inf if seen is None else float(seen)
        self.cells = deque(cells)
        self.integral = math.fsum(c[INTEGRAL] for c in cells)
        self.covered = math.fsum(c[COVERED] for c in cells)
        self.lo.clear()
        self.hi.clear()
        for cell in cells:
            self._push_extremes(cell, replace=False)
        self.open_start = None
        opened = state.get("open")
        if opened is not None:
            start, value, ts = float(opened[0]), _number(opened[1]), float(opened[2])
            self.open_start, self.open_value, self.open_ts = start, value, ts
            if current is None or current != (ts, value):
                if self.seen == -math.inf:
                    raise ValueError("an open value without a time seen")
                self.close(self.seen)


def _cells(raw: Sequence[Any]) -> list[list[float]]:
    out: list[list[float]] = []
    end = -math.inf
    for item in raw:
        cell = [_number(x) if i in (LO, HI, LAST) else float(x) for i, x in enumerate(item)]
        if len(cell) != 8 or cell[START] < end or cell[END] < cell[START]:
            raise ValueError("malformed window cells")
        end = cell[END]
        out.append(cell)
    return out


def _number(x: Any) -> float:
    """A value as saved: an int stays an int (a min of ints shows as 15, not 15.0)."""
    if type(x) is int:
        return x
    return float(x)


class Edges:
    """The times of the rising edges in the window `(now - W, now]` (see the module docstring)."""

    __slots__ = ("count", "entries", "seen", "slot", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.slot = window / DENSE_CELLS
        self.entries: deque[list[float]] = deque()  # [time of the (last) edge, edges]
        self.count = 0
        self.seen: float | None = None

    def clamp(self, now: float) -> float:
        seen = self.seen
        if seen is not None and now < seen:
            return seen
        self.seen = now
        return now

    def add(self, now: float) -> None:
        now = self.clamp(now)
        entries = self.entries
        self.count += 1
        if len(entries) >= DENSE_CELLS:
            last = entries[-1]
            if math.floor(last[0] / self.slot) == math.floor(now / self.slot):
                last[0] = now
                last[1] += 1
                return
        entries.append([now, 1.0])

    def in_window(self, now: float) -> int:
        now = self.clamp(now)
        edge = now - self.window
        entries = self.entries
        while entries and entries[0][0] <= edge:
            self.count -= int(entries.popleft()[1])
        return self.count

    def oldest(self) -> float | None:
        return self.entries[0][0] if self.entries else None

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta`: the edges move with it (see Segments.shift)."""
        for entry in self.entries:
            entry[0] += delta
        if self.seen is not None:
            self.seen += delta

    def __len__(self) -> int:
        return len(self.entries)

    def export(self) -> dict[str, Any]:
        return {"edges": [list(e) for e in self.entries], "seen": self.seen}

    def restore(self, state: dict[str, Any]) -> None:
        entries: list[list[float]] = []
        last = -math.inf
        for item in state.get("edges") or []:
            t, n = (float(x) for x in item)
            if t < last or n < 1 or not n.is_integer():
                raise ValueError("malformed edge times")
            last = t
            entries.append([t, n])
        self.entries = deque(entries)
        self.count = sum(int(e[1]) for e in entries)
        seen = state.get("seen")
        self.seen = None if seen is None else float(seen)
