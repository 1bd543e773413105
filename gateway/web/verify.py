"""Webhook authentication: X-MW-Signature (Mobility Work) and the x-access-token JWT (ServiceMobility).

X-MW-Signature (`t=…,nonce=…,signature=<64 hex>`), built on gateway/web/signature.py's compute function:
- the signature is the hex HMAC-SHA256 of the configured template (default `"{t}.{nonce}.{body}"`) over the
  RAW body bytes, compared in constant time against every configured secret (the current one and, during a
  rotation, the previous one);
- `|now - t| > tolerance` (default 300 s) is refused;
- the nonce must not have been used before inside the window. The replay check itself is done by the ledger,
  in the same transaction that stores the event (see `gateway.store.ledger.Ledger.record`), so it survives a
  restart; this module only says how long the nonce must be remembered.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.core.webhooks import NonceUse
from gateway.web.signature import DEFAULT_TEMPLATE, compute_signature, parse_header

if TYPE_CHECKING:
    from gateway.config import HttpSection


class Rejected(Exception):
    """Authentication failed: answer 401 with this reason (never contains a secret)."""


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class MWSignatureVerifier:
    secrets: tuple[str, ...]  # empty: signatures are not checked
    template: str = DEFAULT_TEMPLATE
    tolerance: float = 300.0

    @property
    def enabled(self) -> bool:
        return bool(self.secrets)

    def verify(self, header: str | None, body: bytes, *, now: float) -> NonceUse | None:
        """None when no secret is configured; else the nonce to remember. Raises Rejected."""
        if not self.secrets:
            return None
        if not header:
            raise Rejected("missing X-MW-Signature header")
        try:
            parsed = parse_header(header)
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        if abs(now - parsed.t) > self.tolerance:
            raise Rejected(f"X-MW-Signature timestamp outside the {self.tolerance:g} s tolerance window")
        matched = False
        for secret in self.secrets:  # every secret is tried: no early exit that would time the match
            expected = compute_signature(
                secret, t=parsed.t, nonce=parsed.nonce, body=body, template=self.template
            )
            matched = hmac.compare_digest(expected, parsed.signature) or matched
        if not matched:
            raise Rejected("X-MW-Signature does not match the body")
        # Acceptable while now <= t + tolerance: remember it at least that long.
        return NonceUse(
            nonce=parsed.nonce, body_hash=body_hash(body), expires_at=parsed.t + self.tolerance + 1
        )


@dataclass(frozen=True)
class JWTVerifier:
    """ServiceMobility's `x-access-token`. PyJWT (the `servicemobility` extra) is imported on the first token,
    so a gateway without a key never loads it.

    A token must carry `exp`, no further ahead than `max_age` (a token that never expires is refused); a
    token with `iat` must have been issued at most `max_age` ago; `nbf` is honoured. `audience` / `issuer`,
    when set, must match `aud` / `iss`. Times are checked here against `now` (clock skew: `leeway`).
    """

    key: str | None  # HS* secret or a PEM public key; None: tokens are not checked
    algorithms: Sequence[str] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    max_age: float = 86400.0
    leeway: float = 30.0

    @classmethod
    def from_http(cls, http: HttpSection) -> JWTVerifier:
        key = http.servicemobility_jwt_key
        return cls(
            key.get_secret_value() if key else None,
            algorithms=http.servicemobility_jwt_algorithms,
            audience=http.servicemobility_jwt_audience,
            issuer=http.servicemobility_jwt_issuer,
            max_age=http.servicemobility_jwt_max_age,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.key)

    def verify(self, token: str | None, *, now: float | None = None) -> dict[str, Any] | None:
        if not self.key:
            return None
        if not token:
            raise Rejected("missing x-access-token header")
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"], "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError as exc:
            raise Rejected(f"x-access-token refused: {exc.__class__.__name__}") from None
        now = time.time() if now is None else now
        exp = _claim_time(claims, "exp")
        assert exp is not None  # required above
        if now > exp + self.leeway:
            raise Rejected("x-access-token refused: expired")
        if exp - now > self.max_age + self.leeway:
            raise Rejected(f"x-access-token refused: exp lies more than {self.max_age:g} s ahead (max_age)")
        iat = _claim_time(claims, "iat")
        if iat is not None and (now - iat > self.max_age + self.leeway or iat > now + self.leeway):
            raise Rejected(f"x-access-token refused: iat more than {self.max_age:g} s ago or in the future")
        nbf = _claim_time(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway:
            raise Rejected("x-access-token refused: not valid yet (nbf)")
        return claims


def _claim_time(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim as seconds, or None when absent. Not a finite number: Rejected (never a 500)."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(f"x-access-token refused: {name} is not a number")
    try:
        seconds = float(value)
    except OverflowError:
        raise Rejected(f"x-access-token refused: {name} is out of range") from None
    if not math.isfinite(seconds) or abs(seconds) > 1e11:
        raise Rejected(f"x-access-token refused: {name} is out of range")
    return seconds
