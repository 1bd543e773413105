"""`mw-gateway relay`: the fleet's internet-facing webhook intake (docs/fleet.md).

For every Mobility Work / ServiceMobility webhook, at the gateway's own paths:
1. rate limit (token bucket, all senders together) -> 429 with Retry-After;
2. body cap -> 413 (read as a stream: Content-Length is not trusted);
3. X-MW-Signature (HMAC + timestamp tolerance) or the ServiceMobility JWT -> 401 before ANY bus traffic;
4. route: `metadata.gateway` of the task (same parser as the gateway) -> `<name>.webhooks.<gateway>`;
   an event without one (stock events, ServiceMobility) -> every known gateway's subject (relay.yaml
   `gateways:` plus every gateway with a status entry);
5. publish the original headers and raw body to JetStream, `Nats-Msg-Id` = `<gateway>:<idempotency key>`;
6. answer 200 only when JetStream acknowledged every publish (a replicated stream acknowledges once a quorum
   stored it); any failure -> 503, and Mobility Work delivers again.

Nonces: the relay is stateless and does not remember nonces. It checks the signature and the timestamp
window; a replay inside the window passes the relay, is de-duplicated by Nats-Msg-Id (same idempotency key)
and, past that, refused by the gateway, which re-verifies the signature and keeps the nonce in its ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.fleet import names
from gateway.fleet.config import RelayConfig
from gateway.fleet.status import read_fleet, render_html
from gateway.web.read_json import BadRequest, canonical_hash, parse_json_object, text
from gateway.web.read_mw import parse_mobility_work
from gateway.web.verify import JWTVerifier, MWSignatureVerifier, Rejected

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

MW_PATH = "/webhooks/mobility-work"
SM_PATH = "/webhooks/servicemobility/InventoryUsage"
PATH_HEADER = "Mw-Path"
HEADER_PREFIX = "Mw-H-"
MSG_ID = "Nats-Msg-Id"
_HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade", "te"}
UNROUTED = "_unrouted"  # an event for no known gateway is kept here (retention applies), never dropped


def encode_headers(headers: Mapping[str, str], path: str, msg_id: str) -> dict[str, str]:
    out = {PATH_HEADER: path, MSG_ID: msg_id}
    for key, value in headers.items():
        if key.lower() in _HOP_BY_HOP or "\r" in value or "\n" in value:
            continue
        out[HEADER_PREFIX + key.lower()] = value
    return out


def decode_headers(headers: Mapping[str, str] | None) -> tuple[dict[str, str], str]:
    """(the original HTTP headers, the webhook path) of a relayed message."""
    original: dict[str, str] = {}
    path = MW_PATH
    for key, value in (headers or {}).items():
        if key == PATH_HEADER:
            path = value
        elif key.startswith(HEADER_PREFIX):
            original[key[len(HEADER_PREFIX) :]] = value
    return original, path


def msg_id(gateway: str, key: str) -> str:
    full = f"{gateway}:{key}"
    return full if len(full) <= 200 else f"{gateway}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class RelayStats:
    counts: dict[str, int] = field(default_factory=dict)
    publish_seconds: list[float] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


class Relay:
    def __init__(self, config: RelayConfig, nc: Client, js: JetStreamContext) -> None:
        self.config = config
        self.nc, self.js = nc, js
        self.fleet = config.fleet.name
        self.stream = names.stream(self.fleet)
        self.mw = MWSignatureVerifier(
            config.secrets(), template=config.signature_template, tolerance=config.signature_tolerance
        )
        key = config.servicemobility_jwt_key
        self.jwt = JWTVerifier(
            key.get_secret_value() if key else None,
            algorithms=config.servicemobility_jwt_algorithms,
            audience=config.servicemobility_jwt_audience,
            issuer=config.servicemobility_jwt_issuer,
            max_age=config.servicemobility_jwt_max_age,
        )
        self.bucket = TokenBucket(config.rate_limit, config.rate_burst)
        self.stats = RelayStats()
        self.status_kv: KeyValue | None = None
        self._known: tuple[float, tuple[str, ...]] = (0.0, ())

    # ------------------------------------------------------------------ routing

    async def known_gateways(self) -> tuple[str, ...]:
        """relay.yaml `gateways:` plus every gateway with a status entry (refreshed every 10 s)."""
        at, cached = self._known
        if time.monotonic() - at < 10 and cached:
            return cached
        seen: set[str] = set(self.config.gateways)
        kv = await self._status()
        if kv is not None:
            with contextlib.suppress(Exception):  # no entry yet, or not allowed to read: the static list
                seen.update(await kv.keys())
        known = tuple(sorted(names.token(g) for g in seen))
        self._known = (time.monotonic(), known)
        return known

    async def route(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[list[str], str]:
        """(gateways, idempotency key). Raises Rejected (401) or BadRequest (400)."""
        if path == SM_PATH:
            self.jwt.verify(_header(headers, "x-access-token"))
            envelope = parse_json_object(body)
            event_id = text(envelope.get("id"))
            if not event_id:
                raise BadRequest("missing id: not a ServiceMobility webhook envelope")
            return list(await self.known_gateways()), f"sm:{event_id}"
        self.mw.verify(_header(headers, "x-mw-signature"), body, now=time.time())
        payload = parse_json_object(body)
        event = payload.get("_event")
        if not isinstance(event, str) or not event.strip():
            raise BadRequest("missing _event: not a Mobility Work webhook")
        idem = text(payload.get("_idempotencyKey"))
        key = f"{event}:{idem}" if idem else canonical_hash(payload)
        try:
            _, _, ops = parse_mobility_work(payload)
            targets = sorted({t.gateway for t in ops.tasks if t.gateway})
        except Exception:  # a parser bug must not drop the event: it goes to every gateway
            log.exception("relay: webhook %s could not be interpreted; sent to every gateway", event)
            targets = []
        return (targets or list(await self.known_gateways())), key

    # ------------------------------------------------------------------ HTTP

    async def _read_body(self, request: Request) -> bytes | None:
        cap = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def webhook(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        wait = self.bucket.take()
        if wait > 0:
            self.stats.add("rate_limited")
            return JSONResponse(
                {"error": "too many webhooks; retry later"},
                status_code=429,
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        try:
            body = await self._read_body(request)
        except ClientDisconnect:
            self.stats.add("bad_request")
            return JSONResponse({"error": "the request body was cut short"}, status_code=400)
        if body is None:
            self.stats.add("too_large")
            return JSONResponse({"error": f"body over {self.config.max_body_bytes} bytes"}, status_code=413)
        return await self.relay(path, request.headers, body)

    async def relay(self, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Verify, route, publish, answer. The HTTP-free core (benchmarks and tests call it directly)."""
        try:
            gateways, key = await self.route(path, headers, body)
        except Rejected as exc:
            self.stats.add("rejected")
            return JSONResponse({"error": str(exc)}, status_code=401)
        except BadRequest as exc:
            self.stats.add("bad_request")
            return JSONResponse({"error": str(exc)}, status_code=400)
        started = time.monotonic()
        duplicates = 0
        try:
            acks = await asyncio.gather(
                *(self._publish(gw, path, headers, body, key) for gw in gateways or [UNROUTED])
            )
        except Exception as exc:
            self.stats.add("unavailable")
            log.warning("relay: publish not acknowledged (%s); answering 503, the sender retries", exc)
            return JSONResponse(
                {"error": "the fleet bus did not take the event; retry later"}, status_code=503
            )
        duplicates = sum(1 for a in acks if a)
        self.stats.publish_seconds.append(time.monotonic() - started)
        del self.stats.publish_seconds[:-1000]
        self.stats.add("published")
        status = "duplicate" if acks and duplicates == len(acks) else "published"
        return JSONResponse({"status": status, "gateways": gateways or [UNROUTED]})

    async def _publish(
        self, gateway: str, path: str, headers: Mapping[str, str], body: bytes, key: str
    ) -> bool:
        ack = await self.js.publish(
            names.subject(self.fleet, gateway),
            body,
            timeout=self.config.fleet.request_timeout,
            stream=self.stream,
            headers=encode_headers(headers, path, msg_id(gateway, key)),
        )
        return bool(ack.duplicate)

    def _authorized(self, request: Request) -> bool:
        token = self.config.auth_token
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode())

    async def healthz(self, request: Request) -> Response:
        ok = self.nc.is_connected
        return JSONResponse({"status": "ok" if ok else "nats unreachable"}, status_code=200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("unauthorized\n", status_code=401)
        lines = [
            "# HELP mw_relay_webhooks_total Webhooks received by the relay, by outcome.",
            "# TYPE mw_relay_webhooks_total counter",
        ]
        for outcome, n in sorted(self.stats.counts.items()):
            lines.append(f'mw_relay_webhooks_total{{outcome="{outcome}"}} {n}')
        lines += [
            "# HELP mw_relay_nats_connected 1 while the relay is connected to NATS.",
            "# TYPE mw_relay_nats_connected gauge",
            f"mw_relay_nats_connected {1 if self.nc.is_connected else 0}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def _status(self) -> KeyValue | None:
        """The status bucket (opened when first needed: the gateways create it)."""
        if self.status_kv is None:
            with contextlib.suppress(Exception):
                self.status_kv = await self.js.key_value(names.status_bucket(self.fleet))
        return self.status_kv

    async def fleet_rows(self) -> list[dict[str, Any]]:
        kv = await self._status()
        if kv is None:
            return []
        try:
            return await read_fleet(kv)
        except Exception as exc:
            log.debug("relay: fleet status not readable: %s", exc)
            return []

    async def status_page(self, request: Request) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("unauthorized\n", status_code=401)
        rows = await self.fleet_rows()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.stats.counts.items())) or "none yet"
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>mw-gateway relay</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}"
            ".stale{color:#a00}</style></head><body>"
            f"<h1>Relay — fleet {self.fleet}</h1><p>NATS: {'connected' if self.nc.is_connected else 'away'}"
            f"; webhooks: {counts}</p><h2>Gateways</h2>{render_html(rows)}</body></html>"
        )
        return HTMLResponse(page)

    async def api_fleet(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({"gateways": await self.fleet_rows()})

    def app(self) -> Starlette:
        routes = [
            Route(p, self.webhook, methods=["POST"])
            for base in (MW_PATH, SM_PATH)
            for p in (base, base + "/")
        ]
        routes += [
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route("/api/fleet", self.api_fleet),
            Route("/", self.status_page),
        ]
        return Starlette(routes=routes)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


@contextlib.asynccontextmanager
async def open_relay(config: RelayConfig) -> AsyncIterator[Relay]:
    """Connect, make sure the stream exists, and yield the relay (the caller serves `relay.app()`)."""
    from gateway.fleet.bus import connect, ensure_stream

    nc = await connect(config.fleet, name="mw-relay")
    try:
        js = nc.jetstream(timeout=config.fleet.request_timeout)
        with contextlib.suppress(Exception):  # a publish-only account may not manage streams
            await ensure_stream(js, config.fleet)
        yield Relay(config, nc, js)
    finally:
        await nc.close()


async def serve(config: RelayConfig) -> None:
    import uvicorn

    async with open_relay(config) as relay:
        server = uvicorn.Server(
            uvicorn.Config(
                relay.app(),
                host=config.host,
                port=config.port,
                ssl_certfile=config.tls_certificate,
                ssl_keyfile=config.tls_key,
                log_level="warning",
                lifespan="off",
            )
        )
        log.info("relay listening on %s (fleet %s)", config.listen, config.fleet.name)
        await server.serve()
