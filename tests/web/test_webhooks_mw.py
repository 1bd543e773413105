"""POST /webhooks/mobility-work over real HTTP: document samples, signatures, dedupe, limits, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.web.signature import compute_signature, format_header, sign
from tests.web.webhook_server import MW_PATH, PREVIOUS_SECRET, SECRET, raw_request, running_receiver

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mobility_work"
SAMPLES = sorted(FIXTURES.glob("*.json")) + sorted((FIXTURES / "latest").glob("*.json"))


def signed_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    t: int | None = None,
    nonce: str | None = None,
    template: str = "{t}.{nonce}.{body}",
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-MW-Signature": sign(secret, body, t=t, nonce=nonce, template=template),
    }


def test_fixtures_cover_every_event_of_the_documents() -> None:
    events = {json.loads(p.read_bytes())["_event"] for p in SAMPLES}
    assert events == {
        "TaskWasScheduled",
        "TaskWasStarted",
        "TaskWasCompleted",
        "TaskWasCanceled",
        "ActivityWasAddedOnTask",
        "SparePartWasConsumed",
        "SparePartConsumptionWasCanceled",
        "SparePartWasRestocked",
        "SparePartWasManuallyRecounted",
        "SparePartWasOutOfStock",
        "SparePartStockWasUnderMinThreshold",
    }


async def test_every_document_sample_is_accepted_and_stored(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    async with running_receiver(tmp_path, port, webhook_secret=SECRET) as gw, httpx.AsyncClient() as client:
        for path in SAMPLES:
            body = path.read_bytes()  # verbatim
            r = await client.post(gw.url + MW_PATH, content=body, headers=signed_headers(body))
            assert r.status_code == 200, (path.name, r.text)
            assert r.json()["status"] == "stored", path.name
        events = await gw.store.ledger.events()
        assert len(events) == len(SAMPLES)
        assert all(e["known"] for e in events)
        assert [e["body"] for e in events] == [p.read_bytes() for p in SAMPLES]  # kept verbatim
        # Stock events reached the engine as cmms.stock.<articleCode> samples (value = current stock).
        by_signal = {(s.signal, s.value) for s in gw.samples}
        assert ("cmms.stock.SP987678", 98.0) in by_signal  # under the minimum threshold: stock.value
        assert ("cmms.stock.SP987678", 0.0) in by_signal  # out of stock
        assert ("cmms.stock.whr484zb", 119.0) in by_signal  # restocked / recounted: sparePart.stock
        # Consumption of the samples is recorded against their task (no firing: these are not ours).
        moves = await gw.store.ledger.movements(task_ids=["dfe1da12"])
        assert sorted((m.kind, m.quantity) for m in moves) == [
            ("canceled", -3.0),
            ("consumed", 3.0),
            ("consumed", 3.0),
        ]
        # The samples arrive canceled before completed (file order): the first terminal state stays.
        task = await gw.store.ledger.task("32828f62")
        assert task is not None and task.state == "canceled" and task.scheduled_by == "John Doe"
        assert task.completed_at is not None and task.started_at is not None


async def test_duplicate_delivery_is_stored_once(tmp_path: Path, free_port: Callable[[], int]) -> None:
    body = (FIXTURES / "latest" / "TaskWasStarted.json").read_bytes()
    async with (
        running_receiver(tmp_path, free_port(), webhook_secret=SECRET) as gw,
        httpx.AsyncClient() as client,
    ):
        first = await client.post(gw.url + MW_PATH, content=body, headers=signed_headers(body))
        # The CMMS retries with a fresh signature (new t and nonce), same _idempotencyKey.
        second = await client.post(gw.url + MW_PATH, content=body, headers=signed_headers(body))
        # The very same request again (same header): the retry of an answer that was lost.
        headers = signed_headers(body)
        third = await client.post(gw.url + MW_PATH, content=body, headers=headers)
        fourth = await client.post(gw.url + MW_PATH, content=body, headers=headers)
        assert [r.status_code for r in (first, second, third, fourth)] == [200, 200, 200, 200]
        assert [r.json()["status"] for r in (first, second, third, fourth)] == [
            "stored",
            "duplicate",
            "duplicate",
            "duplicate",
        ]
        assert await gw.count() == 1


async def test_refused_requests_store_nothing(tmp_path: Path, free_port: Callable[[], int]) -> None:
    body = (FIXTURES / "latest" / "TaskWasCompleted.json").read_bytes()
    other = (FIXTURES / "latest" / "TaskWasCanceled.json").read_bytes()
    now = int(time.time())
    async with (
        running_receiver(tmp_path, free_port(), webhook_secret=SECRET) as gw,
        httpx.AsyncClient() as client,
    ):

        async def post(content: bytes, headers: dict[str, str]) -> httpx.Response:
            return await client.post(gw.url + MW_PATH, content=content, headers=headers)

        cases = {
            "no signature": (body, {"Content-Type": "application/json"}),
            "wrong secret": (body, signed_headers(body, secret="not-the-secret")),
            "signature of another body": (body, {"X-MW-Signature": signed_headers(other)["X-MW-Signature"]}),
            "old timestamp": (body, signed_headers(body, t=now - 400)),
            "future timestamp": (body, signed_headers(body, t=now + 400)),
            "malformed header": (body, {"X-MW-Signature": "t=abc,nonce=,signature=zz"}),
            "hex signature but tampered": (body, {"X-MW-Signature": format_header(now, "n", "0" * 64)}),
        }
        for name, (content, headers) in cases.items():
            r = await post(content, headers)
            assert r.status_code == 401, name
            assert SECRET not in r.text
        # A replayed nonce: validly signed (by someone holding the secret) but the nonce was used already.
        ok = await post(body, signed_headers(body, nonce="nonce-0001"))
        assert ok.status_code == 200
        replay = await post(other, signed_headers(other, nonce="nonce-0001"))
        assert replay.status_code == 401 and "nonce" in replay.json()["error"]
        # Signed but malformed: 400.
        for bad in (
            b'{"_event": "TaskWasStarted", "taskId": "32',
            b"not json",
            b"[1, 2]",
            b'"text"',
            b'{"taskId": "x"}',
            b'{"_event": 42}',
            b'{"_event": ""}',
            b"\xff\xfe\x00",
            b"",
            b'{"_event": "TaskWasStarted", "x": NaN}',
            b"[" * 100_000,
        ):
            r = await post(bad, signed_headers(bad))
            assert r.status_code == 400, bad[:40]
        assert await gw.count() == 1
        assert [e["event"] for e in await gw.store.ledger.events()] == ["TaskWasCompleted"]


async def test_two_secrets_during_rotation_and_a_custom_template(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    template = "{nonce}:{t}:{body}"
    async with (
        running_receiver(
            tmp_path,
            free_port(),
            webhook_secret=SECRET,
            webhook_secret_previous=PREVIOUS_SECRET,
            signature_template=template,
        ) as gw,
        httpx.AsyncClient() as client,
    ):
        results = []
        for n, secret in enumerate((SECRET, PREVIOUS_SECRET, "third")):
            body = json.dumps({"_event": "Custom", "_idempotencyKey": f"k{n}"}).encode()
            r = await client.post(
                gw.url + MW_PATH, content=body, headers=signed_headers(body, secret=secret, template=template)
            )
            results.append(r.status_code)
        body = b'{"_event": "Custom", "_idempotencyKey": "default-template"}'
        r = await client.post(
            gw.url + MW_PATH, content=body, headers=signed_headers(body)
        )  # default template
        assert [*results, r.status_code] == [200, 200, 401, 401]
        assert await gw.count() == 2


async def test_signature_is_over_the_raw_bytes(tmp_path: Path, free_port: Callable[[], int]) -> None:
    pretty = b'{\n  "_event": "TaskWasStarted",\n  "taskId": "abc"\n}'
    t, nonce = int(time.time()), "raw-bytes"
    minified_sig = compute_signature(SECRET, t=t, nonce=nonce, body=json.dumps(json.loads(pretty)).encode())
    async with (
        running_receiver(tmp_path, free_port(), webhook_secret=SECRET) as gw,
        httpx.AsyncClient() as client,
    ):
        bad = await client.post(
            gw.url + MW_PATH,
            content=pretty,
            headers={"X-MW-Signature": format_header(t, nonce, minified_sig)},
        )
        good = await client.post(gw.url + MW_PATH, content=pretty, headers=signed_headers(pretty))
        assert (bad.status_code, good.status_code) == (401, 200)


async def test_unknown_events_are_stored_and_acknowledged(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    body = b'{"_event": "EquipmentWasRenamed", "_idempotencyKey": "u1", "equipment": {"id": 1}}'
    async with running_receiver(tmp_path, free_port()) as gw, httpx.AsyncClient() as client:  # no secret
        r = await client.post(gw.url + MW_PATH, content=body)
        assert r.status_code == 200
        [event] = await gw.store.ledger.events()
        assert (event["event"], event["known"], event["body"]) == ("EquipmentWasRenamed", False, body)


async def test_body_size_is_limited(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    ten_mb = b'{"_event": "X", "pad": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    async with running_receiver(tmp_path, port, webhook_secret=SECRET) as gw:
        # Content-Length says 10 MB: refused before the body is read.
        head = (
            f"POST {MW_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-MW-Signature: {sign(SECRET, ten_mb)}\r\nContent-Length: {len(ten_mb)}\r\n\r\n"
        ).encode()
        answer = await asyncio.to_thread(
            raw_request, port, head, [ten_mb[i : i + 65536] for i in range(0, len(ten_mb), 65536)]
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:80]

        # Chunked, no Content-Length: the stream is cut at the cap.
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(ten_mb), 1 << 20):
                yield ten_mb[i : i + (1 << 20)]

        async with httpx.AsyncClient() as client:
            try:
                r = await client.post(
                    gw.url + MW_PATH, content=chunks(), headers={"X-MW-Signature": sign(SECRET, ten_mb)}
                )
                assert r.status_code == 413
            except httpx.WriteError:
                pass  # the server answered 413 and closed while the client was still sending
        assert await gw.count() == 0


async def test_a_body_cut_short_is_not_stored(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    body = (FIXTURES / "latest" / "SparePartWasConsumed.json").read_bytes()
    async with running_receiver(tmp_path, port) as gw:  # no secret: only the cut can refuse it
        head = (
            f"POST {MW_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        answer = await asyncio.to_thread(raw_request, port, head, [body[: len(body) // 2]])
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:80]
        # The same body, whole, is then stored normally.
        async with httpx.AsyncClient() as client:
            r = await client.post(gw.url + MW_PATH, content=body)
        assert r.status_code == 200
        assert await gw.count() == 1


async def test_completed_task_reaches_the_engine_callback(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    from gateway.core.firings import Firing, TaskSpec

    async with running_receiver(tmp_path, free_port()) as gw, httpx.AsyncClient() as client:
        [rec] = await gw.store.outbox.record_firings(
            [
                Firing(
                    key="press1-lube:50000",
                    rule_id="press1-lube",
                    fired_at=time.time(),
                    task=TaskSpec(equipment="EQ-0001", description="Lubricate", assignees=(3,)),
                )
            ]
        )
        for name in ("TaskWasScheduled", "TaskWasCompleted"):
            payload = json.loads((FIXTURES / "latest" / f"{name}.json").read_bytes())
            payload["metadata"] = {"gateway": "gw-test", "rule": "press1-lube", "firing": rec.uuid}
            payload["_idempotencyKey"] = name
            r = await client.post(gw.url + MW_PATH, content=json.dumps(payload).encode())
            assert r.status_code == 200
        assert [(c.rule_id, c.outcome, c.task_id, c.firing_uuid) for c in gw.closed] == [
            ("press1-lube", "completed", "32828f62", rec.uuid)
        ]
        row = await gw.store.db.fetchone(
            "SELECT task_id, task_state FROM firings WHERE uuid = ?", (rec.uuid,)
        )
        assert row is not None and tuple(row) == ("32828f62", "completed")


@pytest.mark.parametrize("path", [MW_PATH, MW_PATH + "/"])
async def test_both_spellings_of_the_path(tmp_path: Path, free_port: Callable[[], int], path: str) -> None:
    async with running_receiver(tmp_path, free_port()) as gw, httpx.AsyncClient() as client:
        r = await client.post(gw.url + path, content=b'{"_event": "Ping"}')
        assert r.status_code == 200
