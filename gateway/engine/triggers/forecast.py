"""Forecasts for meter rules (counter, running hours): the next threshold and when it will be reached at
the recent rate. Pure: checkpoints of the meter kept by the rule's runtime, and `now`.

    {"next": 50000, "unit": "strokes", "remaining": 12788, "rate_per_h": 3836.4, "basis_s": 3600,
     "eta_s": 12000.0, "text": "50,000 strokes, in about 3 h 20 min at the last hour's rate"}
    {"next": 50000, ..., "eta_s": None, "text": "50,000 strokes: no estimate (stopped)"}
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

WINDOW_S = 3600.0  # the rate is the last hour's
CHECKPOINT_S = 60.0  # at most one checkpoint a minute: 61 of them cover the hour
MIN_BASIS_S = 300.0  # less history than this: no estimate yet
STOPPED_AFTER_S = 600.0  # a meter that has not moved for this long belongs to a stopped machine


class RateWindow:
    """(time, meter) checkpoints over the last hour."""

    __slots__ = ("due", "moved_at", "points")

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque(maxlen=int(WINDOW_S / CHECKPOINT_S) + 2)
        self.due = -math.inf
        self.moved_at: float | None = None  # the last time the meter grew

    def add(self, now: float, meter: float) -> None:
        """Called by the runtime when `now >= due` (one comparison on the hot path)."""
        points = self.points
        if points and meter > points[-1][1]:
            self.moved_at = now
        points.append((now, meter))
        self.due = now + CHECKPOINT_S

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` (engine/clockwatch.py): the checkpoints move with it."""
        self.points = deque(((t + delta, m) for t, m in self.points), maxlen=self.points.maxlen)
        self.due += delta
        if self.moved_at is not None:
            self.moved_at += delta

    def forecast(
        self, now: float, meter: float | None, target: float | None, *, unit: str, running: bool | None = None
    ) -> dict[str, Any] | None:
        """None without a target; `eta_s` None (with the reason in `text`) when there is no estimate."""
        if target is None or meter is None:
            return None
        out: dict[str, Any] = {"next": target, "unit": unit, "remaining": max(0.0, target - meter)}
        base = next(((t, m) for t, m in self.points if t >= now - WINDOW_S - 1e-9), None)
        stopped = running is False or (
            running is None and (self.moved_at is None or now - self.moved_at >= STOPPED_AFTER_S)
        )
        if base is None or now - base[0] < MIN_BASIS_S:
            reason = "stopped" if running is False else "not enough history yet"
            return {
                **out,
                "eta_s": None,
                "rate_per_h": None,
                "text": f"{_thr(target, unit)}: no estimate ({reason})",
            }
        rate = (meter - base[1]) / (now - base[0])
        if stopped or rate <= 0:
            return {
                **out,
                "eta_s": None,
                "rate_per_h": 0.0,
                "text": f"{_thr(target, unit)}: no estimate (stopped)",
            }
        basis = now - base[0]
        eta = out["remaining"] / rate
        return {
            **out,
            "eta_s": eta,
            "rate_per_h": rate * 3600.0,
            "basis_s": basis,
            "text": f"{_thr(target, unit)}, in about {human(eta)} at {_basis(basis)} rate",
        }


def _thr(target: float, unit: str) -> str:
    text = f"{target:,.0f}" if float(target).is_integer() else f"{target:,.1f}"
    return f"{text} {unit}".rstrip()


def _basis(seconds: float) -> str:
    return (
        "the last hour's" if seconds >= WINDOW_S - CHECKPOINT_S else f"the last {round(seconds / 60)} min's"
    )


def human(seconds: float) -> str:
    """3 h 20 min, 2 d 4 h, 45 min, under a minute."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"
