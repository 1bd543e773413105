"""The CMMS side of tests/e2e/test_any_cmms.py: one adapter per backend kind over its real simulator.

Each adapter runs the simulator, takes it down and brings it back on the same port with the same state (the
outage), writes the `cmms:` section of gateway.yaml (the only part that changes between backends), and reads
back what the simulator received, keyed by firing uuid, so that the test can say "exactly one per firing".
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

from gateway.sim.amage import AmageSimState, run_amage_sim
from gateway.sim.mobility_work import MobilityWorkSim, run_mobility_work_sim
from gateway.sim.servitly import ServitlySimState, run_servitly_sim

MW_API_KEY = "any-cmms-mw-key-0123456789"
AMAGE_DEVICE = "0b6f6a52-7a1e-4c1f-9a51-5f0d3c2b1a00"
AMAGE_API_KEY = "any-cmms-amage-key"
AMAGE_SECRET = "any-cmms-amage-secret"
AMAGE_USER = "5a3c1d2e-0000-4000-8000-00000000a001"  # maintenance@factory.example in AMAGE
AMAGE_LUBE = "5a3c1d2e-0000-4000-8000-00000000e001"  # element type of the LUBE-5L article
SERVITLY_TENANT = "acme"
SERVITLY_API_KEY = "any-cmms-servitly-key"
SERVITLY_PAT = "any-cmms-servitly-pat"
SERVITLY_THING = "6616689a0de6d87b47cd6308"  # the thing of EQ-PRESS-01


@dataclass(frozen=True)
class Expected:
    """One firing the scenario must produce: its rule, key (None: a threshold key, known only once fired) and
    the rendered description."""

    rule: str
    key: str | None
    description: str

    @property
    def high(self) -> bool:
        return self.rule == "press1-overheat"

    @property
    def has_spare_parts(self) -> bool:
        return self.rule == "press1-lubrication"


def _group(pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for key, value in pairs:
        out[key].append(value)
    return dict(out)


class CmmsUnderTest:
    """A simulator the gateway delivers to. `stored()` is what the CMMS holds, `creates()` the statuses of
    every create request that reached it, both by firing uuid."""

    kind: str

    async def start(self) -> None:
        raise NotImplementedError

    async def down(self) -> None:
        raise NotImplementedError

    async def up(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def cmms_section(self) -> str:
        raise NotImplementedError

    def request_count(self) -> int:
        raise NotImplementedError

    def stored(self) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError

    def creates(self) -> dict[str, list[int | None]]:
        raise NotImplementedError

    def check(self, firing: str, key: str, expected: Expected, body: dict[str, Any]) -> None:
        """Backend-specific: the stored object is the right translation of the firing."""
        raise NotImplementedError


class MobilityWork(CmmsUnderTest):
    kind = "mobility_work"

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self.sim: MobilityWorkSim | None = None

    async def start(self) -> None:
        self.sim = await self._stack.enter_async_context(
            run_mobility_work_sim(api_key=MW_API_KEY, auto_webhooks=False)
        )

    @property
    def _sim(self) -> MobilityWorkSim:
        assert self.sim is not None
        return self.sim

    async def down(self) -> None:
        await self._sim.down()

    async def up(self) -> None:
        await self._sim.up()

    async def close(self) -> None:
        await self._stack.aclose()

    def cmms_section(self) -> str:
        return f"""cmms:
  kind: mobility_work
  url: {self._sim.url}
  api_key: {MW_API_KEY}
  plan: premium
  http: {{connect_timeout: 1s, read_timeout: 5s}}
"""

    def request_count(self) -> int:
        return len(self._sim.state.requests)

    def task_requests(self) -> list[Any]:
        return [
            r
            for r in self._sim.state.requests
            if r.method == "POST" and r.path.startswith("/partners/v1/tasks")
        ]

    def stored(self) -> dict[str, list[dict[str, Any]]]:
        return _group([(str(t.metadata.get("firing")), t.body) for t in self._sim.state.tasks])

    def creates(self) -> dict[str, list[int | None]]:
        return _group([(str(r.body["metadata"]["firing"]), r.status) for r in self.task_requests()])

    def check(self, firing: str, key: str, expected: Expected, body: dict[str, Any]) -> None:
        assert body["description"] == expected.description
        assert body["metadata"] == {"gateway": "any-cmms", "rule": expected.rule, "firing": firing}
        assert body["equipment"] == {"type": "external", "value": "EQ-PRESS-01"}
        assert body["assignees"] == [{"type": "email", "value": "maintenance@factory.example"}]


class _Harness(CmmsUnderTest):
    """A simulator built on gateway/sim/harness.py: down = its server stopped, up = served again on the same
    port over the same state."""

    def __init__(self, run: Callable[..., AbstractAsyncContextManager[Any]], state: Any) -> None:
        self._run = run
        self.state = state
        self.port = 0
        self.url = ""
        self._stack: AsyncExitStack | None = None

    async def up(self) -> None:
        assert self._stack is None, "already up"
        stack = AsyncExitStack()
        sim = await stack.enter_async_context(self._run(port=self.port, state=self.state))
        self._stack, self.url = stack, sim.url
        self.port = int(sim.url.rpartition(":")[2])

    start = up

    async def down(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    close = down

    def request_count(self) -> int:
        return len(self.state.requests)


class Amage(_Harness):
    kind = "amage"

    def __init__(self) -> None:
        super().__init__(
            run_amage_sim,
            AmageSimState(device_uuid=AMAGE_DEVICE, api_key=AMAGE_API_KEY, key_secret=AMAGE_SECRET),
        )
        # The work order references must name records AMAGE knows (NOT_FOUND otherwise).
        self.state.add_records("user", [AMAGE_USER])
        self.state.add_records("elementType", {"LUBE-5L": AMAGE_LUBE})
        self.state.check_references = True

    def cmms_section(self) -> str:
        return f"""cmms:
  kind: amage
  url: {self.url}
  device_uuid: {AMAGE_DEVICE}
  api_key: {AMAGE_API_KEY}
  key_secret: {AMAGE_SECRET}
  users: {{maintenance@factory.example: {AMAGE_USER}}}
  element_types: {{LUBE-5L: {AMAGE_LUBE}}}
  http: {{connect_timeout: 1s, read_timeout: 5s}}
