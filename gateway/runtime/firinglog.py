"""The latest firings and, per rule, what became of its last one: the status page's "latest firings" and the
"suppressed by" note of a rule. Owned by the runtime, fed by FiringRecorded events, kept in memory."""

from __future__ import annotations

from collections import deque

from gateway.core.events import EventBus, FiringRecorded
from gateway.core.views import FiringEntry

RECENT_FIRINGS = 20


class FiringLog:
    def __init__(self, size: int = RECENT_FIRINGS) -> None:
        self.recent: deque[FiringEntry] = deque(maxlen=size)
        self.by_rule: dict[str, FiringEntry] = {}

    def attach(self, events: EventBus) -> FiringLog:
        events.subscribe(FiringRecorded, self.on_firing)
        return self

    def on_firing(self, event: FiringRecorded) -> None:
        firing, result = event.firing, event.result
        entry = FiringEntry(
            rule=firing.rule_id,
            key=firing.key,
            firing=result.uuid,
            fired_at=firing.fired_at,
            status=str(result.status),
            suppressed_by=result.suppressed_by,
            description=firing.task.description,
        )
        self.recent.appendleft(entry)
        self.by_rule[firing.rule_id] = entry
