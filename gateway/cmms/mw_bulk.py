"""Typed client for the Mobility Work bulk endpoints, chunked at 10,000 items per request.

    async with MobilityWorkBulk(config, gateway_id="gw1") as bulk:
        result = await bulk.update_stock([StockLevel("SP987678", 12), ...])

Every endpoint answers 202 (processed in the background). Amounts are integers in the currency's lowest unit
(`to_minor_units(Decimal("35.00"), "EUR") == 3500`). In update items, a field left `UNSET` is omitted (no
change) and `None` is sent as null (the attribute is removed), as the document describes.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import TracebackType
from typing import Any

import httpx

from gateway.cmms import http
from gateway.cmms.mobility_work import EquipmentForm, equipment_identifier, make_mw_client
from gateway.cmms.schema import MobilityWorkConfig
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, Outcome

MAX_ITEMS = 10_000

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in the currency's lowest unit (EUR 2, JPY 0, KWD 3)."""
    code = currency.upper()
    if len(code) != 3 or not code.isalpha():
        raise ValueError(f"not an ISO 4217 currency code: {currency!r}")
    return _EXPONENTS.get(code, 2)


def to_minor_units(amount: Decimal | int | str | float, currency: str) -> int:
    """10 EUR -> 1000; 499.99 USD -> 49999; 1500 JPY -> 1500. Rounds half up to the lowest unit."""
    try:
        value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    scaled = value.scaleb(currency_exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(scaled)


class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class Money:
    amount: Decimal | int | str
    currency: str

    def to_json(self) -> dict[str, Any]:
        return {"amount": to_minor_units(self.amount, self.currency), "currency": self.currency.upper()}


def spare_part_id(value: str | dict[str, Any]) -> dict[str, Any]:
    """An article code / external reference in the typed identifier form."""
    if isinstance(value, dict):
        return value
    return {"type": "externalReference", "value": value}


def equipment_id(value: str | int | dict[str, Any], form: EquipmentForm = "external") -> str | dict[str, Any]:
    """The equipment_identifier schema, as for tasks (`cmms.equipment_identifier`: the item code's form)."""
    if isinstance(value, dict):
        return value
    return equipment_identifier(value, form)


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is UNSET:
        return
    out[key] = value.to_json() if isinstance(value, Money) else value


@dataclass(frozen=True)
class NewSparePart:
    external_reference: str
    name: str
    unit_price: Money
    location: str
    quantity: int
    description: str | None = None
    minimum_stock: int | None = None
    maximum_stock: int | None = None
    gtin: str | None = None
    cost_center: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "externalReference": self.external_reference,
            "name": self.name,
            "unitPrice": self.unit_price.to_json(),
            "currentStock": {"location": self.location, "quantity": self.quantity},
        }
        for key, value in (
            ("description", self.description),
            ("minimumStock", self.minimum_stock),
            ("maximumStock", self.maximum_stock),
            ("gtin", self.gtin),
            ("costCenter", self.cost_center),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class StockLevel:
    article: str  # article code (external reference)
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {"id": spare_part_id(self.article), "quantity": self.quantity}


@dataclass(frozen=True)
class TagChange:
    operation: str  # add | remove | replace
    values: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "values": list(self.values)}


@dataclass(frozen=True)
class CustomField:
    field: str
    value: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value}


