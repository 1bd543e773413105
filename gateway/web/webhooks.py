"""The webhook HTTP routes: `POST /webhooks/mobility-work` and `POST /webhooks/servicemobility/InventoryUsage`
(each with or without the trailing slash), thin wrappers around the WebhookReceiver (gateway/web/receiver.py).
The body is read as a stream and refused past `http.max_body_bytes` (413), whatever Content-Length says."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.web.receiver import Reply, WebhookReceiver

MW_PATH = "/webhooks/mobility-work"
SM_PATH = "/webhooks/servicemobility/InventoryUsage"

Handler = Callable[[Mapping[str, str], bytes], Awaitable[Reply]]


class TooLarge(Exception):
    """Answer 413."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, read as a stream and refused past max_bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def routes(receiver: Callable[[], WebhookReceiver]) -> list[Route]:
    """The webhook routes over `receiver()`, asked per request (a reload may replace the receiver)."""

    async def serve(request: Request, handler: Callable[[WebhookReceiver], Handler]) -> Response:
        current = receiver()
        try:
            body = await read_body(request, current.max_body_bytes)
        except TooLarge:
            return current.reject(413, f"body over {current.max_body_bytes} bytes").response()
        except ClientDisconnect:
            return current.reject(400, "the request body was cut short").response()
        reply = await handler(current)(request.headers, body)
        return reply.response()

    async def mobility_work(request: Request) -> Response:
        return await serve(request, lambda r: r.receive_mobility_work)

    async def servicemobility(request: Request) -> Response:
        return await serve(request, lambda r: r.receive_servicemobility)

    return [
        Route(MW_PATH, mobility_work, methods=["POST"]),
        Route(MW_PATH + "/", mobility_work, methods=["POST"]),
        Route(SM_PATH, servicemobility, methods=["POST"]),
        Route(SM_PATH + "/", servicemobility, methods=["POST"]),
    ]
