"""The receiving side of webhooks, without HTTP: verify, parse (gateway/web/read_*.py), deduplicate, record
through the ledger writer, then publish what the engine must see.

`receive_mobility_work(headers, body)` / `receive_servicemobility(headers, body)` take the request headers and
the raw body bytes and return the status and JSON to answer. The HTTP routes (gateway/web/webhooks.py) are
thin wrappers, and a relay (a box on the plant network that fetches webhooks from an internet-facing
collector, e.g. over MQTT) feeds the very same methods with the original headers and bytes: the signature,
the nonce and the idempotency key are checked exactly as for a direct delivery.

The ledger writer of a running gateway records the event through the engine consumer, which commits the
rule state a closed task changes (`rearm: on_completion`) in the same transaction (gateway/runtime/
pipeline.py): the receiver never calls the engine. Stock levels become `cmms.stock.<article>` samples on the
engine's input queue.

Answers: 200 once the event is committed (or was already: a duplicate is acknowledged, never stored twice);
400 malformed JSON, not an object, or no `_event`; 401 bad or missing signature when a secret is set;
413 body over `http.max_body_bytes`; 503 when the state database cannot take the write (the CMMS retries).
Never a 500 for bad input.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.inputs import EngineInput
from gateway.core.samples import Quality, Sample
from gateway.core.views import LedgerWriter
from gateway.core.webhooks import Incoming, LedgerOps, NonceReplayed, NonceUse, RecordResult
from gateway.web.read_json import BadRequest, canonical_hash, parse_json_object, text
from gateway.web.read_mw import KNOWN_EVENTS, parse_mobility_work
from gateway.web.verify import JWTVerifier, MWSignatureVerifier, Rejected

log = logging.getLogger("gateway.web.webhooks_mw")

SOURCE = "mobility_work"
STOCK_SIGNAL_PREFIX = "cmms.stock."
# Test hook (docs/webhooks.md): hold the answer this many seconds AFTER the commit, so a test can kill the
# process between "stored" and "answered". Never set it in production.
HOLD_ENV = "MW_GATEWAY_TEST_HOLD_AFTER_COMMIT"


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]

    def response(self) -> Response:
        return JSONResponse(self.body, status_code=self.status)


class WebhookReceiver:
    """Verify, deduplicate, persist, then tell the engine. HTTP routes and relays share it."""

    def __init__(
        self,
        ledger: LedgerWriter,
        http: Any,  # gateway.config.HttpSection
        *,
        clock: Clock,
        publish_input: Callable[[EngineInput], None] | None = None,
        hold_after_commit: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.max_body_bytes: int = http.max_body_bytes
        self.max_buffered_bytes: int = getattr(http, "max_buffered_bytes", 16 * 1_048_576)
        secrets = tuple(
            s.get_secret_value()
            for s in (http.webhook_secret, http.webhook_secret_previous)
            if s is not None and s.get_secret_value()
        )
        self.mw_verifier = MWSignatureVerifier(
            secrets, template=http.signature_template, tolerance=http.signature_tolerance
        )
        self.jwt_verifier = JWTVerifier.from_http(http)
        self.publish_input = publish_input
        if hold_after_commit is None and os.environ.get(HOLD_ENV):
            try:
                hold_after_commit = float(os.environ[HOLD_ENV])
            except ValueError:
                hold_after_commit = None
        self.hold_after_commit = hold_after_commit

    # ------------------------------------------------------------------ Mobility Work

    async def receive_mobility_work(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> Reply:
        """`now`: when the request was received, if not now (a relayed webhook: when the relay took it)."""
        now = self.clock.now() if now is None else now
        try:
            nonce = self.mw_verifier.verify(header(headers, "x-mw-signature"), body, now=now)
        except Rejected as exc:
            return self.reject(401, str(exc))
        try:
            payload = parse_json_object(body)
        except BadRequest as exc:
            return self.reject(400, str(exc))
        event = payload.get("_event")
        if not isinstance(event, str) or not event.strip():
            return self.reject(400, "missing _event: not a Mobility Work webhook")
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

    async def receive_servicemobility(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> Reply:
        from gateway.web.read_servicemobility import parse_envelope

        now = self.clock.now() if now is None else now
        try:
            self.jwt_verifier.verify(header(headers, "x-access-token"), now=now)
        except Rejected as exc:
            return self.reject(401, str(exc))
        try:
            incoming = parse_envelope(parse_json_object(body), body)
        except BadRequest as exc:
            return self.reject(400, str(exc))
        return await self._commit(incoming, None)

    # ------------------------------------------------------------------ shared

    async def _commit(self, incoming: Incoming, nonce: NonceUse | None) -> Reply:
        try:
            result = await self.ledger.record(incoming, nonce=nonce)
        except NonceReplayed:
            return self.reject(401, "X-MW-Signature nonce already used")
        except (StoreError, sqlite3.Error) as exc:
            log.error("webhook %s not stored (the sender will retry): %s", incoming.event, exc)
            return Reply(503, {"error": "the event could not be stored; retry later"})
        if not result.stored:
            log.debug("webhook %s %s: duplicate delivery, acknowledged", incoming.source, incoming.event)
            return Reply(200, {"status": "duplicate", "event": incoming.event})
        log.debug("webhook %s %s stored (#%s)", incoming.source, incoming.event, result.event_id)
        self._notify(result)
        if self.hold_after_commit:
            await asyncio.sleep(self.hold_after_commit)
        return Reply(200, {"status": "stored", "event": incoming.event, "id": result.event_id})

    def _notify(self, result: RecordResult) -> None:
        now = self.clock.now()
        if self.publish_input is not None:
            for st in result.stock:
                if st.quantity is None:
                    continue
                try:
                    self.publish_input(
                        Sample(
                            signal=STOCK_SIGNAL_PREFIX + st.article,
                            value=st.quantity,
                            ts=now,
                            quality=Quality.GOOD,
                        )
                    )
                except Exception:
                    log.exception("stock signal %s%s not submitted", STOCK_SIGNAL_PREFIX, st.article)

    def reject(self, status: int, reason: str) -> Reply:
        log.debug("webhook refused (%d): %s", status, reason)
        return Reply(status, {"error": reason})


def header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
