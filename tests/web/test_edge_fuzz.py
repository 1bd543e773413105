"""Every parser at the HTTP edge, fuzzed through the real ASGI app (build_app, all middleware): signature
headers, Mobility Work and ServiceMobility bodies, JWTs, Authorization headers. Whatever comes in, no
exception escapes and the answer is never a 500 (issue 13.9 and the edge fuzz of issue 13)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Coroutine, Iterator
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import HttpSection
from gateway.web.signature import sign
from tests.web.fakes import NOW, fake

SECRET = "whsec-edge-5e1f"
JWT_KEY = "sm-jwt-key-long-enough-for-hs256-0123456789"
TOKEN = "status-token-edge"
MW = "/webhooks/mobility-work"
SM = "/webhooks/servicemobility/InventoryUsage"
ALLOWED = {200, 400, 401, 404, 405, 413}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Edge:
    """One app and one event loop for every example (hypothesis calls the test synchronously)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = fake()
        self.fake.http = HttpSection(webhook_secret=SECRET, servicemobility_jwt_key=JWT_KEY, auth_token=TOKEN)
        transport = httpx.ASGITransport(app=self.fake_app(), raise_app_exceptions=True)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")

    def fake_app(self) -> Any:
        from gateway.web.server import build_app

        return build_app(self.fake.deps())

    def run(self, coro: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        return self.loop.run_until_complete(coro)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.run(self.client.post(path, content=body, headers=headers))

    def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        return self.run(self.client.get(path, headers=headers))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    e = Edge()
    yield e
    e.close()


def sendable(value: str) -> bool:
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        return False
    return "\r" not in value and "\n" not in value and "\x00" not in value and value == value.strip()


# ---------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    "header",
    [
        "t=" + "9" * 400 + ",nonce=abc,signature=" + "0" * 64,  # issue 13.9: OverflowError, HTTP 500
        "t=" + "1" * 13 + ",nonce=abc,signature=" + "0" * 64,
        "t=\u00b2,nonce=abc,signature=" + "0" * 64,  # '²'.isdigit() is True, int('²') raises
        "t=1767225600,nonce=" + "n" * 5000 + ",signature=" + "0" * 64,
    ],
)
def test_absurd_signature_headers_get_401_not_500(edge: Edge, header: str) -> None:
    body = b'{"_event": "TaskWasScheduled"}'
    transport = httpx.ASGITransport(app=edge.fake_app(), raise_app_exceptions=False)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            return await client.post(MW, content=body, headers={"X-MW-Signature": header.encode("utf-8")})

    r = edge.run(go())
    assert r.status_code == 401, (r.status_code, r.text)
    assert edge.fake.ledger.recorded == [] or all(i.body != body for i in edge.fake.ledger.recorded)


# ---------------------------------------------------------------------------- fuzz

digits = st.text(alphabet="0123456789", min_size=1, max_size=500)
header_parts = st.lists(
    st.one_of(
        digits.map(lambda d: f"t={d}"),
        st.text(max_size=30).map(lambda v: f"nonce={v}"),
        st.text(alphabet="0123456789abcdefABCDEF", max_size=80).map(lambda v: f"signature={v}"),
        st.text(max_size=20),
    ),
    max_size=5,
).map(",".join)


