"""What every HTTP simulator needs: serving in the caller's event loop, a record of what it received, and
fault injection.

Faults (`Fault.kind`), each for the next `count` requests whose path contains `path` (any path when empty):

    latency       wait `delay_s`, then answer normally
    error         answer `status` (default 503) without doing anything
    rate_limit    answer 429 with `Retry-After: <retry_after>` without doing anything
    timeout       do nothing and answer nothing for `delay_s` (default 30 s; the client times out first)
    commit_lost   do the work (committed), then answer nothing for `delay_s`: the response is lost

JSON form, for `POST /_sim/faults`: `{"kind": "rate_limit", "count": 2, "retry_after": 3}` or a list of those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

FaultKind = Literal["latency", "error", "rate_limit", "timeout", "commit_lost"]
_KINDS = ("latency", "error", "rate_limit", "timeout", "commit_lost")


@dataclass
class Fault:
    kind: FaultKind
    count: int = 1
    path: str = ""  # applies to requests whose path contains this
    status: int = 503  # for "error"
    retry_after: float | None = 1.0  # for "rate_limit"; None sends no Retry-After
    delay_s: float | None = None  # latency (default 0.2 s), timeout and commit_lost (default 30 s)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(_KINDS)}")
        if self.count < 1:
            raise ValueError("count must be at least 1")

    @property
    def _hang_s(self) -> float:
        return 30.0 if self.delay_s is None else self.delay_s

    async def before(self, plan: FaultPlan) -> Response | None:
        """Run before the request is handled; a response here means the request is not handled at all."""
        if self.kind == "latency":
            await asyncio.sleep(0.2 if self.delay_s is None else self.delay_s)
        elif self.kind == "error":
            return JSONResponse({"message": f"simulated HTTP {self.status}"}, status_code=self.status)
        elif self.kind == "rate_limit":
            headers = {} if self.retry_after is None else {"Retry-After": _seconds(self.retry_after)}
            return JSONResponse({"message": "API call rate limit exceeded"}, status_code=429, headers=headers)
        elif self.kind == "timeout":
            await plan.hang(self._hang_s)
            return JSONResponse({"message": "simulated timeout"}, status_code=504)
        return None

    async def after(self, plan: FaultPlan, response: Response) -> Response:
        """Run after the request was handled (and committed)."""
        if self.kind == "commit_lost":
            await plan.hang(self._hang_s)
            return JSONResponse({"message": "simulated lost response"}, status_code=504)
        return response


_MODES = {"http_5xx": "error", "http_429": "rate_limit"}


def _our_spelling(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TypeError(f"a fault is a JSON object, got {item!r}")
    data = dict(item)
    if "mode" in data:
        mode = data.pop("mode")
        data["kind"] = _MODES.get(mode, mode)
    for name in ("latency_s", "hang_s"):
        if name in data:
            data["delay_s"] = float(data.pop(name))
    if isinstance(data.get("retry_after"), str):
        data["retry_after"] = float(data["retry_after"])
    return data


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class FaultPlan:
    """The faults waiting to be applied, in order."""

    faults: list[Fault] = field(default_factory=list)
    _closing: asyncio.Event | None = None

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def add_json(self, data: Any) -> None:
        """Add faults given as JSON; the Mobility Work simulator's spelling is understood too
        (`mode`, `http_5xx`, `http_429`, `latency_s`, `hang_s`)."""
        items = data if isinstance(data, list) else [data]
        parsed = [Fault(**_our_spelling(item)) for item in items]  # TypeError/ValueError: nothing added
        self.faults.extend(parsed)

    def clear(self) -> None:
        self.faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.faults]

    def take(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path in path:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def hang(self, seconds: float) -> None:
        """Wait `seconds`, or less when the simulator shuts down."""
        if self._closing is None:
            self._closing = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.Event()
        self._closing.set()


@dataclass
class ReceivedRequest:
    """One request as the simulator received it (before any fault), and the status it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    json: Any
    ts: float
    status: int | None = None

    @staticmethod
    def of(request: Request, body: bytes) -> ReceivedRequest:
        text = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return ReceivedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=text,
            json=parsed,
            ts=time.time(),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SimState(Protocol):
    """What the shared parts of a simulator need from its state."""

    requests: list[ReceivedRequest]
    faults: FaultPlan

    def snapshot(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


async def handle_with_faults(
    state: SimState, request: Request, respond: Callable[[Request, bytes], Response]
) -> Response:
    """Record the request, apply the next matching fault before and after `respond`, record the status."""
    body = await request.body()
    received = ReceivedRequest.of(request, body)
    state.requests.append(received)
    fault = state.faults.take(request.url.path)
    if fault is not None:
        early = await fault.before(state.faults)
        if early is not None:
            received.status = early.status_code
            return early
    response = respond(request, body)
    if fault is not None:
        response = await fault.after(state.faults, response)
    received.status = response.status_code
    return response


def control_routes(state: SimState) -> list[Route]:
    """The `/_sim/` routes every simulator has: state, requests, faults (POST adds, DELETE clears), reset."""

    async def sim_state(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def sim_requests(request: Request) -> Response:
        return JSONResponse([r.to_json() for r in state.requests])

    async def sim_faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.faults.clear()
            return JSONResponse({"faults": []})
        try:
            state.faults.add_json(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"faults": state.faults.pending()})

    async def sim_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    return [
        Route("/_sim/state", sim_state),
        Route("/_sim/requests", sim_requests),
        Route("/_sim/faults", sim_faults, methods=["POST", "DELETE"]),
        Route("/_sim/reset", sim_reset, methods=["POST"]),
    ]


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone (the caller owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, host: str, port: int, faults: FaultPlan) -> AsyncIterator[str]:
    """Serve `app` on host:port (0 = a free port) in the running loop; yields the base URL."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error (port in use, …)
            raise RuntimeError(f"the simulator did not start on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound}"
    finally:
        faults.close()
        server.should_exit = True
        await task
