"""OPC UA alarms and conditions against node-opcua (tests/interop/opcua_alarm_server.js): its own Part 9 state
machine (branches for states awaiting acknowledgement, retain, ConditionRefresh with RefreshStart/End events
through the Server object), killed and restarted while the gateway watches."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from gateway.core.samples import Quality
from gateway.sources.opcua import OpcuaConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import OpcuaSource
from tests.interop.servers import node_opcua_ready
from tests.sources.conftest import Collector, running

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0  # a guard against a hung start only (node-opcua makes its certificates at first run)
FAST = {"publishing_interval": 0.05, "reconnect_delay": 0.05, "reconnect_max_delay": 0.5, "timeout": 2}


class AlarmProcess:
    """node opcua_alarm_server.js, driven by commands on its stdin."""

    def __init__(self, port: int, pki: Path, names: Sequence[str]) -> None:
        node_opcua_ready()
        self.url = f"opc.tcp://127.0.0.1:{port}/"
        self.argv = ["node", str(HERE / "opcua_alarm_server.js"), str(port), str(pki), *names]
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def _line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = (await self.proc.stdout.readline()).decode(errors="replace")
        if not line:
            raise RuntimeError(f"the node-opcua alarm server ended: {''.join(self.output)}")
        self.output.append(line)
        return line.strip()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=HERE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

        async def ready() -> None:
            while not (await self._line()).startswith("listening"):
                pass

        await asyncio.wait_for(ready(), START_TIMEOUT_S)

    async def command(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{text}\n".encode())
        await self.proc.stdin.drain()

        async def done() -> None:
            while True:
                line = await self._line()
                if line == f"done {text}":
                    return
                if line.startswith("error"):
                    raise RuntimeError(line)

        await asyncio.wait_for(done(), START_TIMEOUT_S)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


@contextlib.asynccontextmanager
async def alarm_server(pki: Path, names: Sequence[str]) -> AsyncIterator[AlarmProcess]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = AlarmProcess(port, pki, names)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


def values(collector: Collector, signal: str) -> list[Any]:
    return [s.value if s.quality is Quality.GOOD else "BAD" for s in collector.of(signal)]


async def test_node_opcua_alarms_raise_clear_branch_and_refresh_after_a_restart(
    collector: Collector, tmp_path: Path
) -> None:
    async with alarm_server(tmp_path / "pki", ["HighTemp", "DoorOpen"]) as plc:
        config = OpcuaSource.model_validate(
            {"protocol": "opcua", "url": plc.url, **FAST, "alarms": {"source": "i=2253", "severity_min": 100}}
        )
        src = build_source("oven", config, state_dir=tmp_path)
        assert isinstance(src, OpcuaConnector)
        high = "oven.alarm.HighTemp"
        async with running(src, collector):
            await plc.command("raise HighTemp 800 Oven 1 over 250 C")
            await collector.wait_for(lambda: values(collector, f"{high}.active") == [True])
            assert values(collector, f"{high}.message") == ["Oven 1 over 250 C"]
            assert values(collector, f"{high}.severity") == [800]
            assert values(collector, f"{high}.source") == ["Oven1"]
            assert values(collector, f"{high}.acked") == [False]

            # cleared before anyone acknowledged it: node-opcua keeps the active state in a branch for the
            # acknowledgement; the branch's events are not the condition's state and must not re-activate it
            await plc.command("clear-unacked HighTemp")
            await collector.wait_for(lambda: values(collector, f"{high}.active") == [True, False])
            await plc.command("raise HighTemp 900 Oven 1 over 280 C")
            await collector.wait_for(lambda: values(collector, f"{high}.active") == [True, False, True])
            assert values(collector, f"{high}.message")[-1] == "Oven 1 over 280 C"

            await plc.kill()  # the server dies; it comes back without HighTemp, with DoorOpen active
            await collector.wait_for(lambda: values(collector, f"{high}.active")[-1] == "BAD")
            await plc.start()
            await plc.command("raise DoorOpen 500 Door 2 open")
            await collector.wait_for(lambda: values(collector, "oven.alarm.DoorOpen.active") == [True])
            await collector.wait_for(lambda: values(collector, f"{high}.active")[-1] is False)
            assert values(collector, f"{high}.active") == [True, False, True, "BAD", False]