@FUZZ
@given(header=header_parts | st.text(max_size=200))
def test_signature_headers(edge: Edge, header: str) -> None:
    if not sendable(header):
        return
    r = edge.post(MW, b'{"_event": "X"}', {"X-MW-Signature": header})
    assert r.status_code == 401, (header, r.status_code, r.text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN/Infinity: not JSON, but senders send them


@FUZZ
@given(payload=st.dictionaries(st.text(max_size=15), json_values, max_size=6), event=json_values)
def test_signed_mobility_work_bodies(edge: Edge, payload: dict[str, Any], event: Any) -> None:
    payload["_event"] = event
    body = dumps(payload)
    t = int(NOW)
    r = edge.post(MW, body, {"X-MW-Signature": sign(SECRET, body, t=t)})
    assert r.status_code in ALLOWED, (r.status_code, r.text)


def token(claims: dict[str, Any], key: str = JWT_KEY, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


@FUZZ
@given(
    claims=st.dictionaries(
        st.sampled_from(["exp", "iat", "nbf", "aud", "iss", "sub", "x"]), json_values, max_size=5
    ),
    envelope=st.dictionaries(st.sampled_from(["id", "type", "data", "time"]), json_values, max_size=4),
    items=json_values,
)
def test_servicemobility_tokens_and_envelopes(
    edge: Edge, claims: dict[str, Any], envelope: dict[str, Any], items: Any
) -> None:
    try:
        signed = token(claims)
    except (TypeError, ValueError, OverflowError):
        return  # PyJWT cannot even encode it: not a token anyone can send
    envelope.setdefault("id", "evt-1")
    envelope.setdefault("type", "InventoryUsage")
    envelope.setdefault(
        "data", {"rows": [{"InventoryUsage": {"RefModule": "1002", "StorageLocations": [{"Items": items}]}}]}
    )
    r = edge.post(SM, dumps(envelope), {"x-access-token": signed})
    assert r.status_code in ALLOWED, (r.status_code, r.text)


segment = st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())


@FUZZ
@given(
    raw=st.one_of(
        st.text(max_size=200),
        st.lists(segment, min_size=1, max_size=4).map(".".join),
        st.tuples(st.dictionaries(st.text(max_size=5), json_values, max_size=3), json_values).map(
            lambda hp: (
                ".".join(base64.urlsafe_b64encode(dumps(part)).rstrip(b"=").decode() for part in hp) + ".sig"
            )
        ),
    )
)
def test_raw_jwts(edge: Edge, raw: str) -> None:
    if not sendable(raw):
        return
    r = edge.post(SM, b'{"id": "e", "type": "InventoryUsage", "data": {}}', {"x-access-token": raw})
    assert r.status_code == 401, (raw, r.status_code, r.text)


@FUZZ
@given(
    authorization=st.one_of(
        st.text(max_size=100),
        st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode()),
        st.text(max_size=40).map(lambda t: "Bearer " + t),
    ),
    path=st.sampled_from(["/", "/api/status", "/metrics", "/api/reconciliation", "/healthz", "/nope"]),
)
def test_authorization_headers(edge: Edge, authorization: str, path: str) -> None:
    if not sendable(authorization):
        return
    r = edge.get(path, {"Authorization": authorization})
    assert r.status_code in {200, 401, 404}, (r.status_code, r.text)
    if path not in ("/healthz",):
        assert r.status_code == 401


async def test_the_event_label_is_a_bounded_set() -> None:
    """Issue 18.9: the envelope `type` (or `_event`) of an accepted webhook became a metrics label as sent."""
    from gateway.core.events import WebhookAnswered

    f = fake()  # no secret: loopback, anything signed or not is accepted
    seen: list[str] = []
    f.events.subscribe(WebhookAnswered, lambda e: seen.append(e.event))
    async with f.client() as client:
        for n in range(5):
            body = json.dumps({"_event": f"Forged{n}", "_idempotencyKey": str(n)}).encode()
            assert (await client.post(MW, content=body)).status_code == 200
        body = json.dumps({"_event": "TaskWasScheduled", "_idempotencyKey": "k"}).encode()
        assert (await client.post(MW, content=body)).status_code == 200
    assert seen == ["other"] * 5 + ["TaskWasScheduled"]


def test_the_event_label_comes_from_the_reply_and_stays_in_the_set() -> None:
    from gateway.web.webhooks import event_label

    events = ("TaskWasScheduled", "InventoryUsage", "Forged", "unknown", "", None, 7)
    assert [event_label(e) for e in events] == [
        "TaskWasScheduled",
        "InventoryUsage",
        "other",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]
