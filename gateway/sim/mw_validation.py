"""Request validation of the Mobility Work simulator, as strict as the API document describes: the
primitives, identifiers and the task endpoint (the bulk endpoints are in `mw_bulk_checks`).

Errors are collected in the documented 400 format: JSON-pointer keys (`/description`, `/assignees/0`) to lists
of `{"messageKey": ..., "parameters": {...}}`. Message keys the document shows are used verbatim
(`error.payload.min_length`, `error.payload.equipment.unknown`, `error.payload.assignees.unknown`); the others
follow the same naming.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

BAD_REQUEST_CODE = "400044"
BAD_REQUEST_MESSAGE = "The request payload is not valid."
BULK_MAX_ITEMS = 10_000

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Errors:
    """The collected errors of one request."""

    global_errors: list[dict[str, Any]] = field(default_factory=list)
    property_errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, pointer: str, key: str, **parameters: Any) -> None:
        self.property_errors.setdefault(pointer, []).append({"messageKey": key, "parameters": parameters})

    def add_global(self, key: str, **parameters: Any) -> None:
        self.global_errors.append({"messageKey": key, "parameters": parameters})

    def __bool__(self) -> bool:
        return bool(self.global_errors or self.property_errors)

    def body(self) -> dict[str, Any]:
        return error_body(
            400, BAD_REQUEST_CODE, BAD_REQUEST_MESSAGE, self.global_errors, self.property_errors
        )


def error_body(
    status: int,
    code: str,
    message: str,
    global_errors: list[dict[str, Any]] | None = None,
    property_errors: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    return {
        "http_status_code": status,
        "code": code,
        "message": message,
        "extended_message": {"global_errors": global_errors or [], "property_errors": property_errors or {}},
        "more_info_url": None,
    }


def unauthorized_body() -> dict[str, Any]:
    """The document's 401, verbatim."""
    return error_body(
        401, "401001", "Authentication error", [{"messageKey": "Invalid Api Key.", "parameters": {}}]
    )


def forbidden_body(reason: str) -> dict[str, Any]:
    return error_body(403, "403001", "Access denied", [{"messageKey": reason, "parameters": {}}])


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(errors: Errors, ptr: str, expected: str, value: Any) -> None:
    errors.add(ptr, "error.payload.type", expected=expected, actual=json_type(value))


def check_string(
    errors: Errors,
    ptr: str,
    value: Any,
    *,
    min_len: int | None = None,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
    nullable: bool = False,
) -> bool:
    if value is None and nullable:
        return True
    if not isinstance(value, str):
        _type_error(errors, ptr, "string", value)
        return False
    ok = True
    if min_len is not None and len(value) < min_len:
        errors.add(ptr, "error.payload.min_length", min=min_len, length=len(value))
        ok = False
    if max_len is not None and len(value) > max_len:
        errors.add(ptr, "error.payload.max_length", max=max_len, length=len(value))
        ok = False
    if ok and pattern is not None and not pattern.search(value):
        errors.add(ptr, "error.payload.pattern", pattern=pattern.pattern, value=value)
        ok = False
    return ok


