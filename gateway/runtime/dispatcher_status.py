"""The dispatcher's state and the status it shows (/api/status, /metrics, the status page).

The states and their transitions are described in gateway/runtime/dispatcher.py, where they happen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class DispatcherState(enum.StrEnum):
    RUNNING = "running"  # delivering
    PAUSED = "paused"  # credentials or plan refused (401/403): everything kept queued, probing slowly
    QUOTA_HELD = "quota_held"  # monthly quota reached: tasks held until the month turns


@dataclass
class DispatcherStatus:
    state: DispatcherState = DispatcherState.RUNNING
    reason: str = ""
    quota_month: str = ""
    quota_used: int = 0  # delivered + uncertain this month
    quota_limit: int | None = None
    high_only: bool = False  # inside the reserve: only priority high leaves
    fleet_held: bool = False  # the fleet's shared quota refused the last reservation (gateway/fleet/quota.py)
    link_up: bool = True  # False after LINK_DOWN_AFTER transient failures in a row
    link_error: str = ""
    hold_until: float | None = None  # a Retry-After holds every request until then
    in_flight: int = 0
    maybe_committed: int = 0  # attempts since start whose request may have created a task unseen
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    attempts: dict[str, int] = field(default_factory=dict)  # by outcome, since start

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "quota_month": self.quota_month,
            "quota_used": self.quota_used,
            "quota_limit": self.quota_limit,
            "high_only": self.high_only,
            "fleet_held": self.fleet_held,
            "link_up": self.link_up,
            "link_error": self.link_error,
            "hold_until": self.hold_until,
            "in_flight": self.in_flight,
            "maybe_committed": self.maybe_committed,
            "last_success_at": self.last_success_at,
            "last_attempt_at": self.last_attempt_at,
            "attempts": dict(self.attempts),
        }
