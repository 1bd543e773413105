"""The state directory's size and free space, the nearly-full report, and retention pruning."""

from __future__ import annotations

import os

from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, Outcome
from gateway.core.firings import Firing, TaskSpec
from gateway.core.units import human_bytes
from gateway.runtime.disk import check_disk, directory_size
from gateway.runtime.housekeeping import prune
from gateway.store import Store


def test_size_and_free_space_of_the_state_directory(tmp_path):
    (tmp_path / "gateway.sqlite3").write_bytes(b"x" * 5000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cache").write_bytes(b"y" * 300)
    status = check_disk(tmp_path, min_free_bytes=1)
    assert status.state_bytes == directory_size(tmp_path) == 5300
    assert 0 < status.free_bytes <= status.total_bytes
    assert status.writable and status.ok and not status.nearly_full


def test_nearly_full_is_reported_before_the_disk_is_full_and_clears_when_space_returns(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    full = check_disk(tmp_path, min_free_bytes=free + 10**12, min_free_ratio=0)
    assert full.nearly_full and not full.ok
    assert full.problem.startswith("disk nearly full: ") and "queued work is kept" in full.problem
    again = check_disk(tmp_path, min_free_bytes=1, min_free_ratio=0)  # an operator freed space
    assert again.ok and again.problem == ""


def test_the_threshold_is_the_larger_of_bytes_and_ratio(tmp_path):
    st = os.statvfs(tmp_path)
    total = st.f_blocks * st.f_frsize
    assert check_disk(tmp_path, min_free_bytes=1, min_free_ratio=0.5).min_free_bytes == int(total * 0.5)
    assert check_disk(tmp_path, min_free_bytes=total * 2, min_free_ratio=0.01).min_free_bytes == total * 2


def test_a_state_directory_not_created_yet_is_measured_on_its_parent(tmp_path):
    status = check_disk(tmp_path / "not" / "yet", min_free_bytes=1)
    assert status.state_bytes == 0 and status.ok


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 2048, 5 * 2**20, 3 * 2**30)] == [
        "512 B",
        "2.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


async def test_retention_prunes_only_delivered_rows_older_than_the_period(tmp_path):
    clock = ManualClock(1_700_000_000.0)
    store = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    try:

        def firing(n: int) -> Firing:
            return Firing(
                key=f"r:{n}",
                rule_id="r",
                fired_at=clock.now(),
                task=TaskSpec(equipment=f"EQ-{n}", description=f"task {n}"),
            )

        await store.outbox.record_firings([firing(1), firing(2), firing(3)])
        items = await store.outbox.due(now=clock.now(), limit=10)
        old, dead, recent = items
        await store.outbox.mark_delivered(
            old, Delivery(Outcome.DONE, status_code=201), backend="mobility_work", quota_month=None
        )
        await store.outbox.mark_dead(dead, Delivery(Outcome.DEAD, status_code=400, error="HTTP 400"))
        clock.advance(20 * 86400)
        await store.outbox.mark_delivered(
            recent, Delivery(Outcome.DONE, status_code=201), backend="mobility_work", quota_month=None
        )
        clock.advance(15 * 86400)  # old: delivered 35 days ago; recent: 15 days ago

        result = await prune(store, now=clock.now(), retention_s=30 * 86400)

        assert result.outbox_rows == 1
        left = {(r.id, r.status.value) for r in await store.outbox.list()}
        assert left == {(dead.outbox_id, "dead"), (recent.outbox_id, "delivered")}
        assert (await store.outbox.firing_counts())["queued"] == 3  # the firings themselves are kept
        assert (await prune(store, now=clock.now(), retention_s=30 * 86400)).total == 0
    finally:
        await store.close()


async def test_a_database_refusing_writes_is_reported_on_healthz_and_the_gateway_recovers_by_itself(
    tmp_path, free_port, monkeypatch
):
    import httpx

    import gateway.runtime.pipeline
    from tests.e2e.helpers import wait_for
    from tests.web.ops_gateway import running_gateway

    monkeypatch.setattr(gateway.runtime.pipeline, "STORE_RETRY_S", 0.1)
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        await run.set_strokes(10)
        await run.wait_for_sample("press1.strokes", 10)
        conn = run.gw.store.db.conn
        await conn.execute("PRAGMA query_only = ON")  # every write now fails, as on a read-only or full disk

        await run.set_strokes(1010)

        async def unhealthy() -> httpx.Response | None:
            response = await client.get("/healthz")
            return response if response.status_code == 503 else None

        body = (await wait_for(unhealthy, what="/healthz to report the database")).json()
        assert body["reasons"] == [
            "database not writable: the state database is read-only: "
            "check the permissions of the state directory"
        ]
        assert run.sim.state.tasks == []  # the firing waits in memory; nothing half-written

        await conn.execute("PRAGMA query_only = OFF")  # the operator fixed it
        await wait_for(lambda: len(run.sim.state.tasks) == 1, what="the held firing to be delivered")

        async def healthy() -> httpx.Response | None:
            response = await client.get("/healthz")
            return response if response.status_code == 200 else None

        assert (await wait_for(healthy, what="/healthz to recover")).json() == {"status": "ok", "reasons": []}
        assert run.gw.firings_out == 1