"""

    def stored(self) -> dict[str, list[dict[str, Any]]]:
        return _group([(wo["uuid"], wo) for wo in self.state.work_orders.values()])

    def creates(self) -> dict[str, list[int | None]]:
        return _group(
            [(r.json["uuid"], r.status) for r in self.state.requests if r.path.endswith("/work-orders/add")]
        )

    def check(self, firing: str, key: str, expected: Expected, body: dict[str, Any]) -> None:
        assert body["uuid"] == firing  # the gateway chose it: a retried add cannot make a second order
        assert body["description"] == expected.description
        assert body["name"] == expected.description
        assert body["priorityName"] == ("HIGH" if expected.high else "NORMAL")
        assert body["stateName"] == "NEW"
        assert body["assignedUserUuid"] == AMAGE_USER
        assert firing in body["notes"] and key in body["notes"]
        plans = [p for p in self.state.plans if p["workOrder"] == firing]
        lines = [{k: p[k] for k in ("elementTypeUuid", "itemCount")} for p in plans]
        assert lines == (
            [{"elementTypeUuid": AMAGE_LUBE, "itemCount": 1}] if expected.has_spare_parts else []
        )


class Servitly(_Harness):
    kind = "servitly"

    def __init__(self) -> None:
        super().__init__(
            run_servitly_sim,
            ServitlySimState(
                tenant=SERVITLY_TENANT, api_key=SERVITLY_API_KEY, pat=SERVITLY_PAT, things={SERVITLY_THING}
            ),
        )

    def cmms_section(self) -> str:
        return f"""cmms:
  kind: servitly
  url: {self.url}
  tenant: {SERVITLY_TENANT}
  api_key: {SERVITLY_API_KEY}
  pat: {SERVITLY_PAT}
  endpoint: maintenanceWorks
  things: {{EQ-PRESS-01: {SERVITLY_THING}}}
  http: {{connect_timeout: 1s, read_timeout: 5s}}
"""

    def stored(self) -> dict[str, list[dict[str, Any]]]:
        return _group([(w["properties"]["firing"], w) for w in self.state.maintenance_works])

    def creates(self) -> dict[str, list[int | None]]:
        return _group(
            [
                (r.json["properties"]["firing"], r.status)
                for r in self.state.requests
                if r.path == "/inventory/maintenanceWorks"
            ]
        )

    def check(self, firing: str, key: str, expected: Expected, body: dict[str, Any]) -> None:
        assert body["thingId"] == SERVITLY_THING
        assert body["description"] == expected.description
        assert body["type"] == "MAINTENANCE"
        assert body["userEmail"] == "maintenance@factory.example"
        props = body["properties"]
        assert (props["gateway"], props["rule"], props["firing"], props["firingKey"]) == (
            "any-cmms",
            expected.rule,
            firing,
            key,
        )
        assert props["priority"] == ("high" if expected.high else "normal")


class DryRun(MobilityWork):
    """Shadow mode in front of the Mobility Work simulator: the requests are rendered as Mobility Work would
    receive them, and the simulator must receive nothing. Its outage is the simulator's, which dry_run never
    notices."""

    kind = "dry_run"

    def cmms_section(self) -> str:
        compare = "\n".join("  " + line for line in super().cmms_section().splitlines()[1:])
        return f"cmms:\n  kind: dry_run\n  compare_with:\n{compare}\n"

    def real_cmms_section(self) -> str:
        return super().cmms_section()


def backend(kind: str) -> CmmsUnderTest:
    return {"mobility_work": MobilityWork, "amage": Amage, "servitly": Servitly, "dry_run": DryRun}[kind]()


@contextlib.asynccontextmanager
async def running(cmms: CmmsUnderTest) -> Any:
    await cmms.start()
    try:
        yield cmms
    finally:
        await cmms.close()
