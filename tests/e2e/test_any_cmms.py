"""One rule set, any CMMS (issue 7): the same rule file and the same scenario against Mobility Work, AMAGE,
Servitly and dry_run, only the `cmms:` section of gateway.yaml changing.

Real parts: a pymodbus press (a stroke counter and a temperature), the real `Gateway` (engine, store,
dispatcher, HTTP) stopped and started again over the same state directory, and each backend's simulator,
taken down (connections refused) while firings happen and across the restart.

The scenario, five firings: a counter firing delivered; the CMMS goes down; a threshold firing and a counter
firing queue and fail at least once; the gateway restarts while the CMMS is still down; a second threshold
episode and a third counter firing; the CMMS comes back. Then each simulator must hold exactly one object per
firing (the firing's uuid in its metadata / uuid / properties), accepted by exactly one request, each the
right translation of its firing; dry_run must have sent nothing anywhere, list the would-be requests in
`mw-gateway outbox list --dry-run --json`, and not send them when the same state directory is switched to
mobility_work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core.firings import firing_uuid
from gateway.runtime.lifecycle import Gateway
from gateway.runtime.reload import load_all
from gateway.sim.plc import ModbusPlc, run_modbus_press
from gateway.sources import codec
from tests.e2e.any_cmms_support import CmmsUnderTest, DryRun, Expected, backend, running
from tests.e2e.helpers import REPO, wait_for

GATEWAY_ID = "any-cmms"

RULES = """\
- id: press1-lubrication
  name: Lubricate press 1 every 1000 strokes
  when: {counter: press1.strokes, every: 1000}
  while_open: create
  task:
    equipment: EQ-PRESS-01
    description: "Lubricate press 1 at {{ value | int }} strokes"
    assignees: [maintenance@factory.example]
    duration: 30m
    spare_parts:
      - {article: LUBE-5L, quantity: 1}
- id: press1-overheat
  name: Press 1 overheating
  priority: high
  when: {signal: press1.temp, above: 85, reset_below: 80}
  while_open: create
  task:
    equipment: EQ-PRESS-01
    description: "Press 1 overheating ({{ value | round(1) }} °C)"
    assignees: [maintenance@factory.example]
    duration: 2h
"""

EXPECTED = [
    Expected("press1-lubrication", "press1-lubrication:1000", "Lubricate press 1 at 1200 strokes"),
    Expected("press1-overheat", None, "Press 1 overheating (90.0 °C)"),
    Expected("press1-lubrication", "press1-lubrication:2000", "Lubricate press 1 at 2100 strokes"),
    Expected("press1-overheat", None, "Press 1 overheating (91.5 °C)"),
    Expected("press1-lubrication", "press1-lubrication:3000", "Lubricate press 1 at 3050 strokes"),
]


def write_config(tmp: Path, *, cmms: str, http_port: int, plc_port: int) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "press1.yaml").write_text(RULES)
    path = tmp / "gateway.yaml"
    path.write_text(f"""gateway:
  id: {GATEWAY_ID}
  state_dir: ./state
  rules: rules/
{cmms}
http:
  listen: 127.0.0.1:{http_port}
dispatcher:
  retry_initial: 100ms
  retry_max: 500ms
  idle_poll: 100ms
  rate_limit: 50
sources:
  press1:
    protocol: modbus
    host: 127.0.0.1
    port: {plc_port}
    unit: 1
    poll: 50ms
    signals:
      strokes: {{holding: 0, type: uint32}}
      temp:    {{holding: 2, type: float32}}
