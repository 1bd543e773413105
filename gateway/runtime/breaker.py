"""The link breaker: after LINK_DOWN_AFTER transient failures in a row, one probe at a time.

States (transitions in this module only, `failed`, `answered`):
    link up     requests leave as the slots allow
    link down   after LINK_DOWN_AFTER transient failures in a row (network error, timeout, 5xx) with no answer
                from the CMMS in between: one request at a time, spaced by the capped backoff

The probe schedule (`next_probe_at`) is finite at all times: it is set when a probe starts (the next probe
comes at the latest one backoff later, whatever happens to this one), moved by the probe's result, and reset
to "now" by `probe_unsent()` when a probe ended without sending anything (its claim failed, its row was gone):
no exit path of a probe can leave delivery stopped.
"""

from __future__ import annotations

import random

from gateway.core.backoff import Backoff

LINK_DOWN_AFTER = 10  # transient failures in a row (no answer from the CMMS in between) = the link is down


class LinkBreaker:
    def __init__(self, *, initial_s: float, max_s: float, rng: random.Random) -> None:
        self.link_up = True
        self.error = ""
        self.failures = 0  # transient failures in a row with no answer from the CMMS in between
        self.next_probe_at = 0.0  # single mode (link down, or paused): the next probe not before this
        self._backoff = Backoff(initial_s=initial_s, max_s=max_s, jitter=0.5, rng=rng)

    def configure(self, *, initial_s: float, max_s: float) -> None:
        self._backoff.initial_s = max(initial_s, 0.001)
        self._backoff.max_s = max(max_s, self._backoff.initial_s)

    def failed(self, now: float, error: str) -> bool:
        """A transient failure. Returns True when this one took the link down."""
        self.failures += 1
        if self.failures < LINK_DOWN_AFTER:
            return False
        self.next_probe_at = now + self._backoff.next()
        self.error = error
        went_down = self.link_up
        self.link_up = False
        return went_down

    def answered(self) -> bool:
        """The CMMS answered (any answer). Returns True when this brought the link back."""
        self.failures = 0
        self._backoff.reset()
        came_back = not self.link_up
        self.link_up, self.error = True, ""
        return came_back

    def probe_started(self, now: float, *, interval_s: float) -> None:
        """A single probe leaves: until its result says otherwise, the next one is `interval_s` away."""
        self.next_probe_at = now + interval_s

    def probe_unsent(self, now: float) -> None:
        """The probe ended without sending anything: the next pass may probe again."""
        self.next_probe_at = min(self.next_probe_at, now)

    def probe_due(self, now: float) -> bool:
        return now >= self.next_probe_at

    def peek_delay(self) -> float:
        """The current probe spacing, without jitter (the safety net while a probe is in flight)."""
        return min(self._backoff.initial_s * 2.0 ** min(self._backoff.attempts, 60), self._backoff.max_s)
