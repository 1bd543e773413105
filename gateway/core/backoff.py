"""Exponential backoff with jitter: one copy for sources, the dispatcher and every reconnect loop."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter: initial, initial*2, ... capped at max_s, each delay times a random
    factor in [1 - jitter, 1]. reset() after a success."""

    def __init__(
        self,
        *,
        initial_s: float,
        max_s: float,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = max(initial_s, 0.001)
        self.max_s = max(max_s, self.initial_s)
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.initial_s * self.factor**self.attempts, self.max_s)
        if base < self.max_s:  # once capped, stop counting: factor**1025 overflows a float (a long outage)
            self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0

    def delay(self, attempt: int) -> float:
        """The jittered delay before retry number `attempt` (1-based) of a series counted elsewhere (an
        outbox row's attempts): initial for 1, doubling up to max_s. Leaves this object's own count alone."""
        exponent = max(0, attempt - 1)
        try:
            base = min(self.initial_s * self.factor**exponent, self.max_s)
        except OverflowError:  # factor**exponent beyond a float: long capped
            base = self.max_s
        return base * (1.0 - self.jitter * self._rng.random())
