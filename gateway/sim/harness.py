"""What every HTTP simulator shares: one fault vocabulary, a record of every call, the common `/_sim/` routes.

Faults (`Fault.kind`), for the next `count` matching calls (default 1) or for each with a seeded
`probability`; a call matches when its path contains `path` (every call when empty) and, when `method` is
set, its method is that one. The first matching fault in the plan applies:

    latency       wait `delay_s` (default 0.2 s), then answer normally
    http_5xx      answer `status` (default 503) without doing anything            (alias: error)
    http_429      answer 429 with `Retry-After: <retry_after>` (seconds or an HTTP date; None: no header)
                  without doing anything                                          (alias: rate_limit)
    timeout       do nothing and answer nothing until the client gives up (or `delay_s`, default 30 s,
                  then 504)
    reset         drop the connection with a TCP RST, without doing anything
    commit_lost   do the work (it IS committed), then answer nothing: the connection is closed at once, or
                  with `delay_s` the answer is held that long and replaced by a 504, as a proxy would
    deep_json     answer `status` (default 503) with a JSON body of 100,000 nested arrays, without doing
                  anything (a parser that recurses must not crash on it)

JSON form (`POST /_sim/faults`): `{"kind": "http_429", "count": 2, "retry_after": "3"}` or a list of those;
`mode` is accepted for `kind`, `latency_s`/`hang_s` for `delay_s`.

The control API every simulator has (JSON, never faulted, never recorded):

    GET /_sim/state      the simulator's own snapshot
    GET /_sim/requests   every call received: seq, at, method, path, query, headers, body, json, text,
                         status (null when no answer was sent), fault, client
    GET/POST/DELETE /_sim/faults   list / set (`?append=1` adds) / clear; answers {"faults": [...]}
    POST /_sim/down      {"seconds": 5}: refuse connections for that long
    POST /_sim/reset     the simulator's own reset (requests and faults included)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.sim.server import SimServer

log = logging.getLogger(__name__)

KINDS = ("latency", "http_5xx", "http_429", "timeout", "reset", "commit_lost", "deep_json")
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
ALIASES = {"error": "http_5xx", "rate_limit": "http_429"}
_JSON_ALIASES = {"mode": "kind", "latency_s": "delay_s", "hang_s": "delay_s"}


@dataclass
class Fault:
    kind: str
    count: int | None = None
    probability: float | None = None
    seed: int | None = None
    path: str = ""  # applies to calls whose path contains this
    method: str | None = None  # e.g. "POST"; None = any
    status: int = 503  # http_5xx
    retry_after: str | float | None = "1"  # http_429: seconds or an HTTP date; None sends no header
    delay_s: float | None = None  # latency (default 0.2 s), timeout (30 s), commit_lost (None: drop at once)
    hits: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.kind = ALIASES.get(self.kind, self.kind)
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join((*KINDS, *ALIASES))}")
        if self.count is None and self.probability is None:
            self.count = 1
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.probability is not None and not 0 <= self.probability <= 1:
            raise ValueError("probability must be within 0..1")
        self._rng = random.Random(self.seed)

    def matches(self, method: str, path: str) -> bool:
        if self.path not in path or (self.method and self.method.upper() != method.upper()):
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        elif self._rng.random() >= (self.probability or 0.0):
            return False
        self.hits += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0

    @property
    def retry_after_header(self) -> dict[str, str]:
        value = self.retry_after
        if value is None:
            return {}
        if isinstance(value, str):
            return {"Retry-After": value}
        return {"Retry-After": str(int(value)) if float(value).is_integer() else str(value)}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_rng", None)
        return data

    @staticmethod
    def from_json(item: Any) -> Fault:
        if not isinstance(item, Mapping):
            raise TypeError(f"a fault is a JSON object, got {item!r}")
        data = {_JSON_ALIASES.get(str(k), str(k)): v for k, v in item.items()}
        allowed = {k for k in Fault.__dataclass_fields__ if not k.startswith("_") and k != "hits"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("a fault needs a kind")
        return Fault(**data)


class FaultPlan:
    """The faults waiting to be applied, in order; exhausted ones leave the plan."""

    def __init__(self, *faults: Fault) -> None:
        self.faults: list[Fault] = list(faults)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def set(self, *faults: Fault) -> None:
        self.faults = list(faults)

    def add_json(self, data: Any, *, replace: bool = False) -> None:
        """Add (with `replace`: set) faults given as JSON, one object or a list; a bad item adds nothing."""
        items = data if isinstance(data, list) else [data]
        parsed = [Fault.from_json(item) for item in items]
        if replace:
            self.faults = parsed
        else:
            self.faults.extend(parsed)

    def clear(self) -> None:
        self.faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.faults]

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.exhausted:
                    self.faults.remove(fault)
                return fault
        return None

    def __iter__(self) -> Any:
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)


@dataclass
class RecordedRequest:
    """One call as the simulator received it (before any fault), and the status it answered."""

    seq: int
    at: float
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    text: str  # the body as sent (UTF-8, invalid bytes replaced)
    body: Any  # parsed JSON, or the text when it is not JSON
    status: int | None = None  # None when no answer was sent (reset, timeout, commit_lost)
    fault: str | None = None
    request_id: str = ""
    client: str = ""  # "host:port" of the TCP connection (keep-alive shows as one)

    @property
    def json(self) -> Any:
        """The parsed JSON body, None when the body was not JSON."""
        return None if isinstance(self.body, str) else self.body

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "json": self.json}


class Recorded(Protocol):
    """What the shared parts need from a simulator's state."""

    requests: list[RecordedRequest]
    faults: FaultPlan

    def snapshot(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


ErrorBody = Callable[[int, str], Any]


def plain_error(status: int, message: str) -> Any:
    return {"message": message}


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    # "the API will always return using a minified format"
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type="application/json", headers=dict(headers or {}))


