"""Samples and their quality: what every source produces and the engine consumes."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

Value = float | int | bool | str | None


class Quality(enum.StrEnum):
    GOOD = "good"  # the value was read and decoded as configured
    BAD = "bad"  # the link is down, the device answered an exception, or the value did not decode


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one signal.

    signal: the full name "source.signal" as rules use it.
    ts: the source timestamp (Unix seconds, UTC); the gateway's receive time when the device gives none.
    value: None whenever quality is BAD.
    retained: a last known value re-delivered (see the field), not a fresh observation.
    """

    signal: str
    value: Value
    ts: float
    quality: Quality = Quality.GOOD
    reason: str = ""  # for BAD samples: why, in words a person can act on
    # The last known value handed over again, not a new observation (an MQTT broker's retained message on
    # subscribe): it is shown as the signal's value, but it is no evidence the device is alive, nor a change
    # happening now. The engine records it as the last value and does not feed it to triggers.
    retained: bool = False


Emit = Callable[[Sample], None]


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"  # started, no successful exchange yet
    UP = "up"  # the last exchange with the device succeeded
    DOWN = "down"  # the last exchange failed; reconnecting with backoff


@dataclass
class SourceStats:
    """Counters a source keeps for /metrics and the status page. Mutated only by the source itself."""

    reads: int = 0  # successful read operations (a poll request, a subscription notification, a message)
    errors: int = 0  # failed reads or decodes
    reconnects: int = 0  # successful re-establishments of the link after it was down
    samples: int = 0  # samples emitted
    last_sample_ts: float | None = None  # gateway time of the last GOOD sample emitted
    link: LinkState = LinkState.CONNECTING
    last_error: str = ""
    signals: dict[str, int] = field(default_factory=dict)  # unused by default; sources may count per signal
