"""Mobility Work webhook payloads -> ledger operations: one small reader per event, in one table.

`parse_mobility_work(payload)` returns (task id, understood, ledger operations) and never raises for odd
input. Adding an event is adding a reader function and a line in READERS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.core.webhooks import ActivityAdd, LedgerOps, Movement, StockUpdate, TaskUpdate
from gateway.web.read_json import number, obj, person, text, timestamp

Parsed = tuple[str | None, bool, LedgerOps]
NOT_UNDERSTOOD: Parsed = (None, False, LedgerOps())


def _task_update(
    task_id: str,
    metadata: Any,
    *,
    state: str | None = None,
    at: float | None = None,
    by: str | None = None,
    equipment: Any = None,
) -> TaskUpdate:
    """A task update carrying the binding of `metadata` (`firing`, `rule`, `gateway`), when there is one."""
    meta = obj(metadata)
    return TaskUpdate(
        task_id=task_id,
        state=state,
        at=at,
        by=by,
        equipment=equipment,
        firing_uuid=text(meta.get("firing")),
        rule_id=text(meta.get("rule")),
        gateway=text(meta.get("gateway")),
    )


def _spare_part(payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    part = obj(payload.get("sparePart"))
    article = text(part.get("articleCode")) or text(part.get("sparePartId"))
    return article, part


def _stock(
    article: str, event: str, part: dict[str, Any], quantity: float | None, **extra: Any
) -> StockUpdate:
    return StockUpdate(
        article=article,
        event=event,
        quantity=quantity,
        spare_part_id=text(part.get("sparePartId")),
        name=text(part.get("name")),
        **extra,
    )


def _task_step(section: str) -> Callable[[str, dict[str, Any]], Parsed]:
    """TaskWasScheduled / TaskWasStarted / TaskWasCanceled: the step's `on` and `by` under `section`."""

    def read(event: str, payload: dict[str, Any]) -> Parsed:
        task_id = text(payload.get("taskId")) or text(payload.get("id"))
        if not task_id:
            return NOT_UNDERSTOOD
        step = obj(payload.get(section))
        update = _task_update(
            task_id,
            payload.get("metadata"),
            state=section,
            at=timestamp(step.get("on")),
            by=person(step.get("by")),
            equipment=payload.get("associatedTo"),
        )
        return task_id, True, LedgerOps(tasks=(update,))

    return read


def _completed(event: str, payload: dict[str, Any]) -> Parsed:
    task_id = text(payload.get("id")) or text(payload.get("legacyId")) or text(payload.get("taskId"))
    if not task_id:
        return NOT_UNDERSTOOD
    update = _task_update(
        task_id,
        payload.get("metadata"),
        state="completed",
        at=timestamp(payload.get("doneAt")),
        by=person(payload.get("initiator")),
        equipment=payload.get("associatedTo"),
    )
    return task_id, True, LedgerOps(tasks=(update,))


def _activity(event: str, payload: dict[str, Any]) -> Parsed:
    task = obj(payload.get("task"))
    task_id = text(task.get("taskId")) or text(task.get("id"))
    activity = obj(payload.get("activity"))
    activity_id = text(activity.get("activityId")) or text(payload.get("_idempotencyKey"))
    if not task_id or not activity_id:
        return task_id, False, LedgerOps()
    add = ActivityAdd(
        task_id=task_id,
        activity_id=activity_id,
        description=text(activity.get("description")),
        minutes=number(activity.get("timeSpentInMinutes")),
        at=timestamp(activity.get("completedAt")),
        reporter=person(activity.get("reporter")),
    )
    tasks = (_task_update(task_id, task.get("metadata"), equipment=payload.get("equipment")),)
    return task_id, True, LedgerOps(tasks=tasks, activities=(add,))


def _canceled_quantity(payload: dict[str, Any], part: dict[str, Any]) -> float | None:
    # No document has a complete sample of this event: the canceled quantity is looked for in
    # sparePart.quantity (the simulator's choice), then canceled/consumption/consumed.quantity.
    for candidate in (
        part,
        obj(payload.get("canceled")),
        obj(payload.get("consumption")),
        obj(payload.get("consumed")),
        payload,
    ):
        quantity = number(candidate.get("quantity"))
        if quantity is not None:
            return quantity
    return None


