"""The HTTP server: uvicorn inside the gateway's own event loop, with a heartbeat for the watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from gateway.config import HttpSection
from gateway.web.limits import AcceptErrorLog, ConnectionGuard, protocol_for, raise_nofile_limit

log = logging.getLogger(__name__)


class HttpServer(uvicorn.Server):
    """uvicorn.Server that leaves the signals to the gateway and beats on every tick of its main loop (10/s):
    a server whose loop stopped turning stops feeding the systemd watchdog. Its connections are guarded by
    gateway/web/limits.py (connection limit, header and body timeouts, accept() errors logged once)."""

    def __init__(
        self, config: uvicorn.Config, *, beat: Callable[[], None], guard: ConnectionGuard | None = None
    ) -> None:
        super().__init__(config)
        self.beat = beat
        self.guard = guard

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        AcceptErrorLog(clock=loop.time).install(loop)
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # SIGTERM/SIGINT/SIGHUP are the gateway's (gateway/runtime/lifecycle.py: serve)

    async def on_tick(self, counter: int) -> bool:
        self.beat()
        return await super().on_tick(counter)


def http_server(
    app: Any,
    http: HttpSection,
    *,
    beat: Callable[[], None],
    current: Callable[[], HttpSection] | None = None,
) -> HttpServer:
    """The server for `app` on `http.listen`. `current()` is the HttpSection now (a reload changes it; the
    limits are read per connection); default: `http` for ever."""
    ssl: dict[str, Any] = {}
    if http.tls_certificate and http.tls_key:
        ssl = {"ssl_certfile": http.tls_certificate, "ssl_keyfile": http.tls_key}
    soft, _ = raise_nofile_limit()
    guard = ConnectionGuard(current or (lambda: http), fd_limit=soft)
    guard.max_connections  # noqa: B018 - logs now, at start-up, when RLIMIT_NOFILE lowers the limit
    config = uvicorn.Config(
        app,
        host=http.host,
        port=http.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=protocol_for(guard),
        **ssl,
    )
    return HttpServer(config, beat=beat, guard=guard)