@dataclass(frozen=True)
class SparePartUpdate:
    id: str
    name: str | _Unset | None = UNSET
    description: str | _Unset | None = UNSET
    external_reference: str | _Unset | None = UNSET
    unit_price: Money | _Unset | None = UNSET
    minimum_stock: float | _Unset | None = UNSET
    maximum_stock: float | _Unset | None = UNSET
    replenishment_lot: float | _Unset | None = UNSET
    gtin: str | _Unset | None = UNSET
    cost_center: str | _Unset | None = UNSET
    custom_fields: tuple[CustomField, ...] | _Unset = UNSET
    tags: tuple[TagChange, ...] | _Unset = UNSET

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": spare_part_id(self.id)}
        _put(out, "name", self.name)
        _put(out, "description", self.description)
        _put(out, "externalReference", self.external_reference)
        _put(out, "unitPrice", self.unit_price)
        _put(out, "minimumStock", self.minimum_stock)
        _put(out, "maximumStock", self.maximum_stock)
        _put(out, "replenishmentLot", self.replenishment_lot)
        _put(out, "gtin", self.gtin)
        _put(out, "costCenter", self.cost_center)
        if not isinstance(self.custom_fields, _Unset):
            out["customFields"] = [c.to_json() for c in self.custom_fields]
        if not isinstance(self.tags, _Unset):
            out["tags"] = [t.to_json() for t in self.tags]
        return out


@dataclass(frozen=True)
class NewEquipment:
    name: str
    description: str | None = None
    gtin: str | None = None
    cost_center: str | None = None
    item_code: str | None = None
    private: bool = True
    tags: tuple[str, ...] = ()
    custom_fields: tuple[CustomField, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key, value in (
            ("description", self.description),
            ("globalTradeItemNumber", self.gtin),
            ("costCenter", self.cost_center),
            ("itemCode", self.item_code),
        ):
            if value is not None:
                out[key] = value
        out["private"] = self.private
        if self.tags:
            out["tags"] = list(self.tags)
        if self.custom_fields:
            out["customFields"] = [c.to_json() for c in self.custom_fields]
        return out


@dataclass(frozen=True)
class EquipmentUpdate:
    id: str | int  # item code (str) or native id (int)
    name: str | _Unset | None = UNSET
    description: str | _Unset | None = UNSET
    gtin: str | _Unset | None = UNSET
    cost_center: str | _Unset | None = UNSET
    item_code: str | _Unset | None = UNSET
    tags: tuple[str, ...] | _Unset = UNSET
    custom_fields: tuple[CustomField, ...] | _Unset = UNSET

    def to_json(self, equipment_form: EquipmentForm = "external") -> dict[str, Any]:
        out: dict[str, Any] = {"id": equipment_id(self.id, equipment_form)}
        _put(out, "name", self.name)
        _put(out, "description", self.description)
        _put(out, "gtin", self.gtin)
        _put(out, "costCenter", self.cost_center)
        _put(out, "itemCode", self.item_code)
        if not isinstance(self.tags, _Unset):
            out["tags"] = list(self.tags)
        if not isinstance(self.custom_fields, _Unset):
            out["customFields"] = [c.to_json() for c in self.custom_fields]
        return out


@dataclass(frozen=True)
class NewLocation:
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class Relocation:
    """Move all the stock of a spare part to another (existing) storage location.

    The document's rendering collapses this request's field names; we send {"id", "from", "to"} with
    locations as {"name": ...} (see docs/mobility-work.md)."""

    article: str
    to: str
    from_: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": spare_part_id(self.article)}
        if self.from_ is not None:
            out["from"] = {"name": self.from_}
        out["to"] = {"name": self.to}
        return out


@dataclass
class BulkResult:
    """One bulk operation: one Delivery per chunk request sent."""

    path: str
    items: int
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.deliveries) and all(d.outcome is Outcome.DONE for d in self.deliveries)

    @property
    def requests(self) -> int:
        return len(self.deliveries)

    def failures(self) -> list[tuple[int, Delivery]]:
        """(chunk index, delivery) of every chunk that was not accepted."""
        return [(i, d) for i, d in enumerate(self.deliveries) if d.outcome is not Outcome.DONE]


def payload(items: Iterable[Any], equipment_form: EquipmentForm = "external") -> list[dict[str, Any]]:
    """The JSON items of a request, as sent (and as `mw-gateway bulk --dry-run` prints them): an equipment
    update's item code takes the form of `cmms.equipment_identifier`."""
    return [
        item.to_json(equipment_form) if isinstance(item, EquipmentUpdate) else item.to_json()
        for item in items
    ]