def _consumption(event: str, payload: dict[str, Any]) -> Parsed:
    """SparePartWasConsumed / SparePartConsumptionWasCanceled: a movement on a task, and the stock level."""
    task = obj(payload.get("task"))
    task_id = text(task.get("taskId")) or text(task.get("id"))
    article, part = _spare_part(payload)
    if not article:
        return task_id, False, LedgerOps()
    at = timestamp(payload.get("emittedAt")) or timestamp(payload.get("_sentAt"))
    location = text(obj(payload.get("location")).get("name"))
    tasks: tuple[TaskUpdate, ...] = ()
    if task_id and text(obj(task.get("metadata")).get("firing")):
        tasks = (_task_update(task_id, task.get("metadata")),)
    current = number(part.get("stock"))
    stock = (_stock(article, event, part, current),) if current is not None else ()
    if event == "SparePartWasConsumed":
        kind, quantity = "consumed", number(obj(payload.get("consumed")).get("quantity"))
    else:
        kind, quantity = "canceled", _canceled_quantity(payload, part)
    if quantity is None or quantity < 0:
        return task_id, False, LedgerOps(tasks=tasks, stock=stock)
    movement = Movement(
        kind=kind,
        article=article,
        quantity=quantity,
        task_id=task_id,
        spare_part_id=text(part.get("sparePartId")),
        name=text(part.get("name")),
        location=location,
        at=at,
    )
    return task_id, True, LedgerOps(tasks=tasks, movements=(movement,), stock=stock)


def _restock(event: str, payload: dict[str, Any]) -> Parsed:
    """SparePartWasRestocked / SparePartWasManuallyRecounted: the new stock level."""
    article, part = _spare_part(payload)
    if not article:
        return NOT_UNDERSTOOD
    restocked = event == "SparePartWasRestocked"
    change = obj(payload.get("restocked" if restocked else "recounted"))
    current = number(part.get("stock"))
    if current is None and restocked:
        prev, qty = number(change.get("previousStock")), number(change.get("quantity"))
        current = prev + qty if prev is not None and qty is not None else None
    if current is None and not restocked:
        current = number(change.get("quantity"))
    return None, True, LedgerOps(stock=(_stock(article, event, part, current),))


def _stock_alert(event: str, payload: dict[str, Any]) -> Parsed:
    """SparePartWasOutOfStock / SparePartStockWasUnderMinThreshold: the level and the threshold."""
    article, part = _spare_part(payload)
    if not article:
        return NOT_UNDERSTOOD
    level = obj(payload.get("stock"))
    threshold = number(level.get("threshold"))
    current = 0.0 if event == "SparePartWasOutOfStock" else number(level.get("value"))
    return None, True, LedgerOps(stock=(_stock(article, event, part, current, threshold=threshold),))


READERS: dict[str, Callable[[str, dict[str, Any]], Parsed]] = {
    "TaskWasScheduled": _task_step("scheduled"),
    "TaskWasStarted": _task_step("started"),
    "TaskWasCompleted": _completed,
    "TaskWasCanceled": _task_step("canceled"),
    "ActivityWasAddedOnTask": _activity,
    "SparePartWasConsumed": _consumption,
    "SparePartConsumptionWasCanceled": _consumption,
    "SparePartWasRestocked": _restock,
    "SparePartWasManuallyRecounted": _restock,
    "SparePartWasOutOfStock": _stock_alert,
    "SparePartStockWasUnderMinThreshold": _stock_alert,
}
KNOWN_EVENTS = tuple(READERS)


def parse_mobility_work(payload: dict[str, Any]) -> Parsed:
    """(task id, understood, ledger operations) for one Mobility Work webhook. Never raises for odd input."""
    event = str(payload.get("_event"))
    reader = READERS.get(event)
    return NOT_UNDERSTOOD if reader is None else reader(event, payload)
