"""The Starlette application, served by uvicorn inside the gateway's own event loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.dispatcher import DispatcherState
from gateway.web.status import collect_status

if TYPE_CHECKING:
    from gateway.app import Gateway


def build_app(gw: Gateway) -> Starlette:
    async def healthz(request: Request) -> Response:
        reasons = []
        if gw.dispatcher.status.state is DispatcherState.PAUSED:
            reasons.append(f"CMMS paused: {gw.dispatcher.status.reason}")
        down = [n for n, s in gw.sources.items() if s.stats.link.value == "down"]
        if down:
            reasons.append(f"sources down: {', '.join(sorted(down))}")
        body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    async def api_status(request: Request) -> Response:
        return JSONResponse(await collect_status(gw))

    routes = [
        Route("/healthz", healthz),
        Route("/api/status", api_status),
    ]
    return Starlette(routes=routes)
