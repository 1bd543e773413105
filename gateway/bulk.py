"""`mw-gateway bulk OPERATION FILE`: Mobility Work bulk updates from a CSV or JSON file.

Each row becomes one item of the typed bulk client (gateway/cmms/mw_bulk.py), which chunks the request at
10,000 items. Column names are the item's field names (`article`, `quantity`, `unit_price`, ...). Every row is
checked first and every problem is reported as FILE:LINE: message; nothing is sent unless all rows are valid.
Numbers must be finite (no NaN, Infinity, 1e400) and within JSON's exact integers; quantities, stock levels,
lots and prices must not be negative. In update operations an empty cell leaves the attribute as it is. Lists
(`tags`) are written `a;b;c`; `custom_fields` as JSON (`[{"field": "Color", "value": "red"}]`).

Rows are numbered from 1 (the first data row, whatever line it is on). The report names every row that was
refused and every row that was not sent (a 401/403 stops the run), and `start_at` resumes from a row.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from gateway.cmms import mw_bulk as b
from gateway.cmms.mobility_work import EquipmentForm
from gateway.config import Config
from gateway.core.delivery import Delivery, Outcome
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


# Largest integer a JSON number carries exactly (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_EXACT = 2**53 - 1
# Columns that count stock or money: never negative.
NON_NEGATIVE = frozenset({"quantity", "minimum_stock", "maximum_stock", "replenishment_lot", "unit_price"})


@dataclass(frozen=True)
class Row:
    """One valid row: its number (1 = the first data row), the file line it starts on, and its item."""

    number: int
    line: int
    item: Any


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


def _convert(value: Any, hint: Any, *, currency: str | None, non_negative: bool = False) -> Any:
    """Convert one cell to the field's type (the first type of a union that accepts it)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    errors = []
    for option in options:
        if option is type(None) or option is b._Unset:
            continue
        try:
            return _convert_one(value, option, currency=currency, non_negative=non_negative)
        except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
            errors.append(str(exc))
    raise ValueError(errors[0] if errors else f"cannot read {value!r}")


def _number(value: Any, *, non_negative: bool, what: str = "a number") -> Decimal:
    """A finite number within JSON's exact range (and not negative when asked): else ValueError saying why."""
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r} (NaN, Infinity and 1e400 cannot be sent)")
    number = Decimal(str(value).strip())
    if not number.is_finite():
        raise ValueError(f"expected a finite number, got {value!r} (NaN, Infinity and 1e400 cannot be sent)")
    if abs(number) > MAX_EXACT:
        raise ValueError(f"{value!r} is out of range: at most {MAX_EXACT:,}")
    if non_negative and number < 0:
        raise ValueError(f"cannot be negative, got {value!r}")
    return number


def _convert_one(value: Any, option: Any, *, currency: str | None, non_negative: bool = False) -> Any:
    origin = typing.get_origin(option)
    if option is str:
        return str(value)
    if option is int:
        number = _number(value, non_negative=non_negative, what="a whole number")
        if number != number.to_integral_value():
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(number)
    if option is float:
        return float(_number(value, non_negative=non_negative))
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
        amount = _number(value, non_negative=non_negative, what="an amount")
        if abs(b.to_minor_units(amount, currency)) > MAX_EXACT:
            raise ValueError(f"{value!r} {currency} is out of range")
        return b.Money(str(amount), currency)
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
    path: Path, cls: type[Any], *, currency: str | None = None, equipment_form: EquipmentForm = "external"
) -> tuple[list[Any], list[Problem]]:
    """Read every row; return the items, or every problem found (then no item is usable)."""
    rows, problems = build_rows(path, cls, currency=currency, equipment_form=equipment_form)
    return [row.item for row in rows], problems


