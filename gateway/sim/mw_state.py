"""What the Mobility Work simulator knows: the network, its equipment, users, tasks and the calls it received.

Tests read it directly (`sim.state.tasks`, `sim.state.requests`); the control API changes it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.sim.harness import FaultPlan, RecordedRequest
from gateway.sim.mw_webhooks import SimEquipment, SimSparePart, SimTask, SimUser
from gateway.web.signature import DEFAULT_TEMPLATE

DEFAULT_API_KEY = "sim-913a8f7cef6ff084f1635511b9c7d07c3bab2816"
DEFAULT_NETWORK_ID = "4d4b9269-db6b-4b8f-8577-d01ef451d291"
PLANS = ("starter", "premium", "ultimate")


@dataclass
class BulkRequest:
    path: str
    items: list[Any]
    at: float


def _default_equipment() -> list[SimEquipment]:
    return [
        SimEquipment(
            id=7111,
            uuid="ff77ef5b-19d4-4c50-96da-6a16f9c43644",
            item_code="EQ-0001",
            name="Machine Tool #1",
            cost_center="Outpost",
        )
    ]


def _default_users() -> list[SimUser]:
    return [
        SimUser(
            id=3,
            uuid="ee84d563-da9c-47ee-a79f-7147814509e0",
            email="john.doe@example.com",
            first_name="John",
            last_name="Doe",
        )
    ]


@dataclass
class WebhookDelivery:
    id: int
    event: str
    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None = None
    error: str | None = None
    at: float = 0.0

    @property
    def payload(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.body))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "headers": self.headers,
            "payload": self.payload,
            "at": self.at,
        }


@dataclass
class SimState:
    """Everything the simulator knows; tests read it directly."""

    api_key: str = DEFAULT_API_KEY
    network_id: str = DEFAULT_NETWORK_ID
    legacy_network_id: int = 686
    network_name: str = "Mobility Work"
    timezone: str = "Europe/Paris"
    currency: str = "EUR"
    plan: str = "ultimate"
    monthly_quota: int | None = None  # tasks per calendar month (UTC); None = unlimited
    strict: bool = False  # True: equipment, assignees and tags must be known (seeded)
    equipment: list[SimEquipment] = field(default_factory=_default_equipment)
    users: list[SimUser] = field(default_factory=_default_users)
    tags: list[tuple[str, Any]] = field(default_factory=list)  # known (type, value) pairs for strict mode
    spare_parts: dict[str, SimSparePart] = field(default_factory=dict)  # by article code
    tasks: list[SimTask] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    bulk: list[BulkRequest] = field(default_factory=list)
    faults: FaultPlan = field(default_factory=FaultPlan)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    signature_template: str = DEFAULT_TEMPLATE
    auto_webhooks: bool = True  # send TaskWasScheduled after each accepted task when a target is set
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    url: str = ""  # where the simulator listens, once started
    _next_activity: int = 19823

    # --- the control API's view ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "network": self.settings(),
            "plan": self.plan,
            "monthly_quota": self.monthly_quota,
            "strict": self.strict,
            "tasks": len(self.tasks),
            "requests": len(self.requests),
            "bulk": len(self.bulk),
            "deliveries": len(self.deliveries),
            "faults": self.faults.pending(),
            "webhook_url": self.webhook_url,
        }

    def reset(self) -> None:
        """Forget tasks, requests, bulk calls, deliveries and faults (keeps key, network and seeds)."""
        self.tasks.clear()
        self.requests.clear()
        self.bulk.clear()
        self.deliveries.clear()
        self.faults.clear()

    # --- lookups ----------------------------------------------------------------------------------------
    def find_equipment(self, ident: tuple[str, Any]) -> SimEquipment | None:
        kind, value = ident
        for eq in self.equipment:
            if (kind == "native" and value in (eq.id, eq.uuid)) or (
                kind == "external" and value == eq.item_code
            ):
                return eq
        return None

    def equipment_for(self, ident: tuple[str, Any]) -> SimEquipment:
        """The known equipment, or (permissive mode) a new one made up on the spot."""
        found = self.find_equipment(ident)
        if found is not None:
            return found
        kind, value = ident
        native = value if kind == "native" and isinstance(value, int) else 10_000 + len(self.equipment)
        eq = SimEquipment(
            id=native,
            uuid=str(uuid.uuid4()),
            item_code=str(value) if kind == "external" else f"EQ-{native}",
            name=f"Equipment {value}",
        )
        self.equipment.append(eq)
        return eq

    def find_user(self, ident: tuple[str, Any]) -> SimUser | None:
        kind, value = ident
        for user in self.users:
            if (kind == "native" and value in (user.id, user.uuid)) or (
                kind == "email" and isinstance(value, str) and value.lower() == user.email.lower()
            ):
                return user
        return None

    def user_for(self, ref: str | int | None) -> SimUser:
        if ref is None:
            return self.users[0] if self.users else _default_users()[0]
        kind = "email" if isinstance(ref, str) and "@" in ref else "native"
        return self.find_user((kind, ref)) or self.users[0]

    def spare_part(self, article: str) -> SimSparePart:
        part = self.spare_parts.get(article)
        if part is None:
            part = SimSparePart(
                article_code=article, uuid=str(uuid.uuid4()), name=f"Spare part {article}", stock=100
            )
            self.spare_parts[article] = part
        return part

    def task(self, task_id: str | None) -> SimTask:
        if not self.tasks:
            raise KeyError("no task recorded yet")
        if task_id is None:
            return self.tasks[-1]
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"unknown task {task_id!r}")

    def task_for_firing(self, firing: str) -> list[SimTask]:
        return [t for t in self.tasks if t.metadata.get("firing") == firing]

    def tasks_this_month(self, now: float) -> int:
        month = time.strftime("%Y-%m", time.gmtime(now))
        return sum(1 for t in self.tasks if time.strftime("%Y-%m", time.gmtime(t.created_at)) == month)

    def next_activity_id(self) -> int:
        self._next_activity += 1
        return self._next_activity

    def settings(self) -> dict[str, Any]:
        return {
            "networkId": self.network_id,
            "legacyNetworkId": self.legacy_network_id,
            "name": self.network_name,
            "timezone": self.timezone,
            "currency": self.currency,
        }