""")
    return path


def switch_cmms(config: Path, old: str, new: str) -> None:
    """Replace the `cmms:` section of gateway.yaml, and only it."""
    text = config.read_text()
    assert text.count(old) == 1
    config.write_text(text.replace(old, new))


class Scenario:
    """The gateway over one config file and state directory, driven through the press."""

    def __init__(self, config_path: Path, plc: ModbusPlc) -> None:
        self.config_path = config_path
        self.plc = plc
        self.gw: Gateway | None = None

    async def start(self) -> Gateway:
        config, rules = load_all(self.config_path)
        self.gw = Gateway(config, rules)
        await self.gw.start()
        await wait_for(self._seen("press1.strokes"), what="a strokes sample")
        await wait_for(self._seen("press1.temp"), what="a temperature sample")
        return self.gw

    async def stop(self) -> None:
        if self.gw is not None:
            gw, self.gw = self.gw, None
            await gw.stop()

    def _seen(self, signal: str, value: float | None = None) -> Callable[[], bool]:
        def seen() -> bool:
            assert self.gw is not None
            sample = self.gw.engine.last_values.get(signal)
            return sample is not None and (value is None or sample.value == value)

        return seen

    async def strokes(self, value: int) -> None:
        await self.plc.set_holding(0, codec.encode(value, "uint32"))
        await wait_for(self._seen("press1.strokes", value), what=f"strokes = {value} seen")

    async def temp(self, value: float) -> None:
        await self.plc.set_holding(2, codec.encode(value, "float32"))
        await wait_for(self._seen("press1.temp", value), what=f"temp = {value} seen")

    async def count(self, sql: str) -> int:
        assert self.gw is not None
        row = await self.gw.store.db.fetchone(sql)
        assert row is not None
        return int(row[0])

    async def firings(self, n: int) -> None:
        await wait_for(
            lambda: _eq(self.count("SELECT COUNT(*) FROM firings"), n), what=f"{n} firings recorded"
        )

    async def delivered(self, n: int) -> None:
        await wait_for(
            lambda: _eq(self.count("SELECT COUNT(*) FROM outbox WHERE status = 'delivered'"), n),
            what=f"{n} outbox rows delivered",
        )

    def attempts_at_rest(self) -> int:
        """Attempts on queued rows, read from the database while the gateway is stopped."""
        assert self.gw is None
        db = self.config_path.parent / "state" / "gateway.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT COALESCE(SUM(attempts), 0) FROM outbox WHERE status = 'queued'")
            return int(row.fetchone()[0])

    async def attempts(self) -> int:
        return await self.count("SELECT COALESCE(SUM(attempts), 0) FROM outbox WHERE status = 'queued'")

    async def met_outage(self, queued: int, *, attempts_before: int) -> None:
        """`queued` rows waiting, and more failed attempts on them than `attempts_before`: the dispatcher
        met the outage. (Not every row need have failed: after 10 failures in a row the dispatcher only sends
        single probes.)"""

        async def met() -> bool:
            waiting = await self.count("SELECT COUNT(*) FROM outbox WHERE status = 'queued'")
            return waiting == queued and await self.attempts() > attempts_before

        await wait_for(met, what=f"{queued} queued rows and a failed attempt")


async def _eq(awaitable: Any, expected: Any) -> bool:
    return bool(await awaitable == expected)


def outbox_list_cli(config: Path, *extra: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "outbox", "list", *extra, "--json", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def installation_id(config: Path) -> str:
    db = config.parent / "state" / "gateway.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'installation_id'").fetchone()[0])


def match_expected(rows: list[dict[str, Any]], installation: str) -> dict[str, tuple[str, Expected]]:
    """The outbox rows (CLI JSON) matched to EXPECTED, in firing order: firing uuid -> (key, expected).
    Fails unless exactly the expected firings were recorded, each once, with the uuid of its key."""
    rows = sorted(rows, key=lambda r: r["created_at"])
    assert [(r["rule"], r["task"]["description"]) for r in rows] == [
        (e.rule, e.description) for e in EXPECTED
    ], rows
    out: dict[str, tuple[str, Expected]] = {}
    for row, expected in zip(rows, EXPECTED, strict=True):
        key = row["key"]
        if expected.key is not None:
            assert key == expected.key
        else:
            assert key.startswith(f"{expected.rule}:")
        assert row["firing"] == firing_uuid(installation, GATEWAY_ID, key)
        out[row["firing"]] = (key, expected)
    assert len(out) == len(EXPECTED)
    return out


async def run_scenario(scenario: Scenario, cmms: CmmsUnderTest, *, dry_run: bool) -> None:
    await scenario.plc.set_holding(0, codec.encode(0, "uint32"))
    await scenario.plc.set_holding(2, codec.encode(70.0, "float32"))
    await scenario.start()
    try:
        await scenario.strokes(1200)  # counter: 1000
        await scenario.firings(1)
        await scenario.delivered(1)

        await cmms.down()  # the outage
        await scenario.temp(90.0)  # threshold, first episode
        await scenario.firings(2)
        await scenario.strokes(2100)  # counter: 2000
        await scenario.firings(3)
        if dry_run:
            await scenario.delivered(3)
        else:
            await scenario.met_outage(2, attempts_before=0)
    finally:
        await scenario.stop()  # the restart, CMMS still down

    attempts = 0 if dry_run else scenario.attempts_at_rest()
    assert dry_run or attempts >= 2
    await scenario.start()
    try:
        await scenario.temp(75.0)  # below reset_below: re-armed
        await scenario.temp(91.5)  # threshold, second episode
        await scenario.firings(4)
        await scenario.strokes(3050)  # counter: 3000
        await scenario.firings(5)
        if not dry_run:
            await scenario.met_outage(4, attempts_before=attempts)
        await cmms.up()  # the CMMS is back
        await scenario.delivered(5)
    finally:
        await scenario.stop()


@pytest.mark.parametrize("kind", ["mobility_work", "amage", "servitly", "dry_run"])
async def test_one_rule_set_any_cmms(tmp_path: Path, free_port: Callable[[], int], kind: str) -> None:
    http_port = free_port()
    async with run_modbus_press(simulate=False) as plc, running(backend(kind)) as cmms:
        config = write_config(tmp_path, cmms=cmms.cmms_section(), http_port=http_port, plc_port=plc.port)
        scenario = Scenario(config, plc)
        await run_scenario(scenario, cmms, dry_run=isinstance(cmms, DryRun))

        rows = await asyncio.to_thread(outbox_list_cli, config)
        firings = match_expected(rows, installation_id(config))
        assert {r["status"] for r in rows} == {"delivered"}
        assert {r["delivered_by"] for r in rows} == {kind}
        assert not any(r["maybe_committed"] for r in rows)

        if isinstance(cmms, DryRun):
            await check_dry_run(cmms, config, firings, scenario)
            return

        # Exactly one object per firing in the CMMS, each accepted by exactly one request.
        stored = cmms.stored()
        assert {f: len(objs) for f, objs in stored.items()} == dict.fromkeys(firings, 1)
        creates = cmms.creates()
        assert set(creates) == set(firings)
        for firing, statuses in creates.items():
            accepted = [s for s in statuses if s is not None and 200 <= s < 300]
            assert len(accepted) == 1, (firing, statuses)
            # Nothing reached the CMMS after it had accepted (a re-send, even one a backend would
            # absorb as "already exists", is a firing sent twice).
            assert statuses[-1] == accepted[0], (firing, statuses)
        for firing, (key, expected) in firings.items():
            cmms.check(firing, key, expected, stored[firing][0])


async def check_dry_run(
    cmms: DryRun,
    config: Path,
    firings: dict[str, tuple[str, Expected]],
    scenario: Scenario,
) -> None:
    # Nothing was sent anywhere: the Mobility Work simulator dry_run renders for saw no request at all.
    assert cmms.request_count() == 0
    # `outbox list --dry-run` lists the would-be requests, exactly as Mobility Work would receive them.
    shadow = await asyncio.to_thread(outbox_list_cli, config, "--dry-run")
    assert sorted(r["firing"] for r in shadow) == sorted(firings)
    for row in shadow:
        key, expected = firings[row["firing"]]
        request = row["request"]
        assert (request["dry_run"], request["compare_with"], request["method"]) == (
            True,
            "mobility_work",
            "POST",
        )
        assert request["path"].startswith("/partners/v1/tasks")
        cmms.check(row["firing"], key, expected, request["json"])

    # The same state directory switched to Mobility Work: the shadow tasks stay home; a new firing goes out.
    switch_cmms(config, cmms.cmms_section(), cmms.real_cmms_section())
    await scenario.start()
    try:
        await scenario.strokes(4100)  # counter: 4000
        await scenario.firings(6)
        await scenario.delivered(6)
    finally:
        await scenario.stop()
    after = await asyncio.to_thread(outbox_list_cli, config)
    new = [r for r in after if r["firing"] not in firings]
    assert [(r["key"], r["delivered_by"]) for r in new] == [("press1-lubrication:4000", "mobility_work")]
    assert {f: len(objs) for f, objs in cmms.stored().items()} == {new[0]["firing"]: 1}
    assert list(cmms.creates()) == [new[0]["firing"]]
    assert sorted(r["firing"] for r in after if r["delivered_by"] == "dry_run") == sorted(firings)
