"""ServiceMobility's x-access-token: exp required and bounded, aud/iss when configured (issue 13 #11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.config import load_config
from gateway.web.verify import JWTVerifier, Rejected

KEY = "servicemobility-test-key-of-32-bytes!"
NOW = 1_800_000_000.0


def token(**claims: Any) -> str:
    return jwt.encode(claims, KEY, algorithm="HS256")


def test_a_token_without_exp_is_refused_instead_of_accepted_forever() -> None:
    verifier = JWTVerifier(KEY)
    with pytest.raises(Rejected, match="MissingRequiredClaimError"):
        verifier.verify(token(sub="sm"), now=NOW)
    assert verifier.verify(token(sub="sm", exp=NOW + 600), now=NOW) == {"sub": "sm", "exp": NOW + 600}


def test_exp_iat_and_nbf_are_judged_on_the_given_clock_with_a_small_leeway() -> None:
    verifier = JWTVerifier(KEY, max_age=3600.0, leeway=30.0)
    assert verifier.verify(token(exp=NOW - 10), now=NOW)  # within the leeway
    with pytest.raises(Rejected, match="expired"):
        verifier.verify(token(exp=NOW - 31), now=NOW)
    with pytest.raises(Rejected, match="more than 3600 s ahead"):
        verifier.verify(token(exp=NOW + 10 * 365 * 86400), now=NOW)  # "never expires"
    with pytest.raises(Rejected, match="iat more than 3600 s ago"):
        verifier.verify(token(exp=NOW + 60, iat=NOW - 7200), now=NOW)
    with pytest.raises(Rejected, match="or in the future"):
        verifier.verify(token(exp=NOW + 600, iat=NOW + 300), now=NOW)
    with pytest.raises(Rejected, match="nbf"):
        verifier.verify(token(exp=NOW + 600, nbf=NOW + 300), now=NOW)
    assert verifier.verify(token(exp=NOW + 600, iat=NOW - 60, nbf=NOW - 60), now=NOW)


@pytest.mark.parametrize(
    "exp", ["soon", True, 10**400, 1e300, None], ids=["string", "boolean", "400 digits", "1e300", "null"]
)
def test_an_absurd_exp_is_a_refusal_never_an_exception(exp: Any) -> None:
    raw = token(exp=exp) if exp != 10**400 else _raw_token('{"exp": ' + "9" * 400 + "}")
    with pytest.raises(Rejected):
        JWTVerifier(KEY).verify(raw, now=NOW)


def _raw_token(payload: str) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload.encode())
    signature = hmac.new(KEY.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(signature)


def test_audience_and_issuer_when_configured() -> None:
    verifier = JWTVerifier(KEY, audience="mw-gateway", issuer="https://auth.servicemobility.example")
    good = token(exp=NOW + 60, aud="mw-gateway", iss="https://auth.servicemobility.example")
    assert verifier.verify(good, now=NOW)
    for claims in (
        {"aud": "someone-else", "iss": "https://auth.servicemobility.example"},
        {"iss": "https://auth.servicemobility.example"},
        {"aud": "mw-gateway", "iss": "https://evil.example"},
        {"aud": "mw-gateway"},
    ):
        with pytest.raises(Rejected):
            verifier.verify(token(exp=NOW + 60, **claims), now=NOW)


def test_the_config_keys_reach_the_verifier() -> None:
    text = (
        "gateway: {id: gw}\ncmms: {kind: dry_run}\nhttp:\n"
        f"  servicemobility_jwt_key: {KEY}\n"
        "  servicemobility_jwt_audience: mw-gateway\n"
        "  servicemobility_jwt_issuer: sm\n"
        "  servicemobility_jwt_max_age: 2h\n"
    )
    verifier = JWTVerifier.from_http(load_config(Path("g.yaml"), text=text, env={}).http)
    assert (verifier.key, verifier.audience, verifier.issuer) == (KEY, "mw-gateway", "sm")
    assert verifier.max_age == 7200
    assert verifier.verify(token(exp=NOW + 3600, aud="mw-gateway", iss="sm"), now=NOW)
    with pytest.raises(Rejected, match="more than 7200 s ahead"):
        verifier.verify(token(exp=NOW + 3 * 3600, aud="mw-gateway", iss="sm"), now=NOW)
