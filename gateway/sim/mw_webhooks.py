"""Webhook bodies of the Mobility Work simulator, shaped like the document samples.

Key order and field names follow the latest document (001) for the top level (`_idempotencyKey`, `tags`,
`requiredSpareParts`, `networkId`) and the older rendering (000) for the complete nested objects.
SparePartConsumptionWasCanceled has no complete sample in either document: its nested objects reuse the
shapes of SparePartWasConsumed, and the canceled quantity is `sparePart.quantity` (an assumption).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TASK_EVENTS = ("TaskWasScheduled", "TaskWasStarted", "TaskWasCompleted", "TaskWasCanceled")
EVENTS = (
    *TASK_EVENTS,
    "ActivityWasAddedOnTask",
    "SparePartWasConsumed",
    "SparePartConsumptionWasCanceled",
    "SparePartWasRestocked",
    "SparePartWasManuallyRecounted",
    "SparePartWasOutOfStock",
    "SparePartStockWasUnderMinThreshold",
)
WEBHOOK_USER_AGENT = "Mobility Work - Webhook Service v1"


def iso(ts: float) -> str:
    """`2021-11-02T16:32:38+00:00`, the documents' format."""
    return datetime.fromtimestamp(int(ts), UTC).isoformat()


def idempotency_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


@dataclass
class SimEquipment:
    id: int  # the native (legacy) id
    uuid: str
    item_code: str
    name: str
    cost_center: str | None = None


@dataclass
class SimUser:
    id: int
    uuid: str
    email: str
    first_name: str
    last_name: str


@dataclass
class SimSparePart:
    article_code: str
    uuid: str
    name: str
    stock: float = 0
    location_id: str = "2d6e80f6-3608-3daf-935c-7533536863e8"
    location_name: str = "Main store"
    cost_center: str | None = None
    minimum_stock: float | None = None


@dataclass
class SimTask:
    id: str  # 8 hex characters, like the documents' "32828f62"
    body: dict[str, Any]  # the request as accepted
    equipment: SimEquipment
    assignees: list[tuple[str, Any]]
    tags: list[tuple[str, Any]]
    metadata: dict[str, Any]
    created_at: float
    status: str = "scheduled"  # scheduled | started | completed | canceled
    activities: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at,
            "equipment": {"id": self.equipment.id, "itemCode": self.equipment.item_code},
            "metadata": self.metadata,
            "request": self.body,
        }


def _user_ref(user: SimUser) -> dict[str, Any]:
    return {"userId": user.uuid, "firstName": user.first_name, "lastName": user.last_name}


def _typed_user(user: SimUser) -> dict[str, Any]:
    return {"_type": "User", **_user_ref(user)}


def _associated_to(eq: SimEquipment) -> dict[str, Any]:
    return {
        "_type": "equipment",
        "type": "equipment",
        "id": eq.uuid,
        "legacyId": eq.id,
        "itemCode": eq.item_code,
        "name": eq.name,
    }


def _tags(task: SimTask) -> list[dict[str, Any]]:
    return [{"_type": "Tag", "type": kind, "value": value} for kind, value in task.tags]


def _spare_part(part: SimSparePart) -> dict[str, Any]:
    return {
        "_type": "sparePart",
        "name": part.name,
        "sparePartId": part.uuid,
        "articleCode": part.article_code,
        "stock": part.stock,
    }


def _location(part: SimSparePart) -> dict[str, Any]:
    return {"_type": "Location", "locationId": part.location_id, "name": part.location_name}


def _task_ref(task: SimTask) -> dict[str, Any]:
    equipment: dict[str, Any] = {
        "itemCode": task.equipment.item_code,
        "costCenter": task.equipment.cost_center,
    }
    return {"_type": "Task", "taskId": task.id, "equipment": equipment, "tags": _tags(task)}


def task_event(
    event: str, task: SimTask, *, user: SimUser, at: float, network_id: str, key: str | None = None
) -> dict[str, Any]:
    key = key or idempotency_key()
    if event == "TaskWasCompleted":
        return {
            "_event": event,
            "_idempotencyKey": key,
            "legacyId": task.id,
            "id": task.id,
            "doneAt": iso(at),
            "initiator": {"id": user.uuid, "firstName": user.first_name, "lastName": user.last_name},
            "associatedTo": _associated_to(task.equipment),
            "tags": _tags(task),
            "requiredSpareParts": [],
            "metadata": task.metadata,
            "networkId": network_id,
        }
    section = {
        "TaskWasScheduled": "scheduled",
        "TaskWasStarted": "started",
        "TaskWasCanceled": "canceled",
    }[event]
    return {
        "_event": event,
        "_idempotencyKey": key,
        "taskId": task.id,
        section: {"by": _user_ref(user), "on": iso(at)},
        "associatedTo": _associated_to(task.equipment),
        "tags": _tags(task),
        "requiredSpareParts": [],
        "metadata": task.metadata,
        "networkId": network_id,
    }


