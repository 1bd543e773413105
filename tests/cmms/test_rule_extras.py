"""Backend-specific rule keys, as docs/backends.md shows them, load with `check` and reach each backend.

The rule is read from the documentation itself: the docs once said a rule carries `type_uuid` while the
loader refused it there (issue 13); a doc example that stops loading fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.cmms.amage import AmageBackend
from gateway.cmms.schema import AmageConfig, ServitlyConfig
from gateway.cmms.servitly import ServitlyBackend
from gateway.core.delivery import OutboxItem
from gateway.core.errors import RuleError
from gateway.core.firings import firing_uuid
from gateway.engine.loader import load_rules
from tests.engine.helpers import engine, feed

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends.md"


def documented_rule() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    (rule,) = [b for b in blocks if b.startswith("- id:")]
    return rule


def test_the_documented_rule_loads(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(documented_rule(), encoding="utf-8")
    (rule,) = load_rules(tmp_path).rules
    assert rule.task.extra["type_uuid"] == "5a3c1d2e-0b6f-4c1f-9a51-5f0d3c2b1a00"
    assert rule.task.thing_id == "6616689a0de6d87b47cd6308"


def fired(tmp_path: Path) -> OutboxItem:
    eng = engine(tmp_path, documented_rule())
    (firing,) = feed(eng, "press1.strokes", [0, 50_000])
    return OutboxItem(1, firing_uuid("inst-1", "gw", firing.key), firing, attempts=0)


async def test_the_documented_extras_reach_amage_and_servitly(tmp_path: Path) -> None:
    item = fired(tmp_path)
    amage = AmageBackend(
        AmageConfig(
            kind="amage",
            url="http://127.0.0.1:9",
            device_uuid="d",
            api_key=SecretStr("k"),
            key_secret=SecretStr("s"),
            work_order_type_uuid="ffffffff-0000-4000-8000-000000000000",
        ),
        gateway_id="gw",
    )
    servitly = ServitlyBackend(
        ServitlyConfig(
            kind="servitly",
            url="http://127.0.0.1:9",
            tenant="t",
            api_key=SecretStr("k"),
            pat=SecretStr("p"),
            endpoint="maintenanceWorks",
        ),
        gateway_id="gw",
    )
    try:
        order = amage.work_order(item)
        work = servitly.body(item)
    finally:
        await amage.aclose()
        await servitly.aclose()
    assert order["typeUuid"] == "5a3c1d2e-0b6f-4c1f-9a51-5f0d3c2b1a00"  # the rule's wins over the config's
    assert order["assignedDepartmentUuid"] == "0b6f6a52-7a1e-4c1f-9a51-5f0d3c2b1a01"
    assert (work["thingId"], work["type"]) == ("6616689a0de6d87b47cd6308", "LUBRICATION")


def test_a_backend_key_directly_under_task_is_refused_with_its_place(tmp_path: Path) -> None:
    misplaced = documented_rule().replace("    extra:\n      type_uuid:", "    type_uuid:")
    misplaced = misplaced.replace(
        "      assigned_department_uuid:", "    extra:\n      assigned_department_uuid:"
    )
    (tmp_path / "rules.yaml").write_text(misplaced, encoding="utf-8")
    with pytest.raises(RuleError) as caught:
        load_rules(tmp_path)
    (problem,) = caught.value.problems
    assert (problem.line, "type_uuid" in problem.message) == (7, True)  # the line of `type_uuid:`
