"""The engine's door: the values it refuses, whatever the source.

A GOOD sample of a signal some rule uses (a trigger or expression signal), whose value the engine cannot
work with safely, becomes a BAD sample at the door (before it is stored as the signal's last value or reaches
any rule), with at most one WARNING per signal and hour. Samples of signals
no rule uses are kept as received (only templates and the status page read them): checking them too would
cost the hot path about a third of its speed for values no rule computes with. Refused (docs/rules.md,
"Values the engine refuses"):

- numbers that are not finite: NaN, +inf, -inf;
- numbers beyond the 64-bit range: an int outside [-2**63, 2**64 - 1], a float whose magnitude exceeds 2**64
  (a float32 garbage value near 3e38, 1e308);
- text longer than MAX_TEXT characters;
- any other type (bytes, lists, dicts, objects). Subclasses of int and float (numpy scalars, IntEnum) are
  turned into the plain int / float they stand for; a bool stays a bool.

Accepted: None, bool, the numbers above, text up to MAX_TEXT characters.
"""

from __future__ import annotations

import logging

from gateway.core.samples import Quality, Sample

log = logging.getLogger("gateway.engine")

INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1
FLOAT_MAX = float(1 << 64)
MAX_TEXT = 4096
WARN_EVERY_S = 3600.0  # at most one WARNING per signal in this period

BAD = Quality.BAD


def refusal(value: object) -> str | None:
    """Why the engine refuses `value`, or None when it accepts it as is."""
    t = type(value)
    if t is float:
        if -FLOAT_MAX <= value <= FLOAT_MAX:  # type: ignore[operator]  # NaN fails both comparisons
            return None
        return f"non-finite or out-of-range number {value!r}" if value == value else "NaN"
    if t is int:
        if INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            return None
        return f"integer beyond 64 bits ({_digits(value)} digits)"  # type: ignore[arg-type]
    if t is bool or value is None:
        return None
    if t is str:
        n = len(value)  # type: ignore[arg-type]
        return None if n <= MAX_TEXT else f"text of {n} characters (at most {MAX_TEXT})"
    return f"unsupported value type {t.__name__}"


def _digits(value: int) -> str:
    try:
        return str(len(str(abs(value))))
    except ValueError:  # more digits than Python converts to text
        return "over 4300"


class Door:
    """Checks sample values; counts what it refuses and logs it: one WARNING per signal per WARN_EVERY_S."""

    __slots__ = ("now", "refused", "warned")

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}  # per signal: samples refused since start (status page, /metrics)
        self.warned: dict[str, float] = {}  # per signal: when its last refusal was logged
        self.now = 0.0  # the engine's time, set before each batch

    def check(self, sample: Sample) -> Sample:
        """The sample as the engine takes it: itself, a plain-number copy, or a BAD sample saying why."""
        value = sample.value
        why = refusal(value)
        if why is None:
            return sample
        if isinstance(value, int | float) and not isinstance(value, bool) and type(value) not in (int, float):
            plain = int(value) if isinstance(value, int) else float(value)
            why = refusal(plain)
            if why is None:
                return Sample(sample.signal, plain, sample.ts, sample.quality, sample.reason, sample.retained)
        signal = sample.signal
        self.refused[signal] = self.refused.get(signal, 0) + 1
        last = self.warned.get(signal)
        if last is None or not 0 <= self.now - last < WARN_EVERY_S:
            self.warned[signal] = self.now
            log.warning(
                "signal %s: value refused by the engine (%s): taken as a bad sample (further refusals of "
                "this signal within the hour are counted, not logged; %d so far)",
                signal,
                why,
                self.refused[signal],
            )
        return Sample(signal, None, sample.ts, BAD, f"value refused: {why}", sample.retained)
