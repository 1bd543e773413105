"""`cooldown:` of a rule, shared by every trigger kind: after a firing, further occurrences within the period
are swallowed (and counted for the status page) instead of making tasks."""

from __future__ import annotations


class Cooldown:
    """A gate with a deadline. `until` is persisted (as `cooldown_until`); `swallowed` is not."""

    __slots__ = ("period", "swallowed", "until")

    def __init__(self, period: float) -> None:
        self.period = period  # seconds; 0 means no cooldown
        self.until = 0.0  # occurrences before this instant are swallowed
        self.swallowed = 0  # occurrences swallowed since start

    def admit(self, now: float) -> bool:
        """Whether an occurrence at `now` may fire; if it may, the next period starts now."""
        if now < self.until:
            self.swallowed += 1
            return False
        if self.period > 0:
            self.until = now + self.period
        return True

    def active(self, now: float) -> bool:
        return now < self.until
