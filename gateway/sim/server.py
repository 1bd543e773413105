"""The server every HTTP simulator runs in: uvicorn in the caller's event loop, on a socket it binds itself,
remembering each connection so a fault can drop it (`reset`, `commit_lost`) and `down()` can refuse new ones.

    server = SimServer(host="127.0.0.1", port=0)
    server.app = build_my_app(state, server)   # an ASGI app, usually wrapped in harness.FaultInjector
    await server.start(); server.url; await server.down(2.0); await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp, Scope


def _tracking_protocol(registry: dict[Any, asyncio.Transport]) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, remembering each connection's transport so a fault can drop it."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TrackedH11Protocol(H11Protocol):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # the accepted socket has proto 0, so asyncio did not set this
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.client:
                registry[tuple(self.client)] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client:
                registry.pop(tuple(self.client), None)
            super().connection_lost(exc)

    return cast(type[asyncio.Protocol], TrackedH11Protocol)


class SimServer:
    """One listening simulator; `app` must be set before `start()`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.app: ASGIApp | None = None
        self._transports: dict[Any, asyncio.Transport] = {}
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self.closing = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self.closing = asyncio.Event()
        await self._listen()

    async def _listen(self) -> None:
        if self.app is None:
            raise RuntimeError("SimServer.app is not set")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=_tracking_protocol(self._transports),
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._sock = server, sock

    async def _unlisten(self) -> None:
        server, sock = self._server, self._sock
        self._server = self._sock = None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown(sockets=[sock] if sock else None)
        if sock is not None:
            sock.close()

    async def down(self, seconds: float | None = None) -> None:
        """Stop listening (connections are refused) and drop open connections; back up after `seconds`."""
        server = self._server
        if server is not None:
            for sock_server in server.servers:
                sock_server.close()  # refuse new connections first
        for transport in list(self._transports.values()):
            transport.abort()
        for _ in range(200):  # let connection_lost run, so clients see the drops before is_up flips
            if not self._transports:
                break
            await asyncio.sleep(0.005)
        await self._unlisten()
        if seconds is not None:
            self.spawn(self._up_later(seconds))

    async def _up_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.up()

    async def up(self) -> None:
        if self._server is None:
            await self._listen()

    async def stop(self) -> None:
        self.closing.set()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        await self._unlisten()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def wait_idle(self) -> None:
        """Wait for background work (automatic webhooks, a scheduled `up`) to finish."""
        while self._background:
            pending = [t for t in self._background if not t.done() and t is not asyncio.current_task()]
            if not pending:
                return
            await asyncio.wait(pending)

    def drop(self, scope: Scope, *, rst: bool) -> None:
        """Drop the connection `scope` came on: a TCP RST (`rst`) or a plain close."""
        client = scope.get("client")
        transport = self._transports.get(tuple(client)) if client else None
        if transport is None:
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
