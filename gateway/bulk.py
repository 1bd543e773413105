"""`mw-gateway bulk OPERATION FILE`: Mobility Work bulk updates from a CSV or JSON file.

Each row becomes one item of the typed bulk client (gateway/cmms/mw_bulk.py), which chunks the request at
10,000 items. Column names are the item's field names (`article`, `quantity`, `unit_price`, ...). Every row is
checked first and every problem is reported as FILE:LINE: message; nothing is sent unless all rows are valid.
In update operations an empty cell leaves the attribute as it is. Lists (`tags`) are written `a;b;c`;
`custom_fields` as JSON (`[{"field": "Color", "value": "red"}]`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from gateway.cmms import mw_bulk as b
from gateway.config import Config
from gateway.core.errors import Problem

OPERATIONS: dict[str, tuple[type[Any], str]] = {
    "create-spare-parts": (b.NewSparePart, "create_spare_parts"),
    "update-stock": (b.StockLevel, "update_stock"),
    "update-spare-parts": (b.SparePartUpdate, "update_spare_parts"),
    "create-equipment": (b.NewEquipment, "create_equipment"),
    "update-equipment": (b.EquipmentUpdate, "update_equipment"),
    "create-locations": (b.NewLocation, "create_locations"),
    "relocate-spare-parts": (b.Relocation, "relocate_spare_parts"),
}


def column_name(field: dataclasses.Field[Any]) -> str:
    return field.name.rstrip("_")  # Relocation.from_ is the column "from"


def columns(cls: type[Any]) -> list[str]:
    return [column_name(f) for f in dataclasses.fields(cls)]


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs from a CSV (header line 1) or a JSON list of objects."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise ValueError("a JSON file must hold a list of objects")
        return [(i + 1, row) for i, row in enumerate(data)]
    reader = csv.DictReader(text.splitlines())
    return [(reader.line_num, dict(row)) for row in reader]


def _convert(value: Any, hint: Any, *, currency: str | None) -> Any:
    """Convert one cell to the field's type (the first type of a union that accepts it)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    errors = []
    for option in options:
        if option is type(None) or option is b._Unset:
            continue
        try:
            return _convert_one(value, option, currency=currency)
        except (ValueError, TypeError, InvalidOperation) as exc:
            errors.append(str(exc))
    raise ValueError(errors[0] if errors else f"cannot read {value!r}")


def _convert_one(value: Any, option: Any, *, currency: str | None) -> Any:
    origin = typing.get_origin(option)
    if option is str:
        return str(value)
    if option is int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        number = Decimal(str(value))
        if number != number.to_integral_value():
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(number)
    if option is float:
        return float(Decimal(str(value)))
    if option is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "yes", "1"}:
            return True
        if text in {"false", "no", "0"}:
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if option is b.Money:
        if currency is None:
            raise ValueError("a price needs a currency: add a `currency` column or pass --currency EUR")
        Decimal(str(value))  # raises InvalidOperation for garbage
        return b.Money(str(value), currency)
    if origin is tuple:
        (item_type, _) = typing.get_args(option)
        if item_type is str:
            items = value if isinstance(value, list) else [p for p in str(value).split(";") if p.strip()]
            return tuple(str(p).strip() for p in items)
        items = value if isinstance(value, list) else json.loads(str(value))
        if not isinstance(items, list):
            raise ValueError("expected a JSON list")
        return tuple(item_type(**item) for item in items)
    raise TypeError(f"unsupported field type {option!r}")


def build_items(
    path: Path, cls: type[Any], *, currency: str | None = None
) -> tuple[list[Any], list[Problem]]:
    """Read every row; return the items, or every problem found (then no item is usable)."""
    hints = typing.get_type_hints(cls, vars(b))
    fields = dataclasses.fields(cls)
    known = set(columns(cls)) | {"currency"}
    items: list[Any] = []
    problems: list[Problem] = []
    try:
        rows = _rows(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return [], [Problem(str(path), 0, 0, f"cannot read the file: {exc}")]
    if not rows:
        return [], [Problem(str(path), 1, 1, "no rows: nothing to send")]
    unknown = sorted(set(rows[0][1]) - known)
    if unknown:
        problems.append(
            Problem(
                str(path),
                1,
                1,
                f"unknown column(s) {', '.join(unknown)}; the columns of this "
                f"operation are: {', '.join(columns(cls))}",
            )
        )
    for line, row in rows:
        kwargs: dict[str, Any] = {}
        row_ok = True
        row_currency = row.get("currency") or currency
        for field in fields:
            name = column_name(field)
            raw = row.get(name)
            empty = raw is None or (isinstance(raw, str) and not raw.strip())
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if empty:
                if required:
                    problems.append(Problem(str(path), line, 1, f"column {name!r} is required"))
                    row_ok = False
                continue
            try:
                kwargs[field.name] = _convert(raw, hints[field.name], currency=row_currency)
            except (ValueError, TypeError, InvalidOperation, json.JSONDecodeError) as exc:
                problems.append(Problem(str(path), line, 1, f"{name}: {exc}"))
                row_ok = False
        if row_ok:
            items.append(cls(**kwargs))
    return items, problems


async def cmd_bulk(
    config: Config,
    operation: str,
    path: Path,
    *,
    currency: str | None = None,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    transport: Any = None,
) -> int:
    if config.cmms.kind != "mobility_work":
        print(
            f"mw-gateway bulk works with cmms.kind: mobility_work (this config has {config.cmms.kind})",
            file=sys.stderr,
        )
        return 2
    cls, method = OPERATIONS[operation]
    items, problems = build_items(path, cls, currency=currency)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s): nothing was sent", file=sys.stderr)
        return 1
    chunks = list(b.chunks(items))
    if dry_run:
        json.dump([[item.to_json() for item in chunk] for chunk in chunks], out, indent=2, default=str)
        out.write("\n")
        print(f"{len(items)} item(s) in {len(chunks)} request(s) (dry run: nothing sent)", file=sys.stderr)
        return 0
    async with b.MobilityWorkBulk(config.cmms, gateway_id=config.gateway.id, transport=transport) as client:
        result: b.BulkResult = await getattr(client, method)(items)
    failures = result.failures()
    print(
        f"{operation}: {result.items} item(s) in {result.requests} request(s) to {result.path}: "
        f"{result.requests - len(failures)} accepted, {len(failures)} refused",
        file=out,
    )
    for index, delivery in failures:
        first = index * b.MAX_ITEMS + 1
        print(f"  items {first}..{first + b.MAX_ITEMS - 1}: {delivery.error}", file=out)
        if delivery.details is not None:
            print("    " + json.dumps(delivery.details, ensure_ascii=False)[:2000], file=out)
    return 0 if result.ok else 1


def describe_operations() -> Mapping[str, Sequence[str]]:
    return {name: columns(cls) for name, (cls, _) in OPERATIONS.items()}
