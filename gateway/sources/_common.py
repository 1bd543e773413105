"""What every source shares: backoff with jitter, the link state machine that logs on change, and the sink
that turns values into Samples and keeps the counters."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from gateway.core.clock import Clock
from gateway.core.samples import Emit, LinkState, Quality, Sample, SourceStats, Value


class Link:
    """The up/down state of one link (a connection, or one Modbus unit behind it).

    Logs exactly one ERROR when it goes down and one INFO when it comes back; what happens in between goes
    to DEBUG.
    When `stats` is given, `stats.link`, `stats.reconnects` and `stats.last_error` follow it.
    """

    def __init__(self, what: str, log: logging.Logger, stats: SourceStats | None = None) -> None:
        self.what = what
        self.state = LinkState.CONNECTING
        self.reason = ""
        self._log = log
        self._stats = stats
        self._was_up = False

    @property
    def is_up(self) -> bool:
        return self.state is LinkState.UP

    def up(self) -> bool:
        """Mark the link up; True when this is a change worth acting on (first connect or recovery)."""
        if self.state is LinkState.UP:
            return False
        previous = self.state
        self.state = LinkState.UP
        if self._stats is not None:
            self._stats.link = LinkState.UP
            if self._was_up:
                self._stats.reconnects += 1
        if previous is LinkState.DOWN:
            self._log.info("%s: link recovered", self.what)
        else:
            self._log.debug("%s: connected", self.what)
        self._was_up = True
        return True

    def down(self, reason: str) -> bool:
        """Mark the link down; True when it just went down (the caller then marks its signals bad)."""
        if self._stats is not None:
            self._stats.last_error = reason
        if self.state is LinkState.DOWN:
            self._log.debug("%s: still down: %s", self.what, reason)
            self.reason = reason
            return False
        self.state = LinkState.DOWN
        self.reason = reason
        if self._stats is not None:
            self._stats.link = LinkState.DOWN
        self._log.error("%s: link down: %s; signals marked bad, retrying with backoff", self.what, reason)
        return True


def invalid_number(value: float) -> str:
    """'' when value is a usable number, else why not."""
    if math.isnan(value):
        return "value is NaN"
    if math.isinf(value):
        return "value is infinite"
    return ""


class Sink:
    """Wraps the engine's emit(): builds Samples, counts them, and logs a signal turning bad once."""

    def __init__(
        self, emit: Emit, stats: SourceStats, clock: Clock, log: logging.Logger, source: str
    ) -> None:
        self._emit = emit
        self._stats = stats
        self._clock = clock
        self._log = log
        self._source = source
        self._bad: dict[str, str] = {}  # signal -> reason of its last BAD sample

    def is_bad(self, signal: str) -> bool:
        """Whether the last sample of `signal` was BAD (a NaN handed to good() included)."""
        return signal in self._bad

    def good(self, signal: str, value: Value, ts: float | None = None, *, retained: bool = False) -> None:
        """A GOOD sample; `retained`: the last known value handed over again, not a new observation (it does
        not count as the source's last sample either)."""
        if isinstance(value, float) and not isinstance(value, bool) and (why := invalid_number(value)):
            self.garbage(signal, why)
            return
        now = self._clock.now()
        if self._bad.pop(signal, None) is not None:
            self._log.debug("%s: good again", signal)
        self._stats.samples += 1
        if not retained:
            self._stats.last_sample_ts = now
        self._emit(Sample(signal, value, ts if ts is not None else now, Quality.GOOD, retained=retained))

    def garbage(self, signal: str, reason: str, ts: float | None = None) -> None:
        """The device answered but the value is unusable: a BAD sample and one WARNING per new reason."""
        self._stats.errors += 1
        if self._bad.get(signal) != reason:
            self._log.warning("%s: bad value: %s", signal, reason)
        self.bad(signal, reason, ts)

    def bad(self, signal: str, reason: str, ts: float | None = None) -> None:
        self._bad[signal] = reason
        self._stats.samples += 1
        self._emit(Sample(signal, None, ts if ts is not None else self._clock.now(), Quality.BAD, reason))

    def all_bad(self, signals: Iterable[str], reason: str) -> None:
        ts = self._clock.now()
        for signal in signals:
            self.bad(signal, reason, ts)


def quiet_library_logger(name: str) -> None:
    """A protocol library logs every retry: keep its logger for debugging, unless the user configured it."""
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL + 1)  # asyncua logs protocol errors at CRITICAL: those too