def check_bool(errors: Errors, ptr: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _type_error(errors, ptr, "boolean", value)
        return False
    return True


def check_int(
    errors: Errors, ptr: str, value: Any, *, minimum: int | None = None, nullable: bool = False
) -> bool:
    if value is None and nullable:
        return True
    if isinstance(value, bool) or not isinstance(value, int):
        _type_error(errors, ptr, "integer", value)
        return False
    if minimum is not None and value < minimum:
        errors.add(ptr, "error.payload.minimum", min=minimum, value=value)
        return False
    return True


def check_number(
    errors: Errors, ptr: str, value: Any, *, minimum: float | None = None, nullable: bool = False
) -> bool:
    if value is None and nullable:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        _type_error(errors, ptr, "number", value)
        return False
    if minimum is not None and value < minimum:
        errors.add(ptr, "error.payload.minimum", min=minimum, value=value)
        return False
    return True


def parse_datetime(errors: Errors, ptr: str, value: Any) -> datetime | None:
    """ISO 8601 date-time with an explicit offset (or Z)."""
    if not isinstance(value, str):
        _type_error(errors, ptr, "string", value)
        return None
    if not _DATETIME.match(value):
        errors.add(ptr, "error.payload.date_time", value=value)
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        errors.add(ptr, "error.payload.date_time", value=value)
        return None


def check_unknown(errors: Errors, prefix: str, obj: Mapping[str, Any], allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            errors.add(f"{prefix}/{key}", "error.payload.unknown_property", property=key)


def require(errors: Errors, prefix: str, obj: Mapping[str, Any], names: list[str]) -> None:
    for name in names:
        if name not in obj:
            errors.add(f"{prefix}/{name}", "error.payload.required", property=name)


# --- identifiers

Identifier = tuple[
    str, Any
]  # (type, value): ("native", 9), ("external", "EQ-1"), ("email", "a@b.c"), ("code", "x")

# Each endpoint's typed identifiers, in its own words and no others (seed 001). The task endpoint: "native",
# "external", "email", "code" ("For equipment you can mix both native and external identifiers"); the
# equipment update endpoint uses the same equipment_identifier schema. The spare-part endpoints: a string or
# {"type": "externalReference"} (SparePartIdentifier, "Article code ..."); no native id is mentioned there.
EQUIPMENT_TYPES = {"native": "native", "external": "external"}
ASSIGNEE_TYPES = {"native": "native", "email": "email"}
TAG_TYPES = {"native": "native", "code": "code"}
SPARE_PART_TYPES = {"externalReference": "external"}


def _typed_value_ok(kind: str, value: Any) -> bool:
    if kind == "native":
        return (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
            isinstance(value, str) and bool(_UUID.match(value))
        )
    if kind == "email":
        return isinstance(value, str) and bool(_EMAIL.match(value))
    return isinstance(value, str) and bool(value.strip())


def parse_identifier(
    errors: Errors,
    ptr: str,
    value: Any,
    *,
    types: Mapping[str, str],
    infer: Callable[[Any], str | None],
) -> Identifier | None:
    """A plain value (type inferred) or the typed object form `{"type": ..., "value": ...}`."""
    if isinstance(value, Mapping):
        check_unknown(errors, ptr, value, {"type", "value"})
        if "type" not in value or "value" not in value:
            require(errors, ptr, value, ["type", "value"])
            return None
        raw_type = value["type"]
        if not isinstance(raw_type, str) or raw_type not in types:
            errors.add(f"{ptr}/type", "error.payload.identifier.type", allowed=sorted(types), value=raw_type)
            return None
        kind = types[raw_type]
        if not _typed_value_ok(kind, value["value"]):
            errors.add(f"{ptr}/value", "error.payload.identifier.value", type=raw_type, value=value["value"])
            return None
        return kind, value["value"]
    if isinstance(value, bool) or not isinstance(value, int | str):
        _type_error(errors, ptr, "integer|string|object", value)
        return None
    kind_or_none = infer(value)
    if kind_or_none is None or not _typed_value_ok(kind_or_none, value):
        errors.add(ptr, "error.payload.identifier.not_inferable", value=value)
        return None
    return kind_or_none, value


def infer_equipment(value: Any) -> str | None:
    return "native" if isinstance(value, int) else "external"


def infer_assignee(value: Any) -> str | None:
    if isinstance(value, int):
        return "native"
    if isinstance(value, str) and "@" in value:
        return "email"
    if isinstance(value, str) and _UUID.match(value):
        return "native"
    return None


def infer_tag(value: Any) -> str | None:
    return "native" if isinstance(value, int) else "code"


def infer_spare_part(value: Any) -> str | None:
    return "external" if isinstance(value, str) else None


# --- POST /partners/v1/tasks

TASK_PROPERTIES = {
    "equipment",
    "description",
    "startDateTime",
    "endDateTime",
    "allDay",
    "assignees",
    "tags",
    "checklist",
    "emailToCreator",
    "sendEmailToAssignees",
    "inheritEquipmentTags",
    "metadata",
}


@dataclass
class TaskRequest:
    """A validated task request; identifiers normalised to (type, value)."""

    equipment: Identifier
    description: str
    start: datetime
    end: datetime
    all_day: bool
    assignees: list[Identifier]
    tags: list[Identifier]
    checklist: str | None
    metadata: dict[str, Any]


Lookup = Callable[[Identifier], bool]


def validate_task(
    body: Any,
    *,
    equipment_known: Lookup | None = None,
    assignee_known: Lookup | None = None,
    tag_known: Lookup | None = None,
) -> tuple[Errors, TaskRequest | None]:
    """Validate a task request. The `*_known` callbacks (strict mode) report unknown ids as the doc shows."""
    errors = Errors()
    if not isinstance(body, Mapping):
        errors.add_global("error.payload.type", expected="object", actual=json_type(body))
        return errors, None
    p = "/"
    # Order matters for the documented example: description, equipment, then assignees.
    if "description" not in body:
        errors.add("/description", "error.payload.required", property="description")
    else:
        check_string(errors, "/description", body["description"], min_len=3, max_len=3000)

    equipment: Identifier | None = None
    if "equipment" not in body:
        errors.add("/equipment", "error.payload.required", property="equipment")
    else:
        equipment = parse_identifier(
            errors, "/equipment", body["equipment"], types=EQUIPMENT_TYPES, infer=infer_equipment
        )
        if equipment is not None and equipment_known is not None and not equipment_known(equipment):
            errors.add("/equipment", "error.payload.equipment.unknown", type=equipment[0], value=equipment[1])

    start = end = None
    for name in ("startDateTime", "endDateTime"):
        if name not in body:
            errors.add(f"{p}{name}", "error.payload.required", property=name)
        else:
            parsed = parse_datetime(errors, f"{p}{name}", body[name])
            if name == "startDateTime":
                start = parsed
            else:
                end = parsed
    if start is not None and end is not None and end <= start:
        errors.add(
            "/endDateTime",
            "error.payload.end_before_start",
            start=body["startDateTime"],
            end=body["endDateTime"],
        )

    if "allDay" not in body:
        errors.add("/allDay", "error.payload.required", property="allDay")
    else:
        check_bool(errors, "/allDay", body["allDay"])

    assignees: list[Identifier] = []
    if "assignees" not in body:
        errors.add("/assignees", "error.payload.required", property="assignees")
    elif not isinstance(body["assignees"], list):
        _type_error(errors, "/assignees", "array", body["assignees"])
    elif not body["assignees"]:
        errors.add("/assignees", "error.payload.min_items", min=1, count=0)
    else:
        for i, raw in enumerate(body["assignees"]):
            ident = parse_identifier(
                errors, f"/assignees/{i}", raw, types=ASSIGNEE_TYPES, infer=infer_assignee
            )
            if ident is None:
                continue
            if assignee_known is not None and not assignee_known(ident):
                errors.add(
                    f"/assignees/{i}", "error.payload.assignees.unknown", type=ident[0], value=ident[1]
                )
            assignees.append(ident)

    tags: list[Identifier] = []
    if "tags" in body:
        if not isinstance(body["tags"], list):
            _type_error(errors, "/tags", "array", body["tags"])
        else:
            for i, raw in enumerate(body["tags"]):
                ident = parse_identifier(errors, f"/tags/{i}", raw, types=TAG_TYPES, infer=infer_tag)
                if ident is None:
                    continue
                if tag_known is not None and not tag_known(ident):
                    errors.add(f"/tags/{i}", "error.payload.tags.unknown", type=ident[0], value=ident[1])
                tags.append(ident)

    checklist = body.get("checklist")
    if checklist is not None and (not isinstance(checklist, str) or not _UUID.match(checklist)):
        errors.add("/checklist", "error.payload.uuid", value=checklist)

    for name in ("emailToCreator", "sendEmailToAssignees", "inheritEquipmentTags"):
        if name in body:
            check_bool(errors, f"/{name}", body[name])

    metadata = body.get("metadata", {})
    if not isinstance(metadata, Mapping):
        _type_error(errors, "/metadata", "object", metadata)

    check_unknown(errors, "", body, TASK_PROPERTIES)

    if errors or equipment is None or start is None or end is None:
        return errors, None
    return errors, TaskRequest(
        equipment=equipment,
        description=body["description"],
        start=start,
        end=end,
        all_day=body["allDay"],
        assignees=assignees,
        tags=tags,
        checklist=checklist,
        metadata=dict(metadata),
    )
