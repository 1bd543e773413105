"""`mw-gateway browse` against a real asyncua server with 1,060 variables in nested folders, which pages its
answers (continuation points), then the generated YAML through `check` and `probe`."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from gateway.config import load_config
from gateway.sources.opcua_browse import Options, browse_server
from gateway.tools.browse import format_tree, signal_names, snake
from gateway.tools.probe import probe_config
from tests.conftest import _free_port
from tests.tools.opcua_plant import NAMESPACE, Paging, Plant, paging, run_plant

SAFETY_S = 120.0  # a guard against a hung subprocess only

# one plant for the module: building 1,060 variables takes seconds
ON_THE_PLANT = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served() -> AsyncIterator[tuple[Plant, Paging]]:
    with pytest.MonkeyPatch.context() as monkeypatch, paging(monkeypatch, limit=25) as pages:
        async with run_plant(_free_port()) as plant:
            yield plant, pages


async def mw_gateway(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def test_names_are_snake_case_and_unique() -> None:
    assert [snake(n) for n in ("FeedRate", "PLCState", "Motor 1.Speed", "1stStage", "ÄÖ")] == [
        "feed_rate",
        "plc_state",
        "motor_1_speed",
        "n_1st_stage",
        "signal",
    ]
    from gateway.sources.opcua_browse import Found

    def var(*path: str) -> Found:
        return Found(1, path, path[-1], "", "", "Variable")

    found = [var("Line1", "M1", "Temp"), var("Line1", "M2", "Temp"), var("Line2", "M1", "Temp"), var("Speed")]
    assert signal_names(found) == ["line1_m1_temp", "line1_m2_temp", "line2_m1_temp", "speed"]
    assert signal_names([var("A", "x"), var("A", "x"), var("a_x")]) == ["a_x", "a_x_2", "a_x_3"]


@ON_THE_PLANT
async def test_a_paging_server_is_walked_completely_and_the_yaml_checks_and_probes(
    served: tuple[Plant, Paging], tmp_path: Path
) -> None:
    plant, pages = served
    pages.limit, pages.hold_after = 25, None
    pages.points.clear()
    # the library level, asking for 7 references at a time
    walker = await browse_server(Options(plant.url), max_references=7)
    variables = [n for n in walker.nodes if n.is_variable]
    assert len(variables) == plant.variables >= 1000
    assert len(walker.nodes) == plant.variables + plant.folders
    assert walker.continuations > 0 and pages.browse_next_calls > 0
    assert not pages.points, "every continuation point was followed to its end"
    temp = next(n for n in variables if n.node_id == "ns=2;s=L3.M4.Temp")
    assert (temp.data_type, temp.access, temp.value) == ("Double", "read/write", 23.0)
    assert temp.nsu_id == f"nsu={NAMESPACE};s=L3.M4.Temp"
    assert temp.path == ("Plant", "Line3", "Machine4", "Temperature")
    tree = format_tree(walker.nodes).splitlines()
    assert tree[0] == "2:Plant/  ns=2;s=Plant"
    assert "      2:Temperature  ns=2;s=L3.M4.Temp  Double  read/write  = 23.0" in tree

    # the command, with the server's own page size only
    calls = pages.browse_next_calls
    proc = await mw_gateway("browse", plant.url, "--yaml", "plant")
    out, err = await asyncio.wait_for(proc.communicate(), SAFETY_S)
    assert proc.returncode == 0, err.decode()
    assert pages.browse_next_calls > calls
    assert f"browse: {len(walker.nodes)} nodes" in err.decode()
    block = out.decode()
    signals = yaml.safe_load(block)["sources"]["plant"]["signals"]
    assert len(signals) == plant.variables
    assert signals["line3_machine4_temperature"] == {
        "node": f"nsu={NAMESPACE};s=L3.M4.Temp",
        "type": "number",
    }
    assert signals["line1_machine1_running"]["type"] == "bool"
    assert signals["line4_machine5_sensors_sensor50"]["node"].endswith(";s=L4.M5.S50")

    # the block is a valid source: check accepts it, probe reads every variable
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {id: plant, state_dir: state}\ncmms: {kind: dry_run}\n" + block + "\n")
    (tmp_path / "rules").mkdir()
    check = await mw_gateway("check", "-c", str(config))
    out, err = await asyncio.wait_for(check.communicate(), SAFETY_S)
    assert check.returncode == 0, out.decode() + err.decode()
    assert f"({1} sources, 0 rules" in out.decode()
    readings = await probe_config(load_config(config), seconds=30)
    assert len(readings) == plant.variables
    assert [r for r in readings if not r.good] == []
    by = {r.signal: r for r in readings}
    assert by["plant.line2_machine1_temperature"].value == 22.0
    assert by["plant.line1_machine1_recipe"].value == "PART-A"


@ON_THE_PLANT
async def test_ctrl_c_prints_what_was_found(served: tuple[Plant, Paging]) -> None:
    plant, pages = served
    pages.limit, pages.browse_next_calls = 10, 0
    pages.hold_after = 3  # the 4th BrowseNext waits: the walk is stuck midway
    proc = await mw_gateway("browse", plant.url)
    await asyncio.wait_for(pages.held.wait(), SAFETY_S)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), SAFETY_S)
    pages.gate.set()
    assert proc.returncode == 130, err.decode()
    assert "browse: interrupted after" in err.decode() and "what was found so far" in err.decode()
    tree = out.decode().splitlines()
    assert tree[0] == "2:Plant/  ns=2;s=Plant"
    assert "  2:Line1/  ns=2;s=L1" in tree
    assert 5 <= len(tree) < plant.variables
