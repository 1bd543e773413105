"""Access control: a bearer token and/or HTTP basic auth, on every path except an explicit public list.

When `http.auth_token` or `http.auth_user` + `http.auth_password` is configured, every request must carry
`Authorization: Bearer <token>` or `Authorization: Basic <user:password>`, except to the paths of
PUBLIC_PATHS; otherwise it gets 401 with a `WWW-Authenticate` challenge (a browser then asks for the user and
password). Comparisons are constant-time. Protection is the default: a new route is protected unless it is
added to PUBLIC_PATHS on purpose (issue 18.15). Public: /healthz (systemd, load balancers and monitoring
probe it; without credentials it shows only the status and failing component names) and the webhook
endpoints, which have their own signature / token check.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import HttpSection

_WEBHOOKS = ("/webhooks/mobility-work", "/webhooks/servicemobility/InventoryUsage")
# The explicit allow-list: exact paths, everything else needs credentials when auth is on.
PUBLIC_PATHS = frozenset({"/healthz", *_WEBHOOKS, *(p + "/" for p in _WEBHOOKS)})


def is_protected(path: str) -> bool:
    """Every path except the public allow-list (/healthz and the webhook endpoints)."""
    return path not in PUBLIC_PATHS


@dataclass(frozen=True)
class Credentials:
    token: bytes | None = None
    user: bytes | None = None
    password: bytes | None = None

    @classmethod
    def from_config(cls, http: HttpSection) -> Credentials:
        token = http.auth_token.get_secret_value().encode() if http.auth_token else None
        user = http.auth_user.encode() if http.auth_user else None
        password = http.auth_password.get_secret_value().encode() if http.auth_password else None
        return cls(token or None, user, password if user else None)

    @property
    def required(self) -> bool:
        return self.token is not None or self.user is not None

    def accepts(self, authorization: str | None) -> bool:
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme == "basic" and self.user is not None:
            try:
                decoded = base64.b64decode(value.encode(), validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            if not sep:
                return False
            # Both compared whatever the first result, so the timing says nothing about which was wrong.
            user_ok = hmac.compare_digest(user, self.user)
            password_ok = hmac.compare_digest(password, self.password or b"")
            return user_ok and password_ok and self.password is not None
        return False

    def challenge(self) -> str:
        if self.user is not None:
            return 'Basic realm="mw-gateway", charset="UTF-8"'
        return 'Bearer realm="mw-gateway"'


class AuthMiddleware:
    """ASGI middleware: refuses protected paths without valid credentials. `credentials` is asked on every
    request, so a reload that changes the token applies at once."""

    def __init__(self, app: ASGIApp, *, credentials: Callable[[], Credentials]) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credentials = self.credentials()
        if scope["type"] != "http" or not credentials.required or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        if credentials.accepts(authorization):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "authentication required"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", credentials.challenge().encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