def activity_event(
    task: SimTask,
    *,
    user: SimUser,
    activity_id: int,
    description: str,
    minutes: int,
    at: float,
    network_id: str,
) -> dict[str, Any]:
    return {
        "_event": "ActivityWasAddedOnTask",
        "_idempotencyKey": idempotency_key(),
        "_type": "ActivityWasAddedOnTaskWebhook",
        "_sentAt": iso(at),
        "_metadata": [],
        "emittedAt": iso(at),
        "task": {
            "_type": "Task",
            "taskId": task.id,
            "description": task.body.get("description", ""),
            "metadata": task.metadata,
        },
        "equipment": {
            "_type": "equipment",
            "type": "equipment",
            "equipmentId": task.equipment.uuid,
            "itemCode": task.equipment.item_code,
            "name": task.equipment.name,
        },
        "activity": {
            "_type": "Activity",
            "activityId": activity_id,
            "description": description,
            "timeSpentInMinutes": minutes,
            "completedAt": iso(at),
            "reporter": _typed_user(user),
        },
        "networkId": network_id,
        "requiredSpareParts": [],
    }


def consumed_event(
    task: SimTask | None,
    part: SimSparePart,
    *,
    user: SimUser,
    quantity: float,
    previous_stock: float,
    at: float,
    network_id: str,
) -> dict[str, Any]:
    return {
        "_type": "SparePartWasConsumedWebhook",
        "_event": "SparePartWasConsumed",
        "_idempotencyKey": idempotency_key(),
        "_sentAt": iso(at),
        "emittedAt": iso(at),
        "_metadata": "",
        "task": _task_ref(task) if task is not None else None,
        "sparePart": _spare_part(part),
        "location": _location(part),
        "initiator": _typed_user(user),
        "consumed": {"_type": "SparePartConsumption", "quantity": quantity, "previousStock": previous_stock},
        "networkId": network_id,
    }


def consumption_canceled_event(
    task: SimTask | None,
    part: SimSparePart,
    *,
    quantity: float,
    activity_id: int | None,
    at: float,
    network_id: str,
) -> dict[str, Any]:
    spare = {**_spare_part(part), "costCenter": part.cost_center, "quantity": quantity}
    return {
        "_type": "SparePartConsumptionWasCanceledWebhook",
        "_event": "SparePartConsumptionWasCanceled",
        "_idempotencyKey": idempotency_key(),
        "_sentAt": iso(at),
        "emittedAt": iso(at),
        "_metadata": "",
        "task": _task_ref(task) if task is not None else None,
        "sparePart": spare,
        "activity": {"_type": "Activity", "activityId": activity_id},
        "location": _location(part),
        "networkId": network_id,
    }


def stock_change_event(
    event: str,
    part: SimSparePart,
    *,
    user: SimUser,
    quantity: float,
    previous_stock: float,
    at: float,
    network_id: str,
) -> dict[str, Any]:
    """SparePartWasRestocked or SparePartWasManuallyRecounted."""
    if event == "SparePartWasRestocked":
        head: dict[str, Any] = {"_type": "SparePartWasRestockedWebhook", "_event": event}
        tail_key, tail_type = "restocked", "SparePartRestock"
    else:
        head = {"_type": "SparePartWasManuallyRecountedWebhook", "_event": event}
        tail_key, tail_type = "recounted", "StockRecount"
    body: dict[str, Any] = {
        **head,
        "_idempotencyKey": idempotency_key(),
        "_sentAt": iso(at),
        "emittedAt": iso(at),
        "_metadata": "",
    }
    if event == "SparePartWasRestocked":
        body["task"] = None
    body.update(
        {
            "sparePart": _spare_part(part),
            "location": _location(part),
            "initiator": _typed_user(user),
            tail_key: {"_type": tail_type, "quantity": quantity, "previousStock": previous_stock},
            "networkId": network_id,
        }
    )
    return body


def stock_level_event(
    event: str, part: SimSparePart, *, threshold: float | None, at: float, network_id: str
) -> dict[str, Any]:
    """SparePartWasOutOfStock or SparePartStockWasUnderMinThreshold."""
    stock: dict[str, Any] = {"location": {"locationId": part.location_id, "name": part.location_name}}
    if event == "SparePartStockWasUnderMinThreshold":
        stock["threshold"] = threshold if threshold is not None else part.minimum_stock
        stock["value"] = part.stock
    return {
        "_event": event,
        "_idempotencyKey": idempotency_key(),
        "_date": iso(at),
        "_metadata": None,
        "stock": stock,
        "sparePart": {"sparePartId": part.uuid, "name": part.name, "articleCode": part.article_code},
        "movement": {"on": iso(at)},
        "networkId": network_id,
    }
