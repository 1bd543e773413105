"""`mw-gateway probe` against real servers on loopback: a pymodbus PLC, an asyncua server and mosquitto, each
with one signal configured wrong, and a source where nothing listens."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from gateway.config import load_config
from gateway.sim.plc import NAMESPACE_URI, run_modbus_press, run_opcua_press
from gateway.sources.codec import encode
from gateway.tools.probe import format_table, probe_config
from tests.sources.test_mqtt import Broker, broker

__all__ = ["broker"]  # the shared mosquitto fixture, imported from test_mqtt


@contextlib.asynccontextmanager
async def publishing(port: int, messages: dict[str, str]) -> AsyncIterator[None]:
    """Publish each topic's payload every 50 ms until the block ends."""

    async def loop() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="probe-test-publisher") as client:
            while True:
                for topic, payload in messages.items():
                    await client.publish(topic, payload)
                await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _config(tmp_path: Path, sources: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: probe-test, state_dir: state}\ncmms: {kind: dry_run}\nsources:\n" + sources
    )
    (tmp_path / "rules").mkdir(exist_ok=True)
    return path


async def test_one_wrong_signal_per_protocol_each_with_its_exact_error(
    tmp_path: Path, broker: Broker, free_port: Callable[[], int]
) -> None:
    nothing_listens = free_port()
    async with (
        run_modbus_press(simulate=False, units=(1,)) as plc,
        run_opcua_press(simulate=False) as ua,
        publishing(broker.port, {"plant/oven/temp": "21.5", "plant/oven/state": "running"}),
    ):
        await plc.set_holding(100, encode(123456, "uint32"))
        await plc.set_input(0, [215])
        await plc.set_holding(1990, [42])
        await ua.write("StrokeCounter", 4321)
        path = _config(
            tmp_path,
            f"""\
  press:
    protocol: modbus
    host: 127.0.0.1
    port: {plc.port}
    timeout: 1
    signals:
      strokes: {{holding: 100, type: uint32}}
      temp: {{input: 0, scale: 0.1}}
      edge: {{holding: 1990}}
      wrong: {{holding: 1998, type: uint64}}
  line:
    protocol: opcua
    url: {ua.url}
    publishing_interval: 0.05
    signals:
      strokes: nsu={NAMESPACE_URI};s=Press1.StrokeCounter
      recipe: {{node: "ns=2;s=Press1.Recipe", type: string}}
      wrong: ns=2;s=Press1.NoSuchNode
      wrong_type: {{node: "ns=2;s=Press1.Recipe", type: number}}
  oven:
    protocol: mqtt
    url: mqtt://127.0.0.1:{broker.port}
    signals:
      temp: plant/oven/temp
      state: plant/oven/state
      wrong: plant/oven/tmep
  cellar:
    protocol: modbus
    host: 127.0.0.1
    port: {nothing_listens}
    signals:
      level: {{holding: 0}}
""",
        )
        config = load_config(path)
        readings = await probe_config(config, seconds=2.0)
    by = {r.signal: r for r in readings}
    table = format_table(readings)
    assert set(by) == {
        "press.strokes",
        "press.temp",
        "press.edge",
        "press.wrong",
        "line.strokes",
        "line.recipe",
        "line.wrong",
        "line.wrong_type",
        "oven.temp",
        "oven.state",
        "oven.wrong",
        "cellar.level",
    }, table
    good = {s for s, r in by.items() if r.good}
    assert good == {
        "press.strokes",
        "press.temp",
        "press.edge",
        "line.strokes",
        "line.recipe",
        "oven.temp",
    }, table
    # raw and decoded side by side
    assert (by["press.strokes"].raw, by["press.strokes"].value) == ("0x0001 0xE240", 123456)
    assert by["press.temp"].raw == "0x00D7" and by["press.temp"].value == pytest.approx(21.5)
    assert by["line.strokes"].value == 4321 and by["line.strokes"].raw == "UInt32 4321"
    assert by["line.recipe"].value == "PART-A"
    assert by["oven.temp"].value == 21.5 and by["oven.temp"].raw == "'21.5'"
    # the exact error of each wrong one; a refused address read together with a good one (1990 and
    # 1998..2001 in one request) turns only itself bad
    assert (by["press.edge"].raw, by["press.edge"].value) == ("0x002A", 42)
    assert "illegal data address" in by["press.wrong"].error, table
    assert "BadNodeIdUnknown" in by["line.wrong"].error, table
    assert by["line.wrong_type"].error == "expected a number, got string 'PART-A'", table
    assert by["line.wrong_type"].raw == "String 'PART-A'"
    assert "expected a number, got 'running'" in by["oven.state"].error, table
    assert by["oven.state"].raw == "'running'"
    assert by["oven.wrong"].quality == "none"
    assert by["oven.wrong"].error == "no message on topic 'plant/oven/tmep' in 2s"
    assert by["cellar.level"].error.startswith(f"connection refused by 127.0.0.1:{nothing_listens}"), table
    for line in table.splitlines()[1:]:
        signal = line.split()[0]
        assert by[signal].error in line


