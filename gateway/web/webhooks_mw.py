"""`POST /webhooks/mobility-work`: Mobility Work webhooks, and the receiving side shared with ServiceMobility.

`WebhookReceiver` is the receiving side without HTTP: `receive_mobility_work(headers, body)` takes the request
headers and the raw body bytes and returns the status and JSON to answer. The Starlette routes are thin
wrappers around it, and a relay (a box on the plant network that fetches webhooks from an internet-facing
collector, e.g. over MQTT) feeds the very same method with the original headers and bytes: the signature,
the nonce and the idempotency key are checked exactly as for a direct delivery.

Answers: 200 once the event is committed (or was already: a duplicate is acknowledged, never stored twice);
400 malformed JSON, not an object, or no `_event`; 401 bad or missing signature when a secret is set;
413 body over `http.max_body_bytes`; 503 when the state database cannot take the write (the CMMS retries).
Never a 500 for bad input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.samples import Quality, Sample
from gateway.core.webhooks import (
    ActivityAdd,
    Incoming,
    LedgerOps,
    Movement,
    NonceReplayed,
    NonceUse,
    RecordResult,
    StockUpdate,
    TaskClosed,
    TaskUpdate,
)
from gateway.web.verify import JWTVerifier, MWSignatureVerifier, Rejected

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config import HttpSection
    from gateway.store import Store

log = logging.getLogger(__name__)

SOURCE = "mobility_work"
STOCK_SIGNAL_PREFIX = "cmms.stock."
# Test hook (docs/webhooks.md): hold the answer this many seconds AFTER the commit, so a test can kill the
# process between "stored" and "answered". Never set it in production.
HOLD_ENV = "MW_GATEWAY_TEST_HOLD_AFTER_COMMIT"

KNOWN_EVENTS = (
    "TaskWasScheduled",
    "TaskWasStarted",
    "TaskWasCompleted",
    "TaskWasCanceled",
    "ActivityWasAddedOnTask",
    "SparePartWasConsumed",
    "SparePartConsumptionWasCanceled",
    "SparePartWasRestocked",
    "SparePartWasManuallyRecounted",
    "SparePartWasOutOfStock",
    "SparePartStockWasUnderMinThreshold",
)


class BadRequest(Exception):
    """Answer 400 with this message."""


class TooLarge(Exception):
    """Answer 413."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]

    def response(self) -> Response:
        return JSONResponse(self.body, status_code=self.status)


