"""The Starlette application, served by uvicorn inside the gateway's own event loop."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.web.auth import AuthMiddleware, Credentials
from gateway.web.metrics import CONTENT_TYPE, GatewayMetrics, WebhookMetricsMiddleware
from gateway.web.page import render_status_page
from gateway.web.status import collect_status, firing_log, health

if TYPE_CHECKING:
    from gateway.app import Gateway


def build_app(gw: Gateway) -> Starlette:
    metrics = GatewayMetrics(gw).attach()
    firing_log(gw)  # the status page's "latest firings", from the start

    async def healthz(request: Request) -> Response:
        body = await health(gw)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def page(request: Request) -> Response:
        return HTMLResponse(render_status_page(await collect_status(gw)))

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    async def api_status(request: Request) -> Response:
        body = json.dumps(await collect_status(gw), default=str, ensure_ascii=False)
        return Response(body, media_type="application/json")

    routes = [
        Route("/healthz", healthz),
        Route("/api/status", api_status),
        Route("/", page),
        Route("/metrics", metrics_endpoint),
    ]
    from gateway.reconcile import reconciliation_endpoint
    from gateway.web.webhooks_mw import receiver_for

    routes += [*receiver_for(gw).routes(), Route("/api/reconciliation", reconciliation_endpoint(gw))]
    auth = Middleware(AuthMiddleware, credentials=lambda: Credentials.from_config(gw.config.http))
    webhook_metrics = Middleware(WebhookMetricsMiddleware, metrics=lambda: metrics)
    app = Starlette(routes=routes, middleware=[auth, webhook_metrics])
    app.state.metrics = metrics
    return app