def build_rows(
    path: Path, cls: type[Any], *, currency: str | None = None, equipment_form: EquipmentForm = "external"
) -> tuple[list[Row], list[Problem]]:
    """Every valid row with its number and line, and every problem found (FILE:LINE: message).
    `equipment_form` is `cmms.equipment_identifier`: the JSON checked is the JSON sent (mw_bulk.payload)."""
    hints = typing.get_type_hints(cls, vars(b))
    fields = dataclasses.fields(cls)
    known = set(columns(cls)) | {"currency"}
    out: list[Row] = []
    problems: list[Problem] = []
    try:
        rows = _rows(path)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, csv.Error) as exc:
        # RecursionError: absurdly nested JSON; csv.Error: a field over 128 KiB, a NUL byte
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
    for number, (line, row) in enumerate(rows, 1):
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
                kwargs[field.name] = _convert(
                    raw, hints[field.name], currency=row_currency, non_negative=name in NON_NEGATIVE
                )
            except (ValueError, TypeError, InvalidOperation, OverflowError, RecursionError) as exc:
                problems.append(Problem(str(path), line, 1, f"{name}: {exc}"))
                row_ok = False
        if not row_ok:
            continue
        try:  # what will be sent must be valid JSON: custom fields and anything else included
            item = cls(**kwargs)
            json.dumps(b.payload([item], equipment_form), allow_nan=False)
        except (ValueError, TypeError, OverflowError, InvalidOperation) as exc:
            problems.append(Problem(str(path), line, 1, f"cannot be sent as JSON: {exc}"))
            continue
        out.append(Row(number, line, item))
    return out, problems


async def cmd_bulk(
    config: Config,
    operation: str,
    path: Path,
    *,
    currency: str | None = None,
    dry_run: bool = False,
    start_at: int = 1,
    out: TextIO = sys.stdout,
    transport: Any = None,
    chunk_size: int = b.MAX_ITEMS,
) -> int:
    if config.cmms.kind != "mobility_work":
        print(
            f"mw-gateway bulk works with cmms.kind: mobility_work (this config has {config.cmms.kind})",
            file=sys.stderr,
        )
        return 2
    cls, method = OPERATIONS[operation]
    form = config.cmms.equipment_identifier
    rows, problems = build_rows(path, cls, currency=currency, equipment_form=form)
    if start_at < 1:
        problems.append(Problem(str(path), 0, 0, f"--start-at {start_at}: rows are numbered from 1"))
    elif not problems and start_at > len(rows):
        problems.append(Problem(str(path), 0, 0, f"--start-at {start_at}: the file has {len(rows)} row(s)"))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s): nothing was sent", file=sys.stderr)
        return 1
    rows = rows[start_at - 1 :]
    items = [row.item for row in rows]
    if dry_run:
        chunks = list(b.chunks(items, chunk_size))
        json.dump([b.payload(chunk, form) for chunk in chunks], out, indent=2, default=str)
        out.write("\n")
        print(f"{len(items)} item(s) in {len(chunks)} request(s) (dry run: nothing sent)", file=sys.stderr)
        return 0
    async with b.MobilityWorkBulk(
        config.cmms, gateway_id=config.gateway.id, transport=transport, chunk_size=chunk_size
    ) as client:
        result: b.BulkResult = await getattr(client, method)(items)
    return _report(operation, result, rows, chunk_size, out)


def _span(rows: Sequence[Row]) -> str:
    first, last = rows[0], rows[-1]
    return f"rows {first.number}..{last.number} (lines {first.line}..{last.line})"


def _report(operation: str, result: b.BulkResult, rows: Sequence[Row], size: int, out: TextIO) -> int:
    """One line per chunk that was not accepted, and the rows never sent with the option that resumes."""
    failures = result.failures()
    print(
        f"{operation}: {result.items} item(s) in {result.requests} request(s) to {result.path}: "
        f"{result.requests - len(failures)} accepted, {len(failures)} refused",
        file=out,
    )
    for index, delivery in failures:
        print(f"  {_span(rows[index * size : (index + 1) * size])}: {_failure(delivery)}", file=out)
        if delivery.details is not None:
            print("    " + json.dumps(delivery.details, ensure_ascii=False)[:2000], file=out)
    unsent = rows[result.requests * size :]
    if unsent:
        print(f"  not sent: {_span(unsent)}", file=out)
    stopped = result.deliveries[-1].outcome is Outcome.PAUSE if result.deliveries else False
    resume = rows[(result.requests - 1) * size :] if stopped else unsent
    if resume:
        print(f"  once the cause is fixed, resume with --start-at {resume[0].number}", file=out)
    return 0 if result.ok and not unsent else 1


def _failure(delivery: Delivery) -> str:
    if delivery.outcome is Outcome.PAUSE:
        return f"{delivery.error} (the API key was refused: nothing applied, the run stopped here)"
    if delivery.outcome is Outcome.RETRY:
        maybe = (
            " (the server may have applied them: check before resending)" if delivery.maybe_committed else ""
        )
        return f"{delivery.error}; gave up after retries{maybe}"
    return delivery.error


def describe_operations() -> Mapping[str, Sequence[str]]:
    return {name: columns(cls) for name, (cls, _) in OPERATIONS.items()}
