"""POST /api/outbox/{id}/approve|reject: the status page's approve and reject buttons (docs/rollout.md).

Only when `http.auth_*` is set (the AuthMiddleware has then checked the caller's credentials: /api/ is
protected); without it the buttons are not shown and a POST is refused (403): an open page must not be able to
send tasks. Cross-site requests are refused three ways, each enough alone:

- a per-process CSRF token (random, made when the app is built) in a hidden field of each form, compared in
  constant time;
- the same token in a `SameSite=Strict`, HttpOnly cookie set with the page, which must match the field (a
  cross-site form post carries no SameSite=Strict cookie);
- the `Origin` header, when the browser sends one (every current browser does on a form POST), must be this
  server's own origin, and `Sec-Fetch-Site`, when sent, must be `same-origin`.

A success answers 303 to `/#approvals` (post/redirect/get: a reload does not post again); a row that is no
longer awaiting approval answers 409 with its state.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

CSRF_FIELD = "csrf"
CSRF_COOKIE = "mw_gateway_csrf"
MAX_FORM_BYTES = 4096

# (outbox id, approve?, who) -> (did the row change (was it awaiting approval?), its state now or None)
Decide = Callable[[int, bool, str], Awaitable[tuple[bool, str | None]]]


class Approvals:
    def __init__(self, decide: Decide, *, auth_required: Callable[[], bool]) -> None:
        self.decide = decide
        self.auth_required = auth_required
        self.token = secrets.token_urlsafe(32)

    def form_token(self) -> str | None:
        """The token the page puts in its forms, or None: no buttons (no authentication configured)."""
        return self.token if self.auth_required() else None

    def set_cookie(self, response: Response) -> None:
        if self.auth_required():
            response.set_cookie(CSRF_COOKIE, self.token, httponly=True, samesite="strict", path="/")

    async def endpoint(self, request: Request) -> Response:
        if not self.auth_required():
            return _page(403, "Approving from the status page needs http.auth_token or http.auth_user.")
        problem = _cross_site(request)
        if problem is not None:
            return _page(403, problem)
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _page(413, "form too large")
        fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
        field = (fields.get(CSRF_FIELD) or [""])[0]
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not _same(field, self.token) or not _same(cookie, self.token):
            return _page(403, "stale or missing form token: reload the status page and try again")
        try:
            outbox_id = int(request.path_params["id"])
        except (KeyError, ValueError):
            return _page(404, "no such outbox row")
        action = str(request.path_params.get("action"))
        if action not in ("approve", "reject"):
            return _page(404, "unknown action")
        changed, state = await self.decide(outbox_id, action == "approve", _who(request))
        if changed:
            return RedirectResponse("/#approvals", status_code=303)
        why = "unknown" if state is None else f"it is {state}, not awaiting_approval"
        return _page(409, f"outbox row {outbox_id} cannot be {action}d: {why}")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _cross_site(request: Request) -> str | None:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            return "cross-origin request refused"
    return None


def _who(request: Request) -> str:
    """web:<user> for basic auth, web for a bearer token (never the secret)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).partition(b":")[0]
            return "web:" + user.decode("utf-8", errors="replace")[:64]
        except (binascii.Error, ValueError):
            pass
    return "web"


def _page(status: int, message: str) -> HTMLResponse:
    text = html.escape(message)
    return HTMLResponse(
        f"<!doctype html><title>mw-gateway</title><p>{text}</p><p><a href='/#approvals'>back</a></p>",
        status_code=status,
    )
