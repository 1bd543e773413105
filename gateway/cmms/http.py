"""HTTP plumbing shared by the CMMS backends: one keep-alive client, and what an HTTP outcome means.

CMMS-neutral: every backend builds its own request, then hands the response (or the exception) to
`delivery_from_response` / `delivery_from_exception` for the common classification:

    2xx                      DONE
    401, 403                 PAUSE   (credentials or plan: stop sending, keep everything queued)
    408, 425, 429, 5xx       RETRY   (Retry-After honoured: seconds or an HTTP date)
    502, 504                 RETRY   with maybe_committed=True (a proxy's answer: the CMMS behind it may
                                     have committed the request before the proxy gave up)
    other 4xx                DEAD    (the server's body kept verbatim in `details`)
    connect error/timeout    RETRY   (the request never reached the server)
    read timeout, dropped    RETRY   with maybe_committed=True (it may have been committed)
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from gateway import __version__
from gateway.cmms.schema import HttpClientOptions
from gateway.cmms.trust import trust_for
from gateway.core.delivery import Delivery, Outcome

log = logging.getLogger(__name__)

PRODUCT = f"mw-gateway/{__version__}"
MAX_ERROR_BODY_CHARS = 20_000
PROXY_ANSWERS = (502, 504)  # bad gateway, gateway timeout: the request may have reached the CMMS


def user_agent(gateway_id: str, network_name: str | None = None) -> str:
    """`mw-gateway/<version> (<gateway id>) <network name>`; the network name is recommended by MW."""
    agent = f"{PRODUCT} ({gateway_id})"
    return f"{agent} {network_name}" if network_name else agent


def make_client(
    options: HttpClientOptions,
    *,
    base_url: str,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 16,
) -> httpx.AsyncClient:
    """One AsyncClient per backend: keep-alive pool, short connect timeout, long read timeout; TLS
    certificates verified as `trust.py` says (logged once here for an https URL)."""
    timeout = httpx.Timeout(
        connect=options.connect_timeout,
        read=options.read_timeout,
        write=options.read_timeout,
        pool=options.read_timeout,
    )
    trust = trust_for(options)
    if base_url.startswith("https:"):
        log.info("%s: TLS certificates verified with %s", base_url, trust.description)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=dict(headers or {}),
        timeout=timeout,
        verify=trust.verify,
        transport=transport,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP date. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def outcome_for_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DONE
    if status in (401, 403):
        return Outcome.PAUSE
    if status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.DEAD


def response_body(response: httpx.Response) -> Any:
    """The body as JSON when it is JSON, else the text (capped); None when empty."""
    if not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
        text = response.text
        return text if len(text) <= MAX_ERROR_BODY_CHARS else text[:MAX_ERROR_BODY_CHARS] + "…"


def _message_of(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("message", "error", "detail", "title"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    if isinstance(body, str) and body.strip():
        return body.strip().splitlines()[0][:200]
    return ""


def delivery_from_response(
    response: httpx.Response,
    *,
    request: dict[str, Any] | None,
    elapsed_s: float,
    now: float,
    remote_id: str | None = None,
) -> Delivery:
    status = response.status_code
    outcome = outcome_for_status(status)
    if outcome is Outcome.DONE:
        return Delivery(
            outcome, status_code=status, remote_id=remote_id, elapsed_s=elapsed_s, request=request
        )
    body = response_body(response)
    message = _message_of(body) or response.reason_phrase or "error"
    error = f"HTTP {status}: {message}"
    request_id = response.headers.get("request-id")
    if request_id:
        error += f" (Request-Id {request_id})"
    retry_after = None
    if outcome is Outcome.RETRY:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
    return Delivery(
        outcome,
        status_code=status,
        error=error,
        details=body,
        request=request,
        retry_after_s=retry_after,
        elapsed_s=elapsed_s,
        maybe_committed=status in PROXY_ANSWERS,
    )


def describe_exception(exc: httpx.HTTPError) -> tuple[str, bool]:
    """(one line for people, whether the request may have reached the server and been committed)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout: the CMMS did not accept the connection in time", False
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to the CMMS: {exc or type(exc).__name__}", False
    if isinstance(exc, httpx.PoolTimeout):
        return "no free connection in the pool in time", False
    if isinstance(exc, httpx.ReadTimeout):
        return "no response in time (read timeout): the request may have been committed", True
    if isinstance(exc, httpx.WriteTimeout):
        return "write timeout while sending the request", True
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the CMMS closed the connection without a response: the request may have been committed", True
    if isinstance(exc, httpx.ReadError):
        return "connection lost while waiting for the response: the request may have been committed", True
    if isinstance(exc, httpx.WriteError):
        return "connection lost while sending the request", True
    return f"{type(exc).__name__}: {exc}", True


def delivery_from_exception(
    exc: httpx.HTTPError, *, request: dict[str, Any] | None, elapsed_s: float
) -> Delivery:
    """Network problems are always RETRY; `maybe_committed` says whether a duplicate may result."""
    error, maybe = describe_exception(exc)
    return Delivery(Outcome.RETRY, error=error, request=request, elapsed_s=elapsed_s, maybe_committed=maybe)
