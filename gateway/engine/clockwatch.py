"""Steps of the wall clock, told from real time, so that no duration measured by a rule gains or loses them.

The engine measures durations (running hours, `for`, `stale`, cooldowns) as differences of the `now` it is
given, a wall-clock time: that is what firings are stamped with. A Pi without a real-time clock boots with
an old time and NTP then steps it forward, by hours or days; an operator may set it back. Such a step is not
time the machine ran, nor silence of a signal.

The caller may pass `mono`, a monotonic reading taken with `now` (the runtime passes its clock's
`monotonic()`). Between two calls, wall and monotonic time advance alike; when they disagree by more than
TOLERANCE_S, the wall clock stepped by the difference, and every rule shifts its stored instants by it (its
timers carry on as if the step had not happened; stamps stay on the wall clock). Without `mono`, only
backward steps (more than TOLERANCE_S) are detected: a forward step cannot be told from a real gap then.
"""

from __future__ import annotations

import logging

log = logging.getLogger("gateway.engine")

TOLERANCE_S = 2.0  # disagreement between wall and monotonic time taken as a step (NTP slews far less)


class ClockWatch:
    __slots__ = ("last_mono", "last_now", "last_shift", "steps")

    def __init__(self) -> None:
        self.last_now: float | None = None
        self.last_mono: float | None = None
        self.last_shift = 0.0  # the step found by the last call of step() that returned True
        self.steps = 0  # steps found since start

    def step(self, now: float, mono: float | None) -> bool:
        """Record a call at (now, mono); True when the wall clock stepped since the previous call (by
        `last_shift` seconds, negative for a step back)."""
        last_now, last_mono = self.last_now, self.last_mono
        self.last_now = now
        if mono is not None:
            self.last_mono = mono
        if last_now is None:
            return False
        wall = now - last_now
        if mono is not None and last_mono is not None:
            jump = wall - (mono - last_mono)
            if -TOLERANCE_S <= jump <= TOLERANCE_S:
                return False
        elif wall >= -TOLERANCE_S:
            return False
        else:
            jump = wall
        self.last_shift = jump
        self.steps += 1
        log.warning(
            "the wall clock stepped %s by %.1f s (NTP or a manual change): rule timers (hours, for, stale, "
            "cooldown) carry on without counting the step",
            "forward" if jump > 0 else "back",
            abs(jump),
        )
        return True
