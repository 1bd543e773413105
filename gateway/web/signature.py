"""X-MW-Signature: compute, format and parse the Mobility Work webhook signature header.

The header is `t=<unix seconds>,nonce=<hex>,signature=<64 hex>`. The documents do not say which string is
signed; the default (DESIGN.md section 7) is the hex HMAC-SHA256, keyed with the webhook secret, of
`"{t}.{nonce}.{body}"` where `{body}` is the raw request body bytes. The template is configurable and may use
the placeholders `{t}`, `{nonce}` and `{body}` (exactly once).

This module is pure: the receiver (tolerance window, nonce replay, rotation) is built on top of it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets
import time
from dataclasses import dataclass

HEADER = "X-MW-Signature"
DEFAULT_TEMPLATE = "{t}.{nonce}.{body}"
MAX_T_DIGITS = 12  # Unix seconds until the year 33658
MAX_NONCE_CHARS = 200


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    t: int
    nonce: str
    signature: str  # lowercase hex


def signed_bytes(template: str, *, t: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes HMAC'd: the template with t and nonce filled in, the raw body spliced in."""
    before, sep, after = template.partition("{body}")
    if not sep or "{body}" in after:
        raise ValueError("the signature template must contain {body} exactly once")
    try:
        head = before.format(t=t, nonce=nonce).encode()
        tail = after.format(t=t, nonce=nonce).encode()
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"bad signature template {template!r}: only {{t}}, {{nonce}}, {{body}} allowed"
        ) from exc
    return head + body + tail


def compute_signature(
    secret: str | bytes, *, t: int, nonce: str, body: bytes, template: str = DEFAULT_TEMPLATE
) -> str:
    """Hex HMAC-SHA256 of the signed string."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, signed_bytes(template, t=t, nonce=nonce, body=body), hashlib.sha256).hexdigest()


def format_header(t: int, nonce: str, signature: str) -> str:
    return f"t={t},nonce={nonce},signature={signature}"


def new_nonce() -> str:
    """40 hex characters, like the documentation's example."""
    return _secrets.token_hex(20)


def sign(
    secret: str | bytes,
    body: bytes,
    *,
    t: int | None = None,
    nonce: str | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> str:
    """The full X-MW-Signature header value for `body` (fresh timestamp and nonce unless given)."""
    t = int(time.time()) if t is None else t
    nonce = new_nonce() if nonce is None else nonce
    return format_header(t, nonce, compute_signature(secret, t=t, nonce=nonce, body=body, template=template))


def parse_header(value: str) -> SignatureHeader:
    """Parse `t=…,nonce=…,signature=…` (any order, spaces tolerated). Raises ValueError when malformed."""
    parts: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep or not key or key in parts:
            raise ValueError("malformed X-MW-Signature: expected t=…,nonce=…,signature=…")
        parts[key.strip()] = val.strip()
    missing = {"t", "nonce", "signature"} - parts.keys()
    if missing:
        raise ValueError(f"malformed X-MW-Signature: missing {', '.join(sorted(missing))}")
    # ASCII digits only (str.isdigit() also takes '²' and other scripts' digits) and at most MAX_T_DIGITS:
    # a 400-digit t would overflow every float comparison after it (issue 13.9: an HTTP 500).
    t = parts["t"]
    if not (t.isascii() and t.isdigit()) or len(t) > MAX_T_DIGITS:
        raise ValueError("malformed X-MW-Signature: t must be Unix seconds")
    signature = parts["signature"].lower()
    if len(signature) != 64 or any(c not in "0123456789abcdef" for c in signature):
        raise ValueError("malformed X-MW-Signature: signature must be 64 hex characters")
    if not parts["nonce"]:
        raise ValueError("malformed X-MW-Signature: empty nonce")
    if len(parts["nonce"]) > MAX_NONCE_CHARS:
        raise ValueError(f"malformed X-MW-Signature: nonce longer than {MAX_NONCE_CHARS} characters")
    return SignatureHeader(t=int(t), nonce=parts["nonce"], signature=signature)


def signature_matches(
    secret: str | bytes, header: SignatureHeader, body: bytes, *, template: str = DEFAULT_TEMPLATE
) -> bool:
    """Constant-time comparison of the header's signature with the one computed over the raw body."""
    expected = compute_signature(secret, t=header.t, nonce=header.nonce, body=body, template=template)
    return hmac.compare_digest(expected, header.signature)