class FaultInjector:
    """ASGI middleware: record every call outside `/_sim/` and apply the plan's faults to it."""

    def __init__(
        self,
        app: ASGIApp,
        state: Recorded,
        server: SimServer,
        *,
        error_body: ErrorBody = plain_error,
        request_ids: bool = False,
    ) -> None:
        self.app = app
        self.request_ids = request_ids  # answer a `Request-Id` header, as Mobility Work does
        self.state = state
        self.server = server
        self.error_body = error_body
        self._seq = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        text = raw.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = text
        self._seq += 1
        record = RecordedRequest(
            seq=self._seq,
            at=time.time(),
            method=method,
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            text=text,
            body=parsed,
            request_id=str(uuid.uuid4()),
            client=":".join(str(x) for x in scope.get("client") or ()),
        )
        self.state.requests.append(record)
        fault = self.state.faults.take(method, path)
        if fault is not None:
            record.fault = fault.kind
            log.debug("sim: fault %s on %s %s", fault.kind, method, path)

        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            if message["type"] == "http.response.start" and self.request_ids:
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"request-id", record.request_id.encode())],
                }
            await send(message)

        await self._apply(fault, record, scope, receive, send_recorded, replay)

    async def _apply(
        self,
        fault: Fault | None,
        record: RecordedRequest,
        scope: Scope,
        receive: Receive,
        send: Send,
        replay: Receive,
    ) -> None:
        kind = fault.kind if fault is not None else None
        if fault is None or kind == "latency":
            if fault is not None:
                await asyncio.sleep(0.2 if fault.delay_s is None else fault.delay_s)
            await self.app(scope, replay, send)
        elif fault.kind == "http_5xx":
            body = self.error_body(fault.status, f"simulated HTTP {fault.status}")
            await json_response(fault.status, body)(scope, replay, send)
        elif fault.kind == "http_429":
            body = self.error_body(429, "Too many requests (simulated)")
            await json_response(429, body, fault.retry_after_header)(scope, replay, send)
        elif fault.kind == "timeout":
            if await self._hang(receive, 30.0 if fault.delay_s is None else fault.delay_s) == "elapsed":
                await json_response(504, self.error_body(504, "simulated timeout"))(scope, replay, send)
        elif fault.kind == "deep_json":
            deep = Response(DEEP_JSON, status_code=fault.status, media_type="application/json")
            await deep(scope, replay, send)
        elif fault.kind == "reset":
            self.server.drop(scope, rst=True)
            await self._hang(receive, 5.0)
        else:  # commit_lost: do the work, swallow the answer
            response: list[Message] = []

            async def swallow(message: Message) -> None:
                response.append(message)

            await self.app(scope, replay, swallow)
            if fault.delay_s is None:
                record.status = None
                self.server.drop(scope, rst=False)
                await self._hang(receive, 5.0)
            elif await self._hang(receive, fault.delay_s) == "elapsed":
                await json_response(504, self.error_body(504, "simulated lost response"))(scope, replay, send)
            else:
                record.status = None

    async def _hang(self, receive: Receive, seconds: float) -> str:
        """Wait until the client goes away, the simulator stops, or `seconds` pass ("elapsed")."""

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        closing = self.server.closing
        waiters = [asyncio.ensure_future(until_disconnect()), asyncio.ensure_future(closing.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            for w in waiters:
                with contextlib.suppress(BaseException):
                    await w
        return "elapsed" if not done else "ended"


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def control_handler(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    """A `/_sim/` handler: its result as JSON, a ValueError/KeyError/TypeError/RuntimeError as 400."""

    async def wrapped(request: Request) -> Response:
        try:
            result = await fn(request)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, result)

    return wrapped


def control_routes(state: Recorded, server: SimServer) -> list[Route]:
    """The `/_sim/` routes every simulator has: state, requests, faults, down, reset."""

    async def sim_state(request: Request) -> Any:
        return state.snapshot()

    async def sim_requests(request: Request) -> Any:
        return [r.to_json() for r in state.requests]

    async def sim_faults(request: Request) -> Any:
        if request.method == "DELETE":
            state.faults.clear()
        elif request.method == "POST":
            raw = await request.body()
            append = request.query_params.get("append") in ("1", "true")
            state.faults.add_json(json.loads(raw) if raw.strip() else [], replace=not append)
        return {"faults": state.faults.pending()}

    async def sim_down(request: Request) -> Any:
        seconds = float((await json_object(request)).get("seconds", 5.0))

        async def later() -> None:
            await asyncio.sleep(0.05)  # let this response leave first
            await server.down(seconds)

        server.spawn(later())
        return {"down_for_s": seconds}

    async def sim_reset(request: Request) -> Any:
        state.reset()
        return {"reset": True}

    return [
        Route("/_sim/state", control_handler(sim_state), methods=["GET"]),
        Route("/_sim/requests", control_handler(sim_requests), methods=["GET"]),
        Route("/_sim/faults", control_handler(sim_faults), methods=["GET", "POST", "DELETE"]),
        Route("/_sim/down", control_handler(sim_down), methods=["POST"]),
        Route("/_sim/reset", control_handler(sim_reset), methods=["POST"]),
    ]


@contextlib.asynccontextmanager
async def serving(
    build: Callable[[SimServer], ASGIApp],
    state: Recorded,
    *,
    host: str,
    port: int,
    error_body: ErrorBody = plain_error,
) -> Any:
    """Serve `build(server)` (wrapped in the fault injector) on host:port (0 = a free port); yields the
    running SimServer."""
    server = SimServer(host=host, port=port)
    server.app = FaultInjector(build(server), state, server, error_body=error_body)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
