"""What the engine produces when a rule fires: the contract between the engine, the store and the backends."""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Firing uuids are derived from (installation id, gateway id, firing key): the same firing always gets the
# same uuid, even when recomputed after a crash, and a new state database (a new installation id, random,
# made with the database) never reuses an old firing's uuid when its counters start again from zero.
FIRING_NAMESPACE = uuid.UUID("6f1c2d3e-9a51-4c6b-8e0f-1d2c3b4a5968")


def firing_uuid(installation_id: str, gateway_id: str, key: str) -> str:
    return str(uuid.uuid5(FIRING_NAMESPACE, f"{installation_id}\x00{gateway_id}\x00{key}"))


class Priority(enum.StrEnum):
    NORMAL = "normal"
    HIGH = "high"  # leaves the outbox first after an outage; may use the last 10% of the monthly quota


@dataclass(frozen=True, slots=True)
class Evidence:
    """One value that made a rule fire."""

    signal: str
    value: Any
    ts: float
    quality: str


@dataclass(frozen=True, slots=True)
class SparePart:
    article: str
    quantity: float


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The rendered task, CMMS-neutral. Backends turn it into their own request at delivery time.

    equipment: str = external reference (item code), int = native id.
    assignees: str = e-mail, int = native user id.
    extra: backend-specific fields from the rule's task (e.g. thing_id for Servitly), passed through as is.
    """

    equipment: str | int | None
    description: str
    assignees: tuple[str | int, ...] = ()
    tags: tuple[str | int, ...] = ()
    duration_s: float = 3600.0
    spare_parts: tuple[SparePart, ...] = ()
    checklist: str | None = None
    all_day: bool = False
    send_email_to_assignees: bool = False
    inherit_equipment_tags: bool = False
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule fired. `key` is deterministic (rule id + occurrence) and unique in the store."""

    key: str
    rule_id: str
    fired_at: float
    task: TaskSpec
    priority: Priority = Priority.NORMAL
    evidence: tuple[Evidence, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)  # the rule's own metadata, rendered
    while_open: str = "suppress"  # "suppress" (default) or "create"
    trigger: str = ""  # "counter", "hours", "signal", "expr", "stale": for the status page and reports
    mode: str = "live"  # "live", "shadow" (rendered, never sent) or "approve" (waits for a person)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Firing:
        task = dict(data["task"])
        task["assignees"] = tuple(task.get("assignees", ()))
        task["tags"] = tuple(task.get("tags", ()))
        task["spare_parts"] = tuple(SparePart(**p) for p in task.get("spare_parts", ()))
        return Firing(
            key=data["key"],
            rule_id=data["rule_id"],
            fired_at=data["fired_at"],
            task=TaskSpec(**task),
            priority=Priority(data.get("priority", "normal")),
            evidence=tuple(Evidence(**e) for e in data.get("evidence", ())),
            metadata=dict(data.get("metadata", {})),
            while_open=data.get("while_open", "suppress"),
            trigger=data.get("trigger", ""),
            mode=data.get("mode", "live"),
        )
