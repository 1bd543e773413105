"""The webhook HTTP routes: `POST /webhooks/mobility-work` and `POST /webhooks/servicemobility/InventoryUsage`
(each with or without the trailing slash), thin wrappers around the WebhookReceiver (gateway/web/receiver.py).
The body is read as a stream and refused past `http.max_body_bytes` (413), whatever Content-Length says.

The ServiceMobility route answers 404, as if it were not mounted, while `http.servicemobility_jwt_key` is
not set (asked per request, so a reload that sets the key opens it): without a key anyone could post
consumptions (issue 18.9)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.web.read_mw import KNOWN_EVENTS
from gateway.web.receiver import Reply, WebhookReceiver

# The event label's bounded set: the documents' Mobility Work events and ServiceMobility's InventoryUsage.
EVENT_LABELS = frozenset({*KNOWN_EVENTS, "InventoryUsage"})

MW_PATH = "/webhooks/mobility-work"
SM_PATH = "/webhooks/servicemobility/InventoryUsage"

Handler = Callable[[Mapping[str, str], bytes], Awaitable[Reply]]


EVENT_SCOPE_KEY = "mw_gateway.webhook_event"  # the metrics label, for WebhookMetricsMiddleware


class TooLarge(Exception):
    """Answer 413."""


class Busy(Exception):
    """Answer 503: the bodies held at once would exceed http.max_buffered_bytes."""


class BodyBudget:
    """The request-body bytes all webhook requests hold at once (http.max_buffered_bytes): memory for bodies
    stays bounded whatever the number of slow senders (issue 18.10: 300 slow 1 MB bodies, 370 MB RSS)."""

    def __init__(self) -> None:
        self.held = 0

    def take(self, n: int, limit: int) -> None:
        if self.held + n > limit:
            raise Busy
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n


async def read_body(
    request: Request, max_bytes: int, *, budget: BodyBudget | None = None, budget_limit: int = 0
) -> bytes:
    """The raw body, read as a stream and refused past max_bytes (whatever Content-Length says), each chunk
    counted against `budget` while the request holds it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise TooLarge
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            if size + len(chunk) > max_bytes:
                raise TooLarge
            if budget is not None:
                budget.take(len(chunk), budget_limit)
            size += len(chunk)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        if budget is not None:
            budget.give(size)


def routes(receiver: Callable[[], WebhookReceiver], *, budget: BodyBudget | None = None) -> list[Route]:
    """The webhook routes over `receiver()`, asked per request (a reload may replace the receiver)."""
    budget = budget or BodyBudget()

    async def serve(
        request: Request, handler: Callable[[WebhookReceiver], Handler], *, needs_jwt: bool = False
    ) -> Response:
        current = receiver()
        if needs_jwt and not current.jwt_verifier.enabled:
            return Response(status_code=404)
        try:
            body = await read_body(
                request, current.max_body_bytes, budget=budget, budget_limit=current.max_buffered_bytes
            )
        except TooLarge:
            return current.reject(413, f"body over {current.max_body_bytes} bytes").response()
        except Busy:
            reply = current.reject(503, "too many request bodies at once; retry later")
            return JSONResponse(reply.body, status_code=503, headers={"Retry-After": "5"})
        except ClientDisconnect:
            return current.reject(400, "the request body was cut short").response()
        reply = await handler(current)(request.headers, body)
        if 200 <= reply.status < 300:
            request.scope[EVENT_SCOPE_KEY] = event_label(reply.body.get("event"))
        return reply.response()

    async def mobility_work(request: Request) -> Response:
        return await serve(request, lambda r: r.receive_mobility_work)

    async def servicemobility(request: Request) -> Response:
        return await serve(request, lambda r: r.receive_servicemobility, needs_jwt=True)

    return [
        Route(MW_PATH, mobility_work, methods=["POST"]),
        Route(MW_PATH + "/", mobility_work, methods=["POST"]),
        Route(SM_PATH, servicemobility, methods=["POST"]),
        Route(SM_PATH + "/", servicemobility, methods=["POST"]),
    ]


def event_label(event: object) -> str:
    """The metrics label of an accepted webhook, from the event type its reply names (the receiver parsed the
    body already): one of the documented event types, "unknown" (no type at all) or "other". Never the
    sender's free text: a label per distinct string would let any sender grow /metrics without bound (issue
    18.9)."""
    # "unknown": what gateway/web/read_servicemobility.py names an envelope without a type
    if not isinstance(event, str) or event in ("", "unknown"):
        return "unknown"
    return event if event in EVENT_LABELS else "other"
