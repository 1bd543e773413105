"""A model-based test of the outbox and the dispatcher (hypothesis RuleBasedStateMachine).

Steps: firings recorded (alone, or while a dispatcher pass runs), rows dropped and retried by an operator,
the CMMS answering with every class (done, retry, lost response = committed but the answer lost, dead, pause,
Retry-After), SQLite failing the Nth statement from now or staying full until healed, the gateway restarting
(cleanly, or killed with requests in flight that the CMMS did or did not commit), time passing.

After every step (the invariants):
- nothing uncommitted is ever sent: at each request, a separate read-only connection (it sees committed data
  only) finds the firing and its queued outbox row;
- every committed firing is delivered, dead, or held (queued) - never lost; a delivered row is one the CMMS
  has a task for;
- every possible duplicate is flagged: the CMMS holds at most 1 + maybe_committed tasks for a delivered or
  in-flight row, at most maybe_committed for any other row;
- the quota is never exceeded: the tasks the CMMS created in a month never outnumber the quota.
And `settle` checks liveness: once the disk is healed and the CMMS answers, everything queued leaves.

`make test` runs a small budget; `make torture` (campaign sqlite_faults) runs the same machine longer, with
MW_MODEL_EXAMPLES / MW_MODEL_STEPS.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.config import DispatcherSection
from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome
from gateway.core.firings import Firing, Priority, TaskSpec
from gateway.runtime.dispatcher import Dispatcher, DispatcherState
from gateway.store import Store
from gateway.store.db import DB_FILENAME
from gateway.store.faults import FaultPlan, inject

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
QUOTA = 6
ANSWERS = ("done", "retry", "lost", "dead", "pause", "retry_after")


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m")


class FakeCMMS:
    """The CMMS side: which tasks exist (per firing uuid, with the month they were created in), what each
    request finds. `answer` is the class of the next answers; `hang` makes requests wait forever."""

    kind = "fake"
    counts_against_quota = True

    def __init__(self, db_path: Path, clock: ManualClock) -> None:
        self.db_path = db_path
        self.clock = clock
        self.answer = "done"
        self.hang: asyncio.Event | None = None
        self.tasks: list[tuple[str, str]] = []  # (firing uuid, month created)
        self.uncommitted_sends: list[str] = []  # requests for firings not committed: must stay empty
        self.sent: list[str] = []  # firing uuid of every request, in order

    def committed(self, item: OutboxItem) -> bool:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT o.status FROM outbox o JOIN firings f ON f.id = o.firing_id"
                " WHERE o.id = ? AND f.uuid = ? AND o.claim_token IS ?",
                (item.outbox_id, item.firing_uuid, item.claim),
            ).fetchone()
        finally:
            conn.close()
        return row is not None and row[0] == "queued" and item.claim is not None

    async def start(self) -> NetworkInfo:
        return NetworkInfo()

    async def deliver(self, item: OutboxItem) -> Delivery:
        self.sent.append(item.firing_uuid)
        if not self.committed(item):
            self.uncommitted_sends.append(f"{item.outbox_id}:{item.firing_uuid}")
        if self.hang is not None:
            await self.hang.wait()
        answer = self.answer
        if answer in ("done", "lost"):
            self.tasks.append((item.firing_uuid, month_of(self.clock.now())))
        if answer == "done":
            return Delivery(Outcome.DONE, 201)
        if answer == "lost":
            return Delivery(Outcome.RETRY, None, "read timeout", maybe_committed=True)
        if answer == "retry":
            return Delivery(Outcome.RETRY, 503, "HTTP 503")
        if answer == "retry_after":
            return Delivery(Outcome.RETRY, 429, "HTTP 429", retry_after_s=float("inf"))
        if answer == "dead":
            return Delivery(Outcome.DEAD, 400, "HTTP 400")
        return Delivery(Outcome.PAUSE, 401, "HTTP 401")

    async def aclose(self) -> None:
        pass


def firing(key: str, high: bool) -> Firing:
    return Firing(
        key=key,
        rule_id=key.split(":")[0],
        fired_at=T0,
        task=TaskSpec(equipment="EQ-1", description=f"task {key}", assignees=(3,)),
        priority=Priority.HIGH if high else Priority.NORMAL,
        while_open="create",
    )


DISPATCH = DispatcherSection(
    concurrency=2,
    rate_limit=100_000,
    retry_initial=1,
    retry_max=8,
    pause_probe_interval=30,
    idle_poll=1,
)


class OutboxModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # tmpfs when there is one: this test is about logic, the fsyncs of a real disk only slow it down
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-", dir=shm))
        self.clock = ManualClock(T0)
        self.cmms = FakeCMMS(self.dir / DB_FILENAME, self.clock)
        self.plan = FaultPlan()
        self.store: Store | None = None
        self.dispatcher: Dispatcher | None = None
        self.seq = 0
        self.committed: set[str] = set()  # firing keys recorded by a call that returned

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize()
    def open(self) -> None:
        self._open()

    def _open(self) -> None:
        self.store = self.run(Store.open(self.dir, gateway_id="gw", clock=self.clock))
        inject(self.store.db, self.plan)
        self.dispatcher = Dispatcher(
            self.store, self.cmms, settings=DISPATCH, quota=QUOTA, clock=self.clock, rng=random.Random(3)
        )

    def _close(self) -> None:
        assert self.store is not None
        self.run(self.store.close())
        self.store = self.dispatcher = None

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self._close()
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ steps

    async def _record(self, n: int, high: bool) -> None:
        assert self.store is not None
        keys = [f"r{(self.seq + i) % 3}:{self.seq + i}" for i in range(n)]
        self.seq += n
        try:
            await self.store.outbox.record_firings([firing(k, high) for k in keys])
        except sqlite3.Error:
            return  # rolled back: nothing of it may ever be sent
        self.committed.update(keys)

    async def _pass(self) -> None:
        assert self.dispatcher is not None
        try:
            await self.dispatcher.drain_once()
        except sqlite3.Error:
            pass  # run() logs and goes on; drain_once lets the test see it

    @rule(n=st.integers(1, 3), high=st.booleans())
    def record(self, n: int, high: bool) -> None:
        self.run(self._record(n, high))

    @rule(n=st.integers(1, 3), high=st.booleans(), fail=st.booleans())
    def record_while_dispatching(self, n: int, high: bool, fail: bool) -> None:
        """A dispatcher pass runs while a burst's transaction is open (its rows inserted, not committed);
        then the burst commits, or its COMMIT fails (disk full) and it rolls back."""
        if fail:
            self.plan.fail_next.append("COMMIT")
        paused, go_on = self.plan.hold_after("INSERT INTO OUTBOX")

        async def both() -> None:
            burst = asyncio.create_task(self._record(n, high))
            held = asyncio.create_task(paused.wait())
            await asyncio.wait([burst, held], return_when="FIRST_COMPLETED")
            held.cancel()
            dispatching = asyncio.create_task(self._pass())
            for _ in range(5):  # let the pass read (and try to claim) while the transaction is open
                await asyncio.sleep(0.002)
            go_on.set()
            await asyncio.gather(burst, dispatching)

        self.run(both())
        self.plan.clear_hold()  # a burst of duplicates inserts no outbox row: the hold never came

    @rule()
    def dispatch(self) -> None:
        self.run(self._pass())

    @rule(answer=st.sampled_from(ANSWERS))
    def cmms_answers(self, answer: str) -> None:
        self.cmms.answer = answer

    @rule(seconds=st.sampled_from([1.0, 10.0, 60.0, 3600.0, 20 * 86400.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(n=st.integers(1, 12))
    def fail_nth_statement(self, n: int) -> None:
        self.plan.fail_at.add(self.plan.count + n)

    @rule()
    def disk_full(self) -> None:
        self.plan.fail_from = self.plan.count + 1

    @rule()
    def disk_healed(self) -> None:
        self.plan.heal()

    @rule(pick=st.integers(0, 1000), drop=st.booleans())
    def operator(self, pick: int, drop: bool) -> None:
        assert self.store is not None
        action = self.store.outbox.drop if drop else self.store.outbox.retry
        try:
            rows = self.run(self.store.outbox.list(limit=1000))
            if rows:
                self.run(action(rows[pick % len(rows)].id))
        except sqlite3.Error:
            pass

    @rule()
    def restart(self) -> None:
        self._close()
        self._open()

    @rule(committed=st.booleans())
    def killed_mid_request(self, committed: bool) -> None:
        """SIGKILL while requests are in flight; the CMMS did (or did not) create their tasks."""
        assert self.dispatcher is not None
        d = self.dispatcher
        self.cmms.hang = asyncio.Event()

        async def kill() -> None:
            try:
                await d.recover()
                await d._start_due()
            except sqlite3.Error:
                pass
            for _ in range(50):
                await asyncio.sleep(0)
            for task in list(d._inflight.values()):
                task.cancel()
            await asyncio.gather(*d._inflight.values(), return_exceptions=True)

        before = len(self.cmms.sent)
        self.run(kill())
        if committed:
            # Every request that reached the CMMS was committed there; its answer is lost with the process.
            for uid in self.cmms.sent[before:]:
                self.cmms.tasks.append((uid, month_of(self.clock.now())))
        self.cmms.hang = None
        self._close()
        self._open()

    @rule()
    def settle(self) -> None:
        """Liveness: disk healed, CMMS answering: every queued row leaves (or waits for the quota)."""
        assert self.dispatcher is not None and self.store is not None
        self.plan.heal()
        self.cmms.answer = "done"
        self.dispatcher.resume()
        idle = 0
        for _ in range(40):
            self.clock.advance(3700)  # past any backoff, probe, Retry-After cap or store pause
            started = self.run(self.dispatcher.drain_once())
            idle = 0 if started else idle + 1
            if idle == 3:
                break
        counts = self.run(self.store.outbox.counts())
        status = self.dispatcher.status
        # Quota: held at the limit, or inside the reserve where only priority high leaves.
        held = status.state is DispatcherState.QUOTA_HELD or status.high_only
        assert counts["queued"] + counts["retrying"] == 0 or held, (counts, self.dispatcher.status)

    # ------------------------------------------------------------------ invariants

    def _rows(self) -> list[tuple[str, str, str, int, float | None]]:
        conn = sqlite3.connect(f"file:{self.cmms.db_path}?mode=ro", uri=True)
        try:
            return conn.execute(
                "SELECT f.key, f.uuid, o.status, o.maybe_committed, o.attempt_started_at"
                " FROM firings f LEFT JOIN outbox o ON o.firing_id = f.id"
            ).fetchall()
        finally:
            conn.close()

    @invariant()
    def nothing_uncommitted_is_sent(self) -> None:
        assert self.cmms.uncommitted_sends == []

    @invariant()
    def committed_firings_are_kept_and_duplicates_flagged(self) -> None:
        if self.store is None:
            return
        rows = self._rows()
        stored = {key for key, *_ in rows}
        assert self.committed <= stored, self.committed - stored  # nothing acknowledged is lost
        tasks = Counter(uid for uid, _ in self.cmms.tasks)
        for _key, uid, status, maybe, started in rows:
            assert status in ("queued", "delivered", "dead", "dropped"), status  # never without a row
            made = tasks.get(uid, 0)
            if status == "delivered":
                assert made >= 1, f"{uid} marked delivered, the CMMS has no task for it"
            # A delivered row, or one in flight (its result not recorded yet), may have one unflagged task;
            # every other task the CMMS holds for it must be flagged as a possible duplicate.
            base = 1 if status == "delivered" or started is not None else 0
            assert made <= base + maybe, f"{uid}: {made} tasks, {maybe} flagged, status {status}"

    @invariant()
    def the_quota_is_never_exceeded(self) -> None:
        per_month = Counter(month for _, month in self.cmms.tasks)
        assert all(n <= QUOTA for n in per_month.values()), per_month


TestOutboxModel = OutboxModel.TestCase
TestOutboxModel.settings = settings(
    max_examples=int(os.environ.get("MW_MODEL_EXAMPLES", "50")),
    stateful_step_count=int(os.environ.get("MW_MODEL_STEPS", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("MW_MODEL_RANDOM") is None,
)