def chunks(items: Sequence[Any], size: int = MAX_ITEMS) -> Iterable[Sequence[Any]]:
    if size < 1 or size > MAX_ITEMS:
        raise ValueError(f"chunk size must be within 1..{MAX_ITEMS}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MobilityWorkBulk:
    """The bulk endpoints. A chunk that gets RETRY is retried `retries` times (honouring Retry-After,
    capped at `max_wait_s`); PAUSE (401/403) stops the operation; DEAD (400) is kept, the next chunk goes on.
    """

    def __init__(
        self,
        config: MobilityWorkConfig,
        *,
        gateway_id: str,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        chunk_size: int = MAX_ITEMS,
        retries: int = 2,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
    ) -> None:
        if not 1 <= chunk_size <= MAX_ITEMS:
            raise ValueError(f"chunk_size must be within 1..{MAX_ITEMS}")
        self.chunk_size = chunk_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._clock = clock or SystemClock()
        self._equipment_form: EquipmentForm = config.equipment_identifier
        self._client = make_mw_client(config, gateway_id=gateway_id, transport=transport)

    async def __aenter__(self) -> MobilityWorkBulk:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def payload(self, items: Iterable[Any]) -> list[dict[str, Any]]:
        """What `_send` sends for these items (chunked)."""
        return payload(items, self._equipment_form)

    async def create_spare_parts(self, items: Sequence[NewSparePart]) -> BulkResult:
        return await self._send("POST", "/partners/v1/spare-parts", items)

    async def update_stock(self, items: Sequence[StockLevel]) -> BulkResult:
        return await self._send("PUT", "/partners/v1/spare-parts/stock", items)

    async def update_spare_parts(self, items: Sequence[SparePartUpdate]) -> BulkResult:
        return await self._send("POST", "/partners/v1/spare-parts/attributes", items)

    async def create_equipment(self, items: Sequence[NewEquipment]) -> BulkResult:
        return await self._send("POST", "/partners/v1/equipments", items)

    async def update_equipment(self, items: Sequence[EquipmentUpdate]) -> BulkResult:
        return await self._send("POST", "/partners/v1/equipment/attributes", items)

    async def create_locations(self, items: Sequence[NewLocation]) -> BulkResult:
        return await self._send("POST", "/partners/v1/locations/create/bulk", items)

    async def relocate_spare_parts(self, items: Sequence[Relocation]) -> BulkResult:
        return await self._send("POST", "/partners/v1/spare-parts/relocate/bulk", items)

    async def _send(self, method: str, path: str, items: Sequence[Any]) -> BulkResult:
        body = self.payload(items)
        result = BulkResult(path=path, items=len(body))
        for chunk in chunks(body, self.chunk_size):
            delivery = await self._send_chunk(method, path, list(chunk))
            result.deliveries.append(delivery)
            if delivery.outcome is Outcome.PAUSE:
                break
        return result

    async def _send_chunk(self, method: str, path: str, chunk: list[Any]) -> Delivery:
        attempt = 0
        while True:
            request = {"method": method, "path": path, "items": len(chunk)}
            started = time.monotonic()
            try:
                response = await self._client.request(method, path, json=chunk)
            except httpx.HTTPError as exc:
                delivery = http.delivery_from_exception(
                    exc, request=request, elapsed_s=time.monotonic() - started
                )
            else:
                delivery = http.delivery_from_response(
                    response, request=request, elapsed_s=time.monotonic() - started, now=self._clock.now()
                )
            if delivery.outcome is not Outcome.RETRY or attempt >= self.retries:
                return delivery
            attempt += 1
            wait = delivery.retry_after_s if delivery.retry_after_s is not None else self.backoff_s * attempt
            await asyncio.sleep(min(wait, self.max_wait_s))
