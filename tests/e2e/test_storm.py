"""A firing storm: 2,000 firings through the real store, dispatcher and Mobility Work backend, over HTTP to
the real simulator, which fails about 30% of the calls at random (5xx, 429 with Retry-After, connection
resets, timeouts, committed-but-the-response-lost) and goes down twice. In process, so it is fast.

What must hold: every firing delivered; no firing became two tasks unless its outbox row says the request
may have been committed (every injected commit_lost case among them), and no request was retried after a
clear answer.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

from gateway.cmms.mobility_work import MobilityWorkBackend
from gateway.cmms.schema import HttpClientOptions, MobilityWorkConfig
from gateway.config import DispatcherSection
from gateway.core.firings import Firing, Priority, TaskSpec, firing_uuid
from gateway.runtime.dispatcher import Dispatcher
from gateway.sim.mobility_work import Fault, run_mobility_work_sim
from gateway.store import Store

N_FIRINGS = 2000
API_KEY = "storm-key-0123456789"
GATEWAY = "storm-gw"


def storm_firings(rng: random.Random) -> list[Firing]:
    return [
        Firing(
            key=f"r{i % 7}:{i}",
            rule_id=f"r{i % 7}",
            fired_at=1_767_225_600.0 + i,
            task=TaskSpec(
                equipment="EQ-0001" if i % 2 else 7111,
                description=f"Storm task number {i}",
                assignees=("john.doe@example.com",) if i % 3 else (3,),
                tags=("storm",),
            ),
            priority=Priority.HIGH if rng.random() < 0.1 else Priority.NORMAL,
            while_open="create",
        )
        for i in range(N_FIRINGS)
    ]


def faults(seed: int) -> list[Fault]:
    """About 30% of task POSTs fail, in five different ways."""
    post = {"path": "/partners/v1/tasks", "method": "POST"}
    return [
        Fault("http_5xx", probability=0.12, seed=seed, status=503, **post),
        Fault("http_5xx", probability=0.03, seed=seed + 1, status=500, **post),
        Fault("http_429", probability=0.03, seed=seed + 2, retry_after="0.01", **post),
        Fault("reset", probability=0.05, seed=seed + 3, **post),
        Fault("timeout", probability=0.03, seed=seed + 4, **post),
        Fault("commit_lost", probability=0.05, seed=seed + 5, **post),
    ]


async def test_storm_of_2000_firings_with_faults_and_two_outages(tmp_path: Path) -> None:
    rng = random.Random(2026)
    async with run_mobility_work_sim(api_key=API_KEY) as sim:
        sim.set_faults(*faults(seed=11))
        config = MobilityWorkConfig(
            kind="mobility_work",
            url=sim.url,
            api_key=API_KEY,  # type: ignore[arg-type]
            plan="ultimate",
            http=HttpClientOptions(connect_timeout=1.0, read_timeout=0.2),
        )
        backend = MobilityWorkBackend(config, gateway_id=GATEWAY)
        store = await Store.open(tmp_path, gateway_id=GATEWAY)
        settings = DispatcherSection(
            concurrency=8, rate_limit=5000, retry_initial=0.02, retry_max=0.3, idle_poll=0.05
        )
        dispatcher = Dispatcher(store, backend, settings=settings, quota=config.quota, rng=random.Random(1))
        try:
            assert (await backend.start()).timezone == "Europe/Paris"
            firings = storm_firings(rng)
            for start in range(0, N_FIRINGS, 250):  # bursts, one transaction each
                await store.outbox.record_firings(firings[start : start + 250])
            runner = asyncio.create_task(dispatcher.run())
            try:
                for threshold in (N_FIRINGS // 4, (N_FIRINGS * 3) // 5):  # down twice, mid-storm
                    await until_delivered(store, threshold)
                    await sim.down()
                    await asyncio.sleep(0.4)
                    await sim.up()
                await until_delivered(store, N_FIRINGS, timeout_s=120)
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

            counts = await store.outbox.counts()
            assert counts["delivered"] == N_FIRINGS and counts["dead"] == 0 and counts["queued"] == 0
            rows = {r.firing_uuid: r for r in await store.outbox.list(limit=N_FIRINGS * 2)}
            assert len(rows) == N_FIRINGS
            tasks_per_firing = Counter(t.metadata.get("firing") for t in sim.state.tasks)
            flagged = {uid for uid, r in rows.items() if r.maybe_duplicated}

            # Every firing became a task in the CMMS.
            assert set(tasks_per_firing) == set(rows)
            # Two tasks for one firing only where the row says the request may have been committed.
            duplicated = {uid for uid, n in tasks_per_firing.items() if n > 1}
            assert duplicated <= flagged
            # Every injected commit_lost POST was reported on its row.
            lost = [r for r in sim.state.requests if r.fault == "commit_lost"]
            assert len(lost) >= 20  # the fault really was exercised
            lost_firings = {r.body["metadata"]["firing"] for r in lost}
            assert lost_firings <= flagged
            # Each of them did make a second task once retried (the simulator committed the first).
            assert lost_firings <= duplicated
            # No request without a fault, once answered 201, was ever sent again for the same firing.
            answered = Counter(
                r.body["metadata"]["firing"]
                for r in sim.state.requests
                if r.status == 201 and r.fault is None
            )
            assert max(answered.values()) == 1
            # The faults came out near the intended 30% of the task POSTs (outages aside).
            posts = [r for r in sim.state.requests if r.path == "/partners/v1/tasks"]
            share = sum(1 for r in posts if r.fault) / len(posts)
            assert 0.2 < share < 0.4, share
            # HTTP keep-alive: far fewer connections than requests.
            assert len({r.client for r in posts}) < len(posts) / 5
            # The uuids in the CMMS are the store's (deterministic per firing key).
            assert (
                firing_uuid(await store.outbox.installation_id(), GATEWAY, firings[0].key) in tasks_per_firing
            )
        finally:
            await backend.aclose()
            await store.close()


async def until_delivered(store: Store, n: int, *, timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if (await store.outbox.counts())["delivered"] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {n} delivered after {timeout_s} s: {await store.outbox.counts()}")