# ---------------------------------------------------------------------- tolerant readers of webhook JSON


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def timestamp(value: Any) -> float | None:
    """ISO 8601 (the documents' `2021-11-02T16:32:38+00:00`, or with Z) to Unix seconds; naive means UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def person(value: Any) -> str | None:
    data = obj(value)
    name = " ".join(p for p in (text(data.get("firstName")), text(data.get("lastName"))) if p)
    return name or text(data.get("userId")) or text(data.get("id")) or text(data.get("email"))


def parse_json_object(body: bytes) -> dict[str, Any]:
    def _reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def canonical_hash(data: Any) -> str:
    try:
        encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError):
        encoded = repr(data)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------- Mobility Work payload -> ledger


_TASK_SECTIONS = {"TaskWasScheduled": "scheduled", "TaskWasStarted": "started", "TaskWasCanceled": "canceled"}


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


def parse_mobility_work(payload: dict[str, Any]) -> tuple[str | None, bool, LedgerOps]:
    """(task id, understood, ledger operations) for one Mobility Work webhook. Never raises for odd input."""
    event = str(payload.get("_event"))
    if event in _TASK_SECTIONS:
        section = _TASK_SECTIONS[event]
        task_id = text(payload.get("taskId")) or text(payload.get("id"))
        if not task_id:
            return None, False, LedgerOps()
        step = obj(payload.get(section))
        return (
            task_id,
            True,
            LedgerOps(
                tasks=(
                    _task_update(
                        task_id,
                        payload.get("metadata"),
                        state=section,
                        at=timestamp(step.get("on")),
                        by=person(step.get("by")),
                        equipment=payload.get("associatedTo"),
                    ),
                )
            ),
        )
    if event == "TaskWasCompleted":
        task_id = text(payload.get("id")) or text(payload.get("legacyId")) or text(payload.get("taskId"))
        if not task_id:
            return None, False, LedgerOps()
        return (
            task_id,
            True,
            LedgerOps(
                tasks=(
                    _task_update(
                        task_id,
                        payload.get("metadata"),
                        state="completed",
                        at=timestamp(payload.get("doneAt")),
                        by=person(payload.get("initiator")),
                        equipment=payload.get("associatedTo"),
                    ),
                )
            ),
        )
    if event == "ActivityWasAddedOnTask":
        task = obj(payload.get("task"))
        task_id = text(task.get("taskId")) or text(task.get("id"))
        activity = obj(payload.get("activity"))
        activity_id = text(activity.get("activityId")) or text(payload.get("_idempotencyKey"))
        if not task_id or not activity_id:
            return task_id, False, LedgerOps()
        return (
            task_id,
            True,
            LedgerOps(
                tasks=(_task_update(task_id, task.get("metadata"), equipment=payload.get("equipment")),),
                activities=(
                    ActivityAdd(
                        task_id=task_id,
                        activity_id=activity_id,
                        description=text(activity.get("description")),
                        minutes=number(activity.get("timeSpentInMinutes")),
                        at=timestamp(activity.get("completedAt")),
                        reporter=person(activity.get("reporter")),
                    ),
                ),
            ),
        )
    if event in ("SparePartWasConsumed", "SparePartConsumptionWasCanceled"):
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
        stock: tuple[StockUpdate, ...] = ()
        current = number(part.get("stock"))
        if current is not None:
            stock = (
                StockUpdate(
                    article=article,
                    event=event,
                    quantity=current,
                    spare_part_id=text(part.get("sparePartId")),
                    name=text(part.get("name")),
                ),
            )
        if event == "SparePartWasConsumed":
            kind, quantity = "consumed", number(obj(payload.get("consumed")).get("quantity"))
        else:
            # No document has a complete sample of this event: the canceled quantity is looked for in
            # sparePart.quantity (the simulator's choice), then canceled/consumption/consumed.quantity.
            kind, quantity = "canceled", None
            for candidate in (
                part,
                obj(payload.get("canceled")),
                obj(payload.get("consumption")),
                obj(payload.get("consumed")),
                payload,
            ):
                quantity = number(candidate.get("quantity"))
                if quantity is not None:
                    break
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
    if event in ("SparePartWasRestocked", "SparePartWasManuallyRecounted"):
        article, part = _spare_part(payload)
        if not article:
            return None, False, LedgerOps()
        change = obj(payload.get("restocked" if event == "SparePartWasRestocked" else "recounted"))
        current = number(part.get("stock"))
        if current is None and event == "SparePartWasRestocked":
            prev, qty = number(change.get("previousStock")), number(change.get("quantity"))
            current = prev + qty if prev is not None and qty is not None else None
        if current is None and event == "SparePartWasManuallyRecounted":
            current = number(change.get("quantity"))
        return (
            None,
            True,
            LedgerOps(
                stock=(
                    StockUpdate(
                        article=article,
                        event=event,
                        quantity=current,
                        spare_part_id=text(part.get("sparePartId")),
                        name=text(part.get("name")),
                    ),
                )
            ),
        )
    if event in ("SparePartWasOutOfStock", "SparePartStockWasUnderMinThreshold"):
        article, part = _spare_part(payload)
        if not article:
            return None, False, LedgerOps()
        level = obj(payload.get("stock"))
        threshold = number(level.get("threshold"))
        current = 0.0 if event == "SparePartWasOutOfStock" else number(level.get("value"))
        return (
            None,
            True,
            LedgerOps(
                stock=(
                    StockUpdate(
                        article=article,
                        event=event,
                        quantity=current,
                        threshold=threshold,
                        spare_part_id=text(part.get("sparePartId")),
                        name=text(part.get("name")),
                    ),
                )
            ),
        )
    return None, False, LedgerOps()


# ---------------------------------------------------------------------- the receiving side


class WebhookReceiver:
    """Verify, deduplicate, persist, then tell the engine. HTTP routes and relays share it."""

    def __init__(
        self,
        store: Store,
        http: HttpSection,
        *,
        clock: Clock,
        on_sample: Callable[[Sample], None] | None = None,
        on_task_closed: Callable[[TaskClosed], None] | None = None,
        hold_after_commit: float | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_body_bytes = http.max_body_bytes
        secrets = tuple(
            s.get_secret_value()
            for s in (http.webhook_secret, http.webhook_secret_previous)
            if s is not None and s.get_secret_value()
        )
        self.mw_verifier = MWSignatureVerifier(
            secrets, template=http.signature_template, tolerance=http.signature_tolerance
        )
        self.jwt_verifier = JWTVerifier.from_http(http)
        self.on_sample = on_sample
        self.on_task_closed = on_task_closed
        if hold_after_commit is None and os.environ.get(HOLD_ENV):
            try:
                hold_after_commit = float(os.environ[HOLD_ENV])
            except ValueError:
                hold_after_commit = None
        self.hold_after_commit = hold_after_commit
        self.counts: dict[str, int] = {"stored": 0, "duplicate": 0, "rejected": 0}

    # ------------------------------------------------------------------ Mobility Work

    async def receive_mobility_work(self, headers: Mapping[str, str], body: bytes) -> Reply:
        now = self.clock.now()
        try:
            nonce = self.mw_verifier.verify(_header(headers, "x-mw-signature"), body, now=now)
        except Rejected as exc:
            return self._reject(401, str(exc))
        try:
            payload = parse_json_object(body)
        except BadRequest as exc:
            return self._reject(400, str(exc))
        event = payload.get("_event")
        if not isinstance(event, str) or not event.strip():
            return self._reject(400, "missing _event: not a Mobility Work webhook")
        # `_idempotencyKey` is the webhook's unique id; scoped by event so that two event types can never
        # shadow each other (the documents give every sample the same key). No key: the content decides.
        idem = text(payload.get("_idempotencyKey"))
        key = f"{event}:{idem}" if idem else canonical_hash(payload)
        try:
            task_id, known, ops = parse_mobility_work(payload)
        except Exception:  # a bug of ours must not lose the event: keep it verbatim, unapplied
            log.exception("webhook %s could not be interpreted; stored as received", event)
            task_id, known, ops = None, False, LedgerOps()
        known = known and event in KNOWN_EVENTS
        incoming = Incoming(
            source=SOURCE,
            event=event[:200],
            dedupe_key=key[:500],
            body=body,
            task_id=task_id,
            known=known,
            ops=ops,
        )
        return await self._commit(incoming, nonce)

    # ------------------------------------------------------------------ ServiceMobility

    async def receive_servicemobility(self, headers: Mapping[str, str], body: bytes) -> Reply:
        from gateway.web.webhooks_servicemobility import parse_envelope

        try:
            self.jwt_verifier.verify(_header(headers, "x-access-token"))
        except Rejected as exc:
            return self._reject(401, str(exc))
        try:
            incoming = parse_envelope(parse_json_object(body), body)
        except BadRequest as exc:
            return self._reject(400, str(exc))
        return await self._commit(incoming, None)

    # ------------------------------------------------------------------ shared

    async def _commit(self, incoming: Incoming, nonce: NonceUse | None) -> Reply:
        try:
            result = await self.store.ledger.record(incoming, nonce=nonce)
        except NonceReplayed:
            return self._reject(401, "X-MW-Signature nonce already used")
        except (StoreError, sqlite3.Error) as exc:
            log.error("webhook %s not stored (the sender will retry): %s", incoming.event, exc)
            return Reply(503, {"error": "the event could not be stored; retry later"})
        if not result.stored:
            self.counts["duplicate"] += 1
            log.debug("webhook %s %s: duplicate delivery, acknowledged", incoming.source, incoming.event)
            return Reply(200, {"status": "duplicate", "event": incoming.event})
        self.counts["stored"] += 1
        log.debug("webhook %s %s stored (#%s)", incoming.source, incoming.event, result.event_id)
        self._notify(result)
        if self.hold_after_commit:
            await asyncio.sleep(self.hold_after_commit)
        return Reply(200, {"status": "stored", "event": incoming.event, "id": result.event_id})

    def _notify(self, result: RecordResult) -> None:
        now = self.clock.now()
        if self.on_sample is not None:
            for st in result.stock:
                if st.quantity is None:
                    continue
                try:
                    self.on_sample(
                        Sample(
                            signal=STOCK_SIGNAL_PREFIX + st.article,
                            value=st.quantity,
                            ts=now,
                            quality=Quality.GOOD,
                        )
                    )
                except Exception:
                    log.exception("stock signal %s%s not submitted", STOCK_SIGNAL_PREFIX, st.article)
        if self.on_task_closed is not None:
            for closed in result.closed:
                try:
                    self.on_task_closed(closed)
                except Exception:
                    log.exception("task_closed(%s, %s) failed", closed.rule_id, closed.outcome)

    def _reject(self, status: int, reason: str) -> Reply:
        self.counts["rejected"] += 1
        log.debug("webhook refused (%d): %s", status, reason)
        return Reply(status, {"error": reason})

    # ------------------------------------------------------------------ HTTP

    async def read_body(self, request: Request) -> bytes:
        """The raw body, read as a stream and refused past max_body_bytes (whatever Content-Length says)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            raise TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _http(self, request: Request, handler: Callable[[Mapping[str, str], bytes], Any]) -> Response:
        try:
            body = await self.read_body(request)
        except TooLarge:
            return self._reject(413, f"body over {self.max_body_bytes} bytes").response()
        except ClientDisconnect:
            return self._reject(400, "the request body was cut short").response()
        reply: Reply = await handler(request.headers, body)
        return reply.response()

    async def mobility_work_endpoint(self, request: Request) -> Response:
        return await self._http(request, self.receive_mobility_work)

    async def servicemobility_endpoint(self, request: Request) -> Response:
        return await self._http(request, self.receive_servicemobility)

    def routes(self) -> list[Route]:
        mw, sm = "/webhooks/mobility-work", "/webhooks/servicemobility/InventoryUsage"
        return [
            Route(mw, self.mobility_work_endpoint, methods=["POST"]),
            Route(mw + "/", self.mobility_work_endpoint, methods=["POST"]),
            Route(sm, self.servicemobility_endpoint, methods=["POST"]),
            Route(sm + "/", self.servicemobility_endpoint, methods=["POST"]),
        ]


def receiver_for(gw: Gateway) -> WebhookReceiver:
    """The receiver of a running gateway: stock signals to the engine's queue, closed tasks to the engine."""

    def task_closed(closed: TaskClosed) -> None:
        gw.engine.task_closed(closed.rule_id, closed.outcome, closed.at)

    return WebhookReceiver(
        gw.store, gw.config.http, clock=gw.clock, on_sample=gw.submit, on_task_closed=task_closed
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


__all__ = ["JWTVerifier", "Reply", "WebhookReceiver", "parse_mobility_work"]
