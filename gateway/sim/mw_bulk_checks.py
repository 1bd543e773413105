"""Request validation of the Mobility Work simulator's bulk endpoints (1..10,000 items, `/<index>/<field>`
pointers), as strict as the API document describes each one."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.sim.mw_validation import (
    BULK_MAX_ITEMS,
    EQUIPMENT_TYPES,
    SPARE_PART_TYPES,
    Errors,
    _type_error,
    check_bool,
    check_int,
    check_number,
    check_string,
    check_unknown,
    infer_equipment,
    infer_spare_part,
    json_type,
    parse_identifier,
    require,
)

_GTIN = re.compile(r"^[0-9]{8,18}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LOCATION_NAME = re.compile(r"^(?!$)\w")


ItemCheck = Callable[[Errors, str, Mapping[str, Any]], None]


def validate_bulk(body: Any, check_item: ItemCheck) -> Errors:
    """An array of 1..10,000 objects, each checked by `check_item` under `/<index>`."""
    errors = Errors()
    if not isinstance(body, list):
        errors.add_global("error.payload.type", expected="array", actual=json_type(body))
        return errors
    if not body:
        errors.add_global("error.payload.min_items", min=1, count=0)
        return errors
    if len(body) > BULK_MAX_ITEMS:
        errors.add_global("error.payload.max_items", max=BULK_MAX_ITEMS, count=len(body))
        return errors
    for i, item in enumerate(body):
        if not isinstance(item, Mapping):
            _type_error(errors, f"/{i}", "object", item)
            continue
        check_item(errors, f"/{i}", item)
    return errors


def _money(errors: Errors, ptr: str, value: Any, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, Mapping):
        _type_error(errors, ptr, "object", value)
        return
    check_unknown(errors, ptr, value, {"amount", "currency"})
    require(errors, ptr, value, ["amount", "currency"])
    if "amount" in value:
        # The document: an integer in the lowest unit of the currency (10 EUR = 1000).
        check_int(errors, f"{ptr}/amount", value["amount"], minimum=0)
    if "currency" in value:
        check_string(errors, f"{ptr}/currency", value["currency"], pattern=_CURRENCY)


def _spare_part_id(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    if "id" not in item:
        errors.add(f"{ptr}/id", "error.payload.required", property="id")
    else:
        parse_identifier(errors, f"{ptr}/id", item["id"], types=SPARE_PART_TYPES, infer=infer_spare_part)


def _custom_fields(errors: Errors, ptr: str, value: Any) -> None:
    if not isinstance(value, list):
        _type_error(errors, ptr, "array", value)
        return
    for i, cf in enumerate(value):
        if not isinstance(cf, Mapping):
            _type_error(errors, f"{ptr}/{i}", "object", cf)
            continue
        check_unknown(errors, f"{ptr}/{i}", cf, {"field", "value"})
        require(errors, f"{ptr}/{i}", cf, ["field", "value"])
        if "field" in cf:
            check_string(errors, f"{ptr}/{i}/field", cf["field"], min_len=1)


def _string_list(errors: Errors, ptr: str, value: Any) -> None:
    if not isinstance(value, list):
        _type_error(errors, ptr, "array", value)
        return
    for i, s in enumerate(value):
        check_string(errors, f"{ptr}/{i}", s, min_len=1)


def check_spare_part_create(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    check_unknown(
        errors,
        ptr,
        item,
        {
            "externalReference",
            "name",
            "description",
            "unitPrice",
            "currentStock",
            "minimumStock",
            "maximumStock",
            "gtin",
            "costCenter",
        },
    )
    require(errors, ptr, item, ["externalReference", "name", "unitPrice", "currentStock"])
    if "externalReference" in item:
        check_string(errors, f"{ptr}/externalReference", item["externalReference"], min_len=1)
    if "name" in item:
        check_string(errors, f"{ptr}/name", item["name"], min_len=3, max_len=255)
    if "description" in item:
        check_string(errors, f"{ptr}/description", item["description"], min_len=3, max_len=3000)
    if "unitPrice" in item:
        _money(errors, f"{ptr}/unitPrice", item["unitPrice"])
    if "currentStock" in item:
        stock = item["currentStock"]
        if not isinstance(stock, Mapping):
            _type_error(errors, f"{ptr}/currentStock", "object", stock)
        else:
            check_unknown(errors, f"{ptr}/currentStock", stock, {"location", "quantity"})
            require(errors, f"{ptr}/currentStock", stock, ["location", "quantity"])
            if "location" in stock:
                check_string(errors, f"{ptr}/currentStock/location", stock["location"], min_len=1)
            if "quantity" in stock:
                check_int(errors, f"{ptr}/currentStock/quantity", stock["quantity"], minimum=0)
    for name in ("minimumStock", "maximumStock"):
        if name in item:
            check_int(errors, f"{ptr}/{name}", item[name], minimum=0)
    if "gtin" in item:
        check_string(errors, f"{ptr}/gtin", item["gtin"], pattern=_GTIN)
    if "costCenter" in item:
        check_string(errors, f"{ptr}/costCenter", item["costCenter"])


def check_stock_update(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    check_unknown(errors, ptr, item, {"id", "quantity"})
    _spare_part_id(errors, ptr, item)
    if "quantity" not in item:
        errors.add(f"{ptr}/quantity", "error.payload.required", property="quantity")
    else:
        check_int(errors, f"{ptr}/quantity", item["quantity"], minimum=0)


def check_spare_part_attributes(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    check_unknown(
        errors,
        ptr,
        item,
        {
            "id",
            "unitPrice",
            "name",
            "description",
            "externalReference",
            "minimumStock",
            "maximumStock",
            "replenishmentLot",
            "gtin",
            "customFields",
            "tags",
            "costCenter",
        },
    )
    _spare_part_id(errors, ptr, item)
    if "unitPrice" in item:
        _money(errors, f"{ptr}/unitPrice", item["unitPrice"], nullable=True)
    if "name" in item:
        check_string(errors, f"{ptr}/name", item["name"], min_len=3, max_len=255, nullable=True)
    if "description" in item:
        check_string(
            errors, f"{ptr}/description", item["description"], min_len=3, max_len=3000, nullable=True
        )
    if "externalReference" in item:
        check_string(errors, f"{ptr}/externalReference", item["externalReference"], min_len=1, nullable=True)
    for name in ("minimumStock", "maximumStock", "replenishmentLot"):
        if name in item:
            check_number(errors, f"{ptr}/{name}", item[name], minimum=0, nullable=True)
    if "gtin" in item:
        check_string(errors, f"{ptr}/gtin", item["gtin"], pattern=_GTIN, nullable=True)
    if "customFields" in item:
        _custom_fields(errors, f"{ptr}/customFields", item["customFields"])
    if "tags" in item:
        tags = item["tags"]
        if not isinstance(tags, list):
            _type_error(errors, f"{ptr}/tags", "array", tags)
        else:
            for i, change in enumerate(tags):
                cp = f"{ptr}/tags/{i}"
                if not isinstance(change, Mapping):
                    _type_error(errors, cp, "object", change)
                    continue
                check_unknown(errors, cp, change, {"operation", "values"})
                require(errors, cp, change, ["operation", "values"])
                if "operation" in change and change["operation"] not in ("add", "remove", "replace"):
                    errors.add(
                        f"{cp}/operation",
                        "error.payload.choice",
                        choices=["add", "remove", "replace"],
                        value=change["operation"],
                    )
                if "values" in change:
                    _string_list(errors, f"{cp}/values", change["values"])
    if "costCenter" in item:
        check_string(errors, f"{ptr}/costCenter", item["costCenter"], nullable=True)


def check_equipment_create(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    check_unknown(
        errors,
        ptr,
        item,
        {
            "name",
            "description",
            "globalTradeItemNumber",
            "costCenter",
            "itemCode",
            "private",
            "tags",
            "customFields",
        },
    )
    require(errors, ptr, item, ["name"])
    if "name" in item:
        check_string(errors, f"{ptr}/name", item["name"], min_len=1, max_len=255)
    for name in ("description", "globalTradeItemNumber", "costCenter", "itemCode"):
        if name in item:
            check_string(errors, f"{ptr}/{name}", item[name], nullable=True)
    if "private" in item:
        check_bool(errors, f"{ptr}/private", item["private"])
    if "tags" in item:
        _string_list(errors, f"{ptr}/tags", item["tags"])
    if "customFields" in item:
        _custom_fields(errors, f"{ptr}/customFields", item["customFields"])


def check_equipment_attributes(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    check_unknown(
        errors,
        ptr,
        item,
        {"id", "name", "description", "gtin", "costCenter", "itemCode", "tags", "customFields"},
    )
    if "id" not in item:
        errors.add(f"{ptr}/id", "error.payload.required", property="id")
    else:
        parse_identifier(errors, f"{ptr}/id", item["id"], types=EQUIPMENT_TYPES, infer=infer_equipment)
    if "name" in item:
        check_string(errors, f"{ptr}/name", item["name"], min_len=3, max_len=255, nullable=True)
    if "description" in item:
        check_string(
            errors, f"{ptr}/description", item["description"], min_len=3, max_len=3000, nullable=True
        )
    if "gtin" in item:
        check_string(errors, f"{ptr}/gtin", item["gtin"], pattern=_GTIN, nullable=True)
    if "costCenter" in item:
        check_string(errors, f"{ptr}/costCenter", item["costCenter"], min_len=3, max_len=255, nullable=True)
    if "itemCode" in item:
        check_string(errors, f"{ptr}/itemCode", item["itemCode"], min_len=1, max_len=255, nullable=True)
    if "tags" in item:
        _string_list(errors, f"{ptr}/tags", item["tags"])
    if "customFields" in item:
        _custom_fields(errors, f"{ptr}/customFields", item["customFields"])


def check_location_create(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    # additionalProperties: any (the document), so unknown keys are accepted here.
    if "name" not in item:
        errors.add(f"{ptr}/name", "error.payload.required", property="name")
    else:
        check_string(errors, f"{ptr}/name", item["name"], min_len=1, max_len=255, pattern=_LOCATION_NAME)


def _location_ref(errors: Errors, ptr: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        _type_error(errors, ptr, "object", value)
        return
    if "name" not in value:
        errors.add(f"{ptr}/name", "error.payload.required", property="name")
    else:
        check_string(errors, f"{ptr}/name", value["name"], min_len=1, max_len=255)


def check_relocation(errors: Errors, ptr: str, item: Mapping[str, Any]) -> None:
    # The document's field names are collapsed in the rendering; the simulator uses
    # {"id": <spare part>, "from": {"name": ...} (optional), "to": {"name": ...}} and accepts extra keys.
    _spare_part_id(errors, ptr, item)
    if "from" in item:
        _location_ref(errors, f"{ptr}/from", item["from"])
    if "to" not in item:
        errors.add(f"{ptr}/to", "error.payload.required", property="to")
    else:
        _location_ref(errors, f"{ptr}/to", item["to"])
