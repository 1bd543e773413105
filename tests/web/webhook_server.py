"""A real uvicorn server in the test's event loop serving the webhook receiver over a real SQLite store."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from gateway.config import HttpSection
from gateway.core.clock import Clock, SystemClock
from gateway.core.samples import Sample
from gateway.core.webhooks import Incoming, NonceUse, RecordResult, TaskClosed
from gateway.store import Store
from gateway.web.receiver import WebhookReceiver
from gateway.web.webhooks import routes

SECRET = "whsec-current-7f3a"
PREVIOUS_SECRET = "whsec-previous-1b2c"
MW_PATH = "/webhooks/mobility-work"
SM_PATH = "/webhooks/servicemobility/InventoryUsage"
SM_JWT_KEY = "sm-jwt-key-with-enough-bytes-for-hs256"


def sm_token(key: str = SM_JWT_KEY, *, ttl: int = 3600) -> dict[str, str]:
    """A valid ServiceMobility x-access-token header (the endpoint is served only with a key: issue 18.9)."""
    import time

    import jwt

    return {"x-access-token": jwt.encode({"exp": int(time.time()) + ttl}, key, algorithm="HS256")}


@dataclass
class Running:
    url: str
    store: Store
    receiver: WebhookReceiver
    samples: list[Sample] = field(default_factory=list)
    closed: list[TaskClosed] = field(default_factory=list)

    async def count(self) -> int:
        return await self.store.ledger.event_count()


@asynccontextmanager
async def serve_app(app: Any, port: int) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class ClosingLedger:
    """The store's ledger, keeping the tasks each recorded webhook closed (what the pipeline publishes as
    TaskClosed in the gateway)."""

    store: Store
    closed: list[TaskClosed]

    async def record(self, incoming: Incoming, *, nonce: NonceUse | None = None) -> RecordResult:
        result = await self.store.ledger.record(incoming, nonce=nonce)
        self.closed.extend(result.closed)
        return result


@asynccontextmanager
async def running_receiver(
    tmp_path: Path, port: int, *, clock: Clock | None = None, **http: Any
) -> AsyncIterator[Running]:
    store = await Store.open(tmp_path / "state", gateway_id="gw-test", clock=clock or SystemClock())
    samples: list[Sample] = []
    closed: list[TaskClosed] = []
    receiver = WebhookReceiver(
        ClosingLedger(store, closed),
        HttpSection(**http),
        clock=store.clock,
        publish_input=lambda item: samples.append(item) if isinstance(item, Sample) else None,
    )
    app = Starlette(routes=routes(lambda: receiver))
    try:
        async with serve_app(app, port) as url:
            yield Running(url, store, receiver, samples, closed)
    finally:
        await store.close()


def raw_request(port: int, head: bytes, body_chunks: list[bytes], *, shutdown_write: bool = True) -> bytes:
    """Send bytes on a plain socket (for what httpx will not send: lying Content-Length, cut bodies) and read
    what the server answers until it closes (b"" when it answered nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        if shutdown_write:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        out = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                out += data
        except (ConnectionResetError, TimeoutError):
            pass
        return out