def test_the_command_prints_the_table_and_exits_0_only_when_every_signal_is_good(tmp_path: Path) -> None:
    from gateway.tools.probe import cmd_probe

    async def serve(port_box: list[int], stop: asyncio.Event, ready: asyncio.Event) -> None:
        async with run_modbus_press(simulate=False, units=(1,)) as plc:
            await plc.set_holding(0, [7])
            port_box.append(plc.port)
            ready.set()
            await stop.wait()

    async def main() -> tuple[int, str, int, str]:
        port_box: list[int] = []
        stop, ready = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve(port_box, stop, ready))
        await ready.wait()
        path = _config(
            tmp_path,
            f"""\
  press:
    protocol: modbus
    host: 127.0.0.1
    port: {port_box[0]}
    signals:
      ok: {{holding: 0}}
      far: {{holding: 1999}}
      wrong: {{holding: 5000}}
""",
        )
        results = []
        for source_yaml in (None, "ok-only"):
            if source_yaml:
                text = path.read_text().replace("      wrong: {holding: 5000}\n", "")
                path.write_text(text)
            out = io.StringIO()
            code = await asyncio.to_thread(cmd_probe, path, seconds=5.0, out=out)
            results += [code, out.getvalue()]
        stop.set()
        await server
        return results[0], results[1], results[2], results[3]

    code_bad, out_bad, code_good, out_good = asyncio.run(main())
    assert code_bad == 1, out_bad
    assert out_bad.splitlines()[0].split() == ["SIGNAL", "RAW", "VALUE", "QUALITY", "ERROR"]
    assert "device answered exception 2 (illegal data address)" in out_bad
    assert "3 signals: 2 good, 1 not good" in out_bad
    assert code_good == 0, out_good
    assert "2 signals: 2 good, 0 not good" in out_good


async def test_mqtt_and_sparkplug_probes_leave_a_running_gateway_alone(
    tmp_path: Path, broker: Broker
) -> None:
    """The probe uses its own client ids and clean sessions, and only listens to Sparkplug: the running
    gateway's MQTT connection (same configured client id) is not taken over, and no STATE is published."""
    from gateway.sources import sparkplug_codec as codec
    from gateway.sources.sparkplug_codec import DataType as T

    births = {
        "spBv1.0/Plant1/NBIRTH/Press1": codec.encode(
            [("Temperature", 1, T.DOUBLE, 21.5), ("bdSeq", 2, T.UINT64, 0)], seq=0
        ),
        "spBv1.0/Plant1/DBIRTH/Press1/Stamper": codec.encode(
            [("Counters/Strokes", 10, T.UINT32, 1000)], seq=1
        ),
    }
    seen_state: list[str] = []

    async def edge_node() -> None:  # an edge node that keeps announcing itself (a rebirth loop)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="edge-press1") as client:
            while True:
                for topic, payload in births.items():
                    await client.publish(topic, payload)
                await asyncio.sleep(0.05)

    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="mw-gateway-probe-test-oven", clean_session=False
    ) as gateway:  # the running gateway's connection: the id run derives for source oven
        await gateway.subscribe("plant/oven/after-probe")
        await gateway.subscribe("spBv1.0/STATE/#")
        edge = asyncio.create_task(edge_node())
        try:
            await gateway.publish("plant/oven/level", "0.75", retain=True)
            async with publishing(broker.port, {"plant/oven/temp": "20"}):
                path = _config(
                    tmp_path,
                    f"""\
  oven:
    protocol: mqtt
    url: mqtt://127.0.0.1:{broker.port}
    signals:
      temp: plant/oven/temp
      level: plant/oven/level
  line3:
    protocol: sparkplug
    url: mqtt://127.0.0.1:{broker.port}
    group: Plant1
    host_id: mw-gateway-line3
    rebirth: true
    signals:
      strokes: {{node: Press1, device: Stamper, metric: Counters/Strokes}}
      temp: {{node: Press1, metric: Temperature}}
      wrong: {{node: Press1, metric: Temprature}}
      silent: {{node: Press9, metric: Temperature}}
""",
                )
                readings = await probe_config(load_config(path), seconds=2.0)
            # the gateway's connection is still there: a message published now reaches it
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="after-probe") as other:
                await other.publish("plant/oven/after-probe", "1", qos=1)
            got_it = False
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(10):
                    async for message in gateway.messages:
                        if str(message.topic).startswith("spBv1.0/STATE/"):
                            seen_state.append(str(message.topic))
                        if str(message.topic) == "plant/oven/after-probe":
                            got_it = True
                            break
        finally:
            edge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await edge
    by = {r.signal: r for r in readings}
    table = format_table(readings)
    assert by["oven.temp"].good and by["oven.temp"].value == 20, table
    assert by["oven.temp"].retained is False
    assert by["oven.level"].good and by["oven.level"].retained and by["oven.level"].value == 0.75
    assert "good (retained)" in next(line for line in table.splitlines() if line.startswith("oven.level"))
    assert by["line3.strokes"].good and by["line3.strokes"].value == 1000, table
    assert by["line3.temp"].good and by["line3.temp"].value == 21.5, table
    assert "no metric 'Temprature' in the birth of edge node Press1" in by["line3.wrong"].error, table
    assert by["line3.silent"].quality == "none"
    assert by["line3.silent"].error.startswith("no birth or data from Press9 with metric 'Temperature' in 2s")
    assert seen_state == [], "the probe published a Sparkplug STATE"
    assert got_it, "the gateway's MQTT connection was taken over by the probe"
