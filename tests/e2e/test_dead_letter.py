"""A 400 from the (strict) Mobility Work simulator ends in a dead letter: kept with the server's
property_errors verbatim and the request, explained field by field by `mw-gateway outbox show ID`, listed by
`mw-gateway outbox list`, and delivered by `mw-gateway outbox retry ID` once the CMMS data is fixed —
against the real `mw-gateway run`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.mw_webhooks import SimEquipment, SimUser
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from tests.e2e.helpers import REPO, GatewayProcess, wait_for, write_config

API_KEY = "dead-letter-key-0123456789"
RULES = """
- id: press1-lube
  when:
    counter: press1.strokes
    every: 10
  task:
    equipment: EQ-MISSING
    description: "Lubricate press 1 at {{ value | int }} strokes"
    assignees: [new.hire@factory.example]
"""


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "outbox", *args, "-c", str(config)],
        cwd=REPO,
        env={**os.environ, "MW_API_KEY": API_KEY},  # the CLI reads the same gateway.yaml
        capture_output=True,
        text=True,
        timeout=60,
    )


def outbox_row(config: Path) -> tuple[int, str, int]:
    conn = sqlite3.connect(config.parent / "state" / "gateway.sqlite3", timeout=10)
    try:
        rows = conn.execute("SELECT id, status, attempts FROM outbox").fetchall()
    finally:
        conn.close()
    return rows[0] if rows else (0, "", 0)


async def test_400_is_a_dead_letter_explained_field_by_field_and_retried_after_the_fix(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    http_port = free_port()
    async with (
        run_mobility_work_sim(api_key=API_KEY, strict=True) as sim,
        run_modbus_press(simulate=False, units=(1,)) as plc,
    ):
        config = write_config(
            tmp_path, mw_url=sim.url, api_key=API_KEY, http_port=http_port, plc_port=plc.port, rules=RULES
        )
        gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
        gw.start()
        try:
            await gw.wait_healthy_http()
            await plc.set_holding(0, codec.encode(5, "uint32"))
            await wait_for(
                lambda: any(r.path.endswith("/settings") for r in sim.state.requests), what="start-up"
            )
            await plc.set_holding(0, codec.encode(12, "uint32"))  # crosses 10: one firing
            await wait_for(lambda: outbox_row(config)[1] == "dead", what="the dead letter")
            row_id, _, attempts = outbox_row(config)
            assert attempts == 1  # a 400 is never retried on its own
            posts = [r for r in sim.state.requests if r.path == "/partners/v1/tasks"]
            assert [r.status for r in posts] == [400]

            listing = cli(config, "list")
            assert listing.returncode == 0, listing.stderr
            header, line = listing.stdout.splitlines()[:2]
            assert header.split() == [
                "ID",
                "STATUS",
                "RULE",
                "PRIO",
                "ATTEMPTS",
                "NEXT",
                "ATTEMPT",
                "LAST",
                "ERROR",
            ]
            assert line.split()[:5] == [str(row_id), "dead", "press1-lube", "normal", "1"]
            assert "HTTP 400" in line

            shown = cli(config, "show", str(row_id))
            assert shown.returncode == 0, shown.stderr
            text = shown.stdout
            assert f"outbox row {row_id}: dead after 1 attempt(s)" in text
            assert "the CMMS rejected these fields:" in text
            # Field by field: the pointer, the server's message key and parameters, and what we sent there.
            assert (
                "/equipment: error.payload.equipment.unknown (type=external, value=EQ-MISSING);"
                ' we sent {"type": "external", "value": "EQ-MISSING"}'
            ) in text
            assert (
                "/assignees/0: error.payload.assignees.unknown (type=email, value=new.hire@factory.example);"
                ' we sent {"type": "email", "value": "new.hire@factory.example"}'
            ) in text
            assert '"description": "Lubricate press 1 at 12 strokes"' in text  # the request, in full
            assert f"mw-gateway outbox retry {row_id}" in text
            # The server's words are kept verbatim, and the request with them (the JSON form).
            as_json = json.loads(cli(config, "show", str(row_id), "--json").stdout)
            assert as_json["last_details"]["message"] == "The request payload is not valid."
            assert as_json["last_details"]["extended_message"]["property_errors"] == {
                "/equipment": [
                    {
                        "messageKey": "error.payload.equipment.unknown",
                        "parameters": {"type": "external", "value": "EQ-MISSING"},
                    }
                ],
                "/assignees/0": [
                    {
                        "messageKey": "error.payload.assignees.unknown",
                        "parameters": {"type": "email", "value": "new.hire@factory.example"},
                    }
                ],
            }
            assert as_json["request"]["json"]["description"] == "Lubricate press 1 at 12 strokes"

            # The CMMS data is fixed (the equipment and the user now exist); the operator retries.
            sim.state.equipment.append(
                SimEquipment(
                    id=9001,
                    uuid="9d7e0f8a-0000-4000-8000-000000009001",
                    item_code="EQ-MISSING",
                    name="Press 1",
                )
            )
            sim.state.users.append(
                SimUser(
                    id=42,
                    uuid="7c1d2e3f-0000-4000-8000-000000000042",
                    email="new.hire@factory.example",
                    first_name="New",
                    last_name="Hire",
                )
            )
            retried = cli(config, "retry", str(row_id))
            assert retried.returncode == 0 and "queued for an immediate attempt" in retried.stdout
            await wait_for(lambda: outbox_row(config)[1] == "delivered", what="delivery after the retry")
            assert len(sim.state.tasks) == 1
            assert sim.state.tasks[0].metadata["rule"] == "press1-lube"
            assert cli(config, "retry", str(row_id)).returncode == 1  # delivered rows cannot be retried
        finally:
            gw.stop()
