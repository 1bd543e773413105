"""Time as an argument: every component that needs "now" takes a Clock.

Timestamps are float Unix seconds (UTC) throughout the gateway; durations are float seconds.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current wall-clock time as Unix seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (the engine tells wall-clock steps from real time with it)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; ships with the package for tests and simulations."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        self._now += seconds
        self._mono += seconds
        return self._now

    def set(self, ts: float) -> None:
        """Step the wall clock (as NTP or an operator does): monotonic time does not move."""
        self._now = float(ts)
