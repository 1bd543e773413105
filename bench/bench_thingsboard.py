"""Side by side with ThingsBoard IoT Gateway (`thingsboard-gateway` from PyPI), in the same run: both read the
same pymodbus server (the simulated press, values changing), the same 16 holding registers (uint16, unit 1)
every 100 ms, one after the other (A B A B), each for WINDOW_S seconds after a warm-up.

Measured: CPU seconds (user + system, /proc/<pid>/stat) per 1,000 register reads, registers and requests
counted on the server side (the same meter for both), and the RSS at the end of the window.

ThingsBoard IoT Gateway is installed into its own venv, bench/.tb-venv (ignored by git), at bench time; it is
not a dependency of ours. It needs a ThingsBoard server to upload to; here its "platform" is a local
mosquitto. Without a real ThingsBoard answering its session-limits RPC, it reads, converts and stores the
values but does not upload them: its figures therefore leave out the upload, which favours it.
The exact configuration used is `TB_GATEWAY`, `tb_modbus()` and `OURS` below (also in docs/performance.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench.bench_memory import InstalledGateway, ensure_prod_venv
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import ModbusPlc, run_modbus_press
from tests.conftest import _free_port
from tests.e2e.helpers import write_config

HERE = Path(__file__).resolve().parent
TB_VENV = HERE / ".tb-venv"
TB_PACKAGES = ("thingsboard-gateway==3.8.5", "pymodbus==3.9.2", "pyserial", "pyserial-asyncio")
API_KEY = "bench-tb-key-0123456789"
TAGS = 16
POLL_MS = 100
WARMUP_S = 3.0
WINDOW_S = 20.0
ROUNDS = 2

TB_GATEWAY: dict[str, Any] = {
    "thingsboard": {
        "host": "127.0.0.1",
        "port": 0,  # the local mosquitto's port
        "remoteShell": False,
        "remoteConfiguration": False,
        "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600},
        "deviceFiltering": {"enable": False},
        "maxPayloadSizeBytes": 8196,
        "minPackSendDelayMS": 50,
        "minPackSizeToSend": 500,
        "checkConnectorsConfigurationInSeconds": 60,
        "handleDeviceRenaming": True,
        "security": {"type": "accessToken", "accessToken": "bench-token"},
        "qos": 1,
        "reportStrategy": {"type": "ON_RECEIVED"},
        "checkingDeviceActivity": {"checkDeviceInactivity": False},
    },
    "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
    "grpc": {"enabled": False},
    "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
}


def tb_modbus(port: int) -> dict[str, Any]:
    return {
        "master": {
            "slaves": [
                {
                    "host": "127.0.0.1",
                    "port": port,
                    "type": "tcp",
                    "method": "socket",
                    "unitId": 1,
                    "deviceName": "press1",
                    "deviceType": "default",
                    "timeout": 3,
                    "byteOrder": "BIG",
                    "wordOrder": "BIG",
                    "retries": 1,
                    "retryOnEmpty": False,
                    "retryOnInvalid": False,
                    "pollPeriod": POLL_MS,
                    "connectAttemptTimeMs": 1000,
                    "connectAttemptCount": 5,
                    "waitAfterFailedAttemptsMs": 1000,
                    "attributes": [],
                    "timeseries": [
                        {"tag": f"h{i}", "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": i}
                        for i in range(TAGS)
                    ],
                    "attributeUpdates": [],
                    "rpc": [],
                }
            ]
        }
    }


OURS = f"""sources:
  press1:
    protocol: modbus
    host: 127.0.0.1
    port: {{port}}
    unit: 1
    poll: {POLL_MS}ms
    signals:
{"".join(f"      h{i}: {{{{holding: {i}, type: uint16}}}}" + chr(10) for i in range(TAGS))}"""


def ensure_tb() -> str:
    """Install ThingsBoard IoT Gateway into bench/.tb-venv if needed; '' when ready, else why not."""
    python = TB_VENV / "bin" / "python"
    probe = [str(python), "-c", "import thingsboard_gateway, pymodbus, serial_asyncio"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return ""
    try:
        subprocess.run([sys.executable, "-m", "venv", str(TB_VENV)], check=True, capture_output=True)
        r = subprocess.run(
            [str(TB_VENV / "bin" / "pip"), "install", "-q", *TB_PACKAGES], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"could not create bench/.tb-venv: {exc}"
    if r.returncode != 0:
        return f"pip install {' '.join(TB_PACKAGES)} failed: {r.stderr.strip().splitlines()[-1:]}"
    return ""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def window(plc: ModbusPlc, pid: int) -> dict[str, float]:
    await asyncio.sleep(WARMUP_S)
    n0, c0, t0 = len(plc.requests), cpu_s(pid), time.monotonic()
    await asyncio.sleep(WINDOW_S)
    reqs = plc.requests[n0:]
    cpu = cpu_s(pid) - c0
    registers = sum(r.count for r in reqs)
    polls = (time.monotonic() - t0) * 1000 / POLL_MS
    return {
        "cpu_per_1000": cpu / registers * 1000 if registers else float("nan"),
        "registers": registers,
        "requests_per_poll": len(reqs) / polls,
        "rss": rss_mib(pid),
    }


async def run_ours(tmp: Path, plc: ModbusPlc, command: Path) -> dict[str, float]:
    """Our gateway as users run it: `mw-gateway` of the production install (bench_memory.ensure_prod_venv),
    as TB runs from its own venv."""
    http_port = _free_port()
    async with run_mobility_work_sim(api_key=API_KEY) as sim:
        config = write_config(
            tmp, mw_url=sim.url, api_key=API_KEY, http_port=http_port, plc_port=plc.port, rules="[]\n"
        )
        text = config.read_text()
        config.write_text(text[: text.index("sources:\n")] + OURS.format(port=plc.port))
        gw = InstalledGateway(config, command=command, http_port=http_port, api_key=API_KEY)
        gw.start()
        try:
            await gw.wait_healthy_http()
            assert gw.proc is not None
            return await window(plc, gw.proc.pid)
        finally:
            gw.stop()


def start_tb(tmp: Path, conf: Path) -> subprocess.Popen[bytes]:
    log = (tmp / "tb.log").open("ab")
    return subprocess.Popen(
        [str(TB_VENV / "bin" / "thingsboard-gateway")],
        cwd=tmp,
        env={**os.environ, "TB_GW_CONFIG_DIR": str(conf)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_broker(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    (tmp / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    return subprocess.Popen(
        ["mosquitto", "-c", str(tmp / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def run_tb(tmp: Path, plc: ModbusPlc, mqtt_port: int) -> dict[str, float]:
    conf = tmp / "tb-config"
    shutil.rmtree(conf, ignore_errors=True)
    conf.mkdir()
    (tmp / "logs").mkdir(exist_ok=True)
    shipped = next((TB_VENV / "lib").glob("python3*/site-packages/thingsboard_gateway/config"))
    shutil.copy(shipped / "logs.json", conf / "logs.json")  # the shipped logging (INFO), as for ours
    main = json.loads(json.dumps(TB_GATEWAY))
    main["thingsboard"]["port"] = mqtt_port
    (conf / "tb_gateway.json").write_text(json.dumps(main, indent=2))
    (conf / "modbus.json").write_text(json.dumps(tb_modbus(plc.port), indent=2))
    proc = start_tb(tmp, conf)
    uploaded = 0

    async def count_uploads() -> None:
        nonlocal uploaded
        async with aiomqtt.Client("127.0.0.1", mqtt_port) as client:
            await client.subscribe("v1/#")
            async for message in client.messages:
                if str(message.topic).endswith("telemetry"):
                    uploaded += 1

    counter = asyncio.create_task(count_uploads())
    try:
        n0 = len(plc.requests)
        deadline = time.monotonic() + 60
        while len(plc.requests) - n0 < TAGS * 5:  # started and polling
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ThingsBoard gateway did not poll; see {tmp / 'tb.log'}")
            await asyncio.sleep(0.1)
        result = await window(plc, proc.pid)
        result["uploads"] = uploaded
        return result
    finally:
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(tmp: Path) -> list[tuple[dict[str, float], dict[str, float]]]:
    command = ensure_prod_venv()
    mqtt_port = _free_port()
    broker = start_broker(tmp, mqtt_port)
    pairs = []
    try:
        async with run_modbus_press(simulate=True, units=(1,)) as plc:
            for _ in range(ROUNDS):
                ours = await run_ours(tmp, plc, command)
                tb = await run_tb(tmp, plc, mqtt_port)
                pairs.append((ours, tb))
    finally:
        broker.terminate()
        broker.wait()
    return pairs


def run() -> list[tuple[str, str, str]]:
    why = ensure_tb()
    if why:
        return [("thingsboard: side by side", "not run", f"could not run because {why}")]
    if shutil.which("mosquitto") is None:
        return [("thingsboard: side by side", "not run", "could not run because mosquitto is not installed")]
    with tempfile.TemporaryDirectory(prefix="bench-tb-") as tmp:
        pairs = asyncio.run(measure(Path(tmp)))
    ours = {k: statistics.median(p[0][k] for p in pairs) for k in pairs[0][0]}
    tb = {k: statistics.median(p[1][k] for p in pairs) for k in pairs[0][1]}
    ratio = statistics.median(p[1]["cpu_per_1000"] / p[0]["cpu_per_1000"] for p in pairs)
    same = f"{TAGS} holding registers every {POLL_MS} ms, same server, {ROUNDS} x {WINDOW_S:.0f} s (A B A B)"
    return [
        ("thingsboard: mw-gateway CPU s per 1,000 register reads", f"{ours['cpu_per_1000']:.4f}", same),
        (
            "thingsboard: TB IoT Gateway CPU s per 1,000 register reads",
            f"{tb['cpu_per_1000']:.4f}",
            f"thingsboard-gateway 3.8.5; {tb['uploads']:.0f} telemetry uploads in the window"
            " (no ThingsBoard server to answer it: reads and stores, no upload)",
        ),
        ("thingsboard: TB / mw-gateway CPU ratio", f"{ratio:.1f}x", "median of the per-pair ratios"),
        (
            "thingsboard: requests per poll (mw-gateway / TB)",
            f"{ours['requests_per_poll']:.1f} / {tb['requests_per_poll']:.1f}",
            "counted at the server; the minimum is 1 (16 contiguous registers)",
        ),
        (
            "thingsboard: RSS (mw-gateway / TB)",
            f"{ours['rss']:.1f} / {tb['rss']:.1f} MiB",
            "at the end of the window",
        ),
    ]


if __name__ == "__main__":
    for metric, value, note in run():
        print(f"{metric:<58} {value:>14}  {note}")
