"""The Starlette application, served by uvicorn inside the gateway's own event loop.

`build_app(deps)` takes a WebDeps (gateway/core/views.py) and nothing else: the web side never sees the
runtime. Every dependency is asked per request, so a reload is seen at once.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.core.views import WebDeps
from gateway.reconcile import reconciliation_endpoint
from gateway.web.approvals import Approvals
from gateway.web.auth import AuthMiddleware, Credentials
from gateway.web.metrics import CONTENT_TYPE, GatewayMetrics, WebhookMetricsMiddleware
from gateway.web.page import render_status_page
from gateway.web.receiver import WebhookReceiver
from gateway.web.status import collect_status, health, public_health
from gateway.web.webhooks import BodyBudget
from gateway.web.webhooks import routes as webhook_routes


class _Receivers:
    """The webhook receiver for the current HTTP settings: made again when a reload changed them."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        self._http: Any = None
        self._receiver: WebhookReceiver | None = None

    def __call__(self) -> WebhookReceiver:
        http = self.deps.http()
        if self._receiver is None or http is not self._http:
            self._http = http
            self._receiver = WebhookReceiver(
                self.deps.ledger,
                http,
                clock=self.deps.clock,
                publish_input=self.deps.publish_input,
            )
        return self._receiver


def build_app(deps: WebDeps) -> Starlette:
    metrics = GatewayMetrics(
        deps.snapshot, deps.outbox.counts, deps.disk, approval_queue=deps.outbox.approval_queue
    ).attach(deps.events)
    budget = BodyBudget()

    async def healthz(request: Request) -> Response:
        """Public (probes need no credentials), but while auth is on a client without credentials sees only
        the status and the failing components' names (docs/operations.md)."""
        snap, counts = deps.snapshot(), await deps.outbox.counts()
        credentials = Credentials.from_config(deps.http())
        if credentials.required and not credentials.accepts(request.headers.get("authorization")):
            body = public_health(snap, counts)
        else:
            body = health(snap, counts)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    approvals: Approvals | None = None
    if deps.decide is not None:
        approvals = Approvals(
            deps.decide, auth_required=lambda: Credentials.from_config(deps.http()).required
        )

    async def page(request: Request) -> Response:
        token = approvals.form_token() if approvals is not None else None
        response = HTMLResponse(render_status_page(await collect_status(deps), csrf_token=token))
        if approvals is not None:
            approvals.set_cookie(response)
        return response

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    async def api_status(request: Request) -> Response:
        body = json.dumps(await collect_status(deps), default=str, ensure_ascii=False)
        return Response(body, media_type="application/json")

    routes = [
        Route("/healthz", healthz),
        Route("/api/status", api_status),
        Route("/", page),
        Route("/metrics", metrics_endpoint),
        *webhook_routes(_Receivers(deps), budget=budget),
        Route("/api/reconciliation", reconciliation_endpoint(deps.reconciliation, deps.configured_timezone)),
    ]
    if approvals is not None:
        routes.append(Route("/api/outbox/{id:int}/{action}", approvals.endpoint, methods=["POST"]))
    auth = Middleware(AuthMiddleware, credentials=lambda: Credentials.from_config(deps.http()))
    webhook_metrics = Middleware(WebhookMetricsMiddleware, events=deps.events)
    app = Starlette(routes=routes, middleware=[auth, webhook_metrics])
    app.state.metrics = metrics
    app.state.body_budget = budget
    return app
