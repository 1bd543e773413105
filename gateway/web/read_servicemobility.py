"""The reader of ServiceMobility notifications, `POST /webhooks/servicemobility/InventoryUsage`.

ServiceMobility wraps every notification in a CloudEvents-style envelope (`id`, `type`, `specversion`,
`source`, `time`, `datacontenttype`, `action`, `data`); a repeated `id` must be disregarded (it is the
dedupe key). `x-access-token` carries a JWT; when `http.servicemobility_jwt_key` is set it is verified with
PyJWT (HS256 secret or a PEM public key, `http.servicemobility_jwt_algorithms`), otherwise accepted as
ServiceMobility already authenticated it.

`data` of an InventoryUsage notification is `{"rowver": …, "rows": [{"rowver": …, "InventoryUsage": {…}}]}`.
An Inventory Usage object (ServiceMobility's Inventory Usage Object) has `UserID`, `ModifiedUTC`,
`RefModule`, `RefObjID` and `StorageLocations[{StorageLocationID, Items[{ProdNum, OutQty, InQty, …}]}]`.
Rows from the work-order module (`RefModule` 1002, `RefObjID` = the work order number) are consumption on
that work order: `OutQty` consumed, `InQty` returned (recorded like a canceled consumption). Other modules
(inventory loads, transfers, counts) move stock between places, not into work: they are stored, not
counted as consumption. The work order number is the task id the consumption is tied to.
"""

from __future__ import annotations

from typing import Any

from gateway.core.webhooks import Incoming, LedgerOps, Movement
from gateway.web.read_json import BadRequest, number, obj, text, timestamp

SOURCE = "servicemobility"
WORK_ORDER_MODULE = "1002"


def inventory_usage_movements(data: Any) -> tuple[list[Movement], list[str]]:
    """Consumption movements and the work-order numbers they belong to, from an InventoryUsage `data`."""
    movements: list[Movement] = []
    work_orders: list[str] = []
    rows = obj(data).get("rows")
    for row in rows if isinstance(rows, list) else []:
        usage = obj(obj(row).get("InventoryUsage"))
        if text(usage.get("RefModule")) != WORK_ORDER_MODULE:
            continue
        work_order = text(usage.get("RefObjID"))
        if work_order and work_order not in work_orders:
            work_orders.append(work_order)
        at = timestamp(usage.get("ModifiedUTC"))
        locations = usage.get("StorageLocations")
        for loc in locations if isinstance(locations, list) else []:
            location = text(obj(loc).get("StorageLocationID"))
            items = obj(loc).get("Items")
            for item in items if isinstance(items, list) else []:
                item = obj(item)
                article = text(item.get("ProdNum"))
                if not article:
                    continue
                out_qty, in_qty = number(item.get("OutQty")), number(item.get("InQty"))
                for kind, qty in (("consumed", out_qty), ("canceled", in_qty)):
                    if qty is not None and qty > 0:
                        movements.append(
                            Movement(
                                kind=kind,
                                article=article,
                                quantity=qty,
                                task_id=work_order,
                                location=location,
                                at=at,
                            )
                        )
    return movements, work_orders


def parse_envelope(envelope: dict[str, Any], body: bytes) -> Incoming:
    """The ledger's view of one ServiceMobility notification. Raises BadRequest when it is no envelope."""
    event_id = text(envelope.get("id"))
    if not event_id:
        raise BadRequest("missing id: not a ServiceMobility webhook envelope")
    kind = text(envelope.get("type")) or "unknown"
    if kind != "InventoryUsage":
        return Incoming(source=SOURCE, event=kind[:200], dedupe_key=event_id[:500], body=body, known=False)
    movements, work_orders = inventory_usage_movements(envelope.get("data"))
    return Incoming(
        source=SOURCE,
        event="InventoryUsage",
        dedupe_key=event_id[:500],
        body=body,
        task_id=work_orders[0] if len(work_orders) == 1 else None,
        known=True,
        ops=LedgerOps(movements=tuple(movements)),
    )
