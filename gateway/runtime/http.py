"""The HTTP server: uvicorn inside the gateway's own event loop, with a heartbeat for the watchdog."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from gateway.config import HttpSection

log = logging.getLogger(__name__)


class HttpServer(uvicorn.Server):
    """uvicorn.Server that leaves the signals to the gateway and beats on every tick of its main loop (10/s):
    a server whose loop stopped turning stops feeding the systemd watchdog."""

    def __init__(self, config: uvicorn.Config, *, beat: Callable[[], None]) -> None:
        super().__init__(config)
        self.beat = beat

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # SIGTERM/SIGINT/SIGHUP are the gateway's (gateway/runtime/lifecycle.py: serve)

    async def on_tick(self, counter: int) -> bool:
        self.beat()
        return await super().on_tick(counter)


def http_server(app: Any, http: HttpSection, *, beat: Callable[[], None]) -> HttpServer:
    ssl: dict[str, Any] = {}
    if http.tls_certificate and http.tls_key:
        ssl = {"ssl_certfile": http.tls_certificate, "ssl_keyfile": http.tls_key}
    config = uvicorn.Config(
        app, host=http.host, port=http.port, log_config=None, access_log=False, lifespan="off", **ssl
    )
    return HttpServer(config, beat=beat)
