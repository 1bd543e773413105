"""Fuzz the webhook endpoints over real HTTP: whatever comes in, the answer is never a 500."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.web.read_mw import KNOWN_EVENTS
from gateway.web.signature import sign
from tests.web.webhook_server import MW_PATH, SECRET, SM_JWT_KEY, SM_PATH, running_receiver, sm_token

ALLOWED = {200, 400, 401, 413}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The receiver served from its own thread and loop, so hypothesis can call it synchronously."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    ready, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        async with running_receiver(
            tmp, port, webhook_secret=SECRET, max_body_bytes=64 * 1024, servicemobility_jwt_key=SM_JWT_KEY
        ):
            ready.set()
            await asyncio.to_thread(stop.wait)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the fixture below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)
    assert not errors, errors
    yield f"http://127.0.0.1:{port}"
    stop.set()
    thread.join(30)
    assert not errors, errors


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
field_names = st.sampled_from(
    [
        "taskId",
        "id",
        "legacyId",
        "metadata",
        "task",
        "sparePart",
        "consumed",
        "stock",
        "activity",
        "scheduled",
        "started",
        "canceled",
        "doneAt",
        "initiator",
        "associatedTo",
        "_idempotencyKey",
        "restocked",
        "recounted",
        "location",
        "emittedAt",
        "quantity",
        "articleCode",
        "firing",
    ]
)
webhooks = st.fixed_dictionaries(
    {"_event": st.sampled_from([*KNOWN_EVENTS, "Unknown"]) | st.text(max_size=10)},
    optional={"_idempotencyKey": st.text(max_size=10) | st.integers()},
).flatmap(lambda base: st.dictionaries(field_names, json_values, max_size=6).map(lambda d: {**d, **base}))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.binary(max_size=2000))
def test_random_bytes_never_get_a_500(server_url: str, client: httpx.Client, body: bytes) -> None:
    for path in (MW_PATH, SM_PATH):
        headers = {"X-MW-Signature": sign(SECRET, body), **sm_token()}
        r = client.post(server_url + path, content=body, headers=headers)
        assert r.status_code in ALLOWED, (r.status_code, r.text)


@FUZZ
@given(payload=webhooks)
def test_signed_webhook_shaped_json_never_gets_a_500(
    server_url: str, client: httpx.Client, payload: dict[str, Any]
) -> None:
    body = json.dumps(payload).encode()
    r = client.post(server_url + MW_PATH, content=body, headers={"X-MW-Signature": sign(SECRET, body)})
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    if isinstance(payload["_event"], str) and payload["_event"].strip():
        assert r.status_code == 200


@FUZZ
@given(
    payload=st.dictionaries(st.sampled_from(["id", "type", "data", "rows", "time"]), json_values, max_size=5),
    data=json_values,
)
def test_servicemobility_envelopes_never_get_a_500(
    server_url: str, client: httpx.Client, payload: dict[str, Any], data: Any
) -> None:
    payload.setdefault("type", "InventoryUsage")
    payload["data"] = {
        "rows": [{"InventoryUsage": {"RefModule": "1002", "StorageLocations": [{"Items": data}]}}]
    }
    r = client.post(server_url + SM_PATH, content=json.dumps(payload).encode(), headers=sm_token())
    assert r.status_code in ALLOWED, (r.status_code, r.text)


@FUZZ
@given(header=st.text(max_size=120))
def test_random_signature_headers_get_401(server_url: str, client: httpx.Client, header: str) -> None:
    try:
        r = client.post(server_url + MW_PATH, content=b'{"_event": "X"}', headers={"X-MW-Signature": header})
    except (UnicodeEncodeError, httpx.LocalProtocolError):
        return  # not sendable as an HTTP header at all
    assert r.status_code == 401
