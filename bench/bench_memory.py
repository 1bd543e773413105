"""Memory: the resident set (RSS) of the real `mw-gateway run` idle and with 10,000 signals and 1,000 rules;
the engine and store after one hour of simulated load (no growth); and which protocol libraries are imported
for which configuration (only those a configured source needs).

RSS is read from /proc/<pid>/status (VmRSS) once the gateway is up and has read every signal.

The RSS rows measure what users run: `mw-gateway run` from a production install of this working tree,
bench/.prod-venv (ignored by git): `pip install .` with the runtime dependencies only (no extras; pip
compiles the bytecode, as systemd/install.sh's install does), built once and our package reinstalled into
it (`--no-deps`) at every bench run, so edits are measured; with the environment of systemd's unit
(PYTHONDONTWRITEBYTECODE=1, no SSL_CERT_FILE / SSL_CERT_DIR / PYTHONPATH). The idle figure is also given
for the development venv (.venv: editable install with the test and dev extras, whose rich and pygments
httpx's CLI module imports when installed), without PYTHONDONTWRITEBYTECODE so that our modules are read
from cached bytecode rather than compiled at every start, for comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import httpx

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from tests.conftest import _free_port
from tests.e2e.helpers import REPO, GatewayProcess, wait_for, write_config

HERE = Path(__file__).resolve().parent
PROD_VENV = HERE / ".prod-venv"
API_KEY = "bench-memory-key-0123456789"
RUNS = 3  # idle RSS: the median of this many starts
# Not in the service's environment: CA locations (the gateway would verify with them), a path to sources.
NOT_IN_A_SERVICE = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PYTHONPATH")
PROTOCOL_LIBS = ("pymodbus", "asyncua", "aiomqtt", "paho")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def big_sources(plc_port: int) -> str:
    """10,000 signals: units 1 and 2 fully (2,000 holding + 2,000 input registers each), 2,000 on unit 3."""
    out = []
    for unit, tables in ((1, ("holding", "input")), (2, ("holding", "input")), (3, ("holding",))):
        signals = "".join(
            f"      {t[0]}{a}: {{{t}: {a}, type: uint16}}\n" for t in tables for a in range(2000)
        )
        out.append(
            f"  u{unit}:\n    protocol: modbus\n    host: 127.0.0.1\n    port: {plc_port}\n    unit: {unit}\n"
            f"    poll: 1s\n    signals:\n{signals}"
        )
    return "".join(out)


BIG_RULES = "".join(
    f"- id: r{i}\n  when: {{signal: u{1 + i % 3}.h{i}, above: 60000, reset_below: 50000}}\n"
    f"  task: {{equipment: EQ-0001, assignees: [3], description: 'Rule {i}: {{{{ value }}}}'}}\n"
    for i in range(1000)
)


def _runtime_dependencies() -> str:
    """pyproject's runtime dependencies, one a line (the prod venv is rebuilt when they change)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return "\n".join(project["dependencies"])


def ensure_prod_venv() -> Path:
    """bench/.prod-venv with this working tree installed as users install it; returns its `mw-gateway`.

    The first time (or when pyproject's runtime dependencies change): `pip install .` with its dependencies.
    Every time: our package alone reinstalled (`--no-deps --force-reinstall`), from a clean copy of the tree
    (pyproject.toml, README.md, gateway/) so no stale build/ output of a deleted module is packaged."""
    python = PROD_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PROD_VENV)], check=True, capture_output=True)
    stamp = PROD_VENV / ".runtime-dependencies"
    wanted = hashlib.sha256(_runtime_dependencies().encode()).hexdigest()
    have = stamp.read_text() if stamp.exists() else ""
    with tempfile.TemporaryDirectory(prefix="bench-mem-src-") as tmp:
        src = Path(tmp) / "mw-gateway"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        shutil.copytree(REPO / "gateway", src / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
        if have == wanted:
            args = ["install", "-q", "--force-reinstall", "--no-deps", str(src)]
        else:
            args = ["install", "-q", str(src)]
        r = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip {' '.join(args)} failed in {PROD_VENV}: {r.stderr[-2000:]}")
    stamp.write_text(wanted)
    return PROD_VENV / "bin" / "mw-gateway"


class InstalledGateway(GatewayProcess):
    """`mw-gateway run -c FILE` from an installed venv (`command`), or `python -m gateway.cli` of this
    checkout (the development venv) when `command` is None; in both cases with a service's environment."""

    def __init__(self, config: Path, *, command: Path | None, http_port: int, api_key: str = API_KEY) -> None:
        argv = None if command is None else [str(command)]
        super().__init__(config, env={"MW_API_KEY": api_key}, http_port=http_port, argv=argv)
        for name in (*NOT_IN_A_SERVICE, "PYTHONDONTWRITEBYTECODE"):
            self.env.pop(name, None)
        if command is not None:
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"  # as systemd/mw-gateway.service sets it


async def gateway_rss(big: bool, command: Path | None = None) -> tuple[float, int]:
    """RSS (MiB) of `mw-gateway run` once every signal was read twice, and the samples read by then."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        http_port = _free_port()
        async with (
            run_mobility_work_sim(api_key=API_KEY) as sim,
            run_modbus_press(simulate=False, units=(1, 2, 3)) as plc,
        ):
            rules = BIG_RULES if big else "[]\n"
            config = write_config(
                Path(tmp),
                mw_url=sim.url,
                api_key=API_KEY,
                http_port=http_port,
                plc_port=plc.port,
                rules=rules,
            )
            if big:
                text = config.read_text()
                config.write_text(
                    text[: text.index("sources:\n") + len("sources:\n")] + big_sources(plc.port)
                )
            gw = InstalledGateway(config, command=command, http_port=http_port)
            gw.start()
            try:
                await gw.wait_healthy_http(timeout_s=60)

                async def samples() -> int:
                    async with httpx.AsyncClient() as client:
                        body = (
                            await client.get(f"http://127.0.0.1:{http_port}/api/status", timeout=10)
                        ).json()
                    return sum(int(s["samples"]) for s in body["sources"])

                want = 20_000 if big else 4  # every signal read at least twice
                await wait_for(lambda: samples(), timeout_s=5)
                await wait_for(lambda: _ge(samples(), want), timeout_s=60, what=f"{want} samples")
                await asyncio.sleep(3.0)
                assert gw.proc is not None
                return rss_mib(gw.proc.pid), await samples()
            finally:
                gw.stop()


async def _ge(n: Any, want: int) -> bool:
    return bool(await n >= want)


LOAD = textwrap.dedent(
    """
    import asyncio, gc, json, random, sys, tempfile
    from pathlib import Path
    from bench import bench_engine as b
    from bench.bench_memory import rss_mib
    from gateway.core.clock import ManualClock
    from gateway.engine.engine import Engine
    from gateway.engine.loader import load_rules
    from gateway.store import Store

    async def main():
        rng = random.Random(42)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "r.yaml").write_text(b._rules_yaml(rng))
            ruleset = load_rules(Path(tmp))
            samples = b._samples(rng)  # 30 sweeps of the 10,000 signals
            clock = ManualClock(b.T0)
            store = await Store.open(Path(tmp) / "state", gateway_id="bench", clock=clock)
            engine = Engine(ruleset, gateway_id="bench")
            out = {}
            fired = 0
            for minute in range(60):
                for k in range(0, len(samples), b.N_SIGNALS):  # one sweep per simulated second
                    now = clock.now()
                    firings = []
                    for s in samples[k:k + b.N_SIGNALS]:
                        f = engine.process(s, now)
                        if f:
                            firings.extend(f)
                    firings.extend(engine.tick(now))
                    if firings:
                        await store.outbox.record_firings(firings)
                        fired += len(firings)
                    clock.advance(2.0)  # 30 sweeps every 2 s: a minute
                if minute in (9, 59):
                    gc.collect()
                    out[str(minute + 1)] = rss_mib(__import__("os").getpid())
            await store.close()
            out["fired"] = fired
            print(json.dumps(out))

    asyncio.run(main())
    """
)

IMPORTS = textwrap.dedent(
    """
    import json, sys
    from gateway.config import load_config
    from gateway.sources.registry import build_source
    import gateway.runtime.lifecycle, gateway.cli  # everything the gateway imports at start
    config = load_config(sys.argv[1], env={"MW_API_KEY": "k" * 24})
    for name, source in config.sources.items():
        build_source(name, source)
    libs = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
    print(json.dumps(libs))
    """
)


def imported_libs(tmp: Path, sources: str) -> list[str]:
    config = write_config(
        tmp, mw_url="http://127.0.0.1:9", api_key="k" * 24, http_port=8080, plc_port=502, rules="[]\n"
    )
    text = config.read_text()
    config.write_text(text[: text.index("sources:\n")] + sources)
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(config), ",".join(PROTOCOL_LIBS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout))


# Libraries only some configurations need: each should be imported only when its feature is configured.
OPTIONAL_LIBS = (
    "pymodbus",
    "serial",
    "asyncua",
    "cryptography",
    "aiomqtt",
    "paho",
    "jwt",
    "google",
)  # google.protobuf

RUN_AND_LIST = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time
    config, port, wanted = sys.argv[1], int(sys.argv[2]), set(sys.argv[3].split(","))

    def watch():  # once the HTTP port answers (the gateway is up) and a second has passed: list, then stop
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)
        print("LIBS " + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & wanted)), flush=True)
        print("OURS " + json.dumps(sorted(m for m in sys.modules if not_for_run(m))), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    from tests.test_cli_imports import not_for_run
    from gateway.cli import main
    main(["run", "-c", config])
    """
)


def run_imports(tmp: Path, sources: str, http_extra: str = "") -> tuple[list[str], list[str]]:
    """The optional libraries the real `mw-gateway run` has imported once up, for this configuration, and the
    modules of other commands it has imported (tests/test_cli_imports.py: none)."""
    port = _free_port()
    config = write_config(
        tmp,
        mw_url="http://127.0.0.1:9",
        api_key="k" * 24,
        http_port=port,
        plc_port=_free_port(),
        rules="[]\n",
    )
    text = config.read_text()
    text = text.replace(f"  listen: 127.0.0.1:{port}\n", f"  listen: 127.0.0.1:{port}\n{http_extra}")
    config.write_text(text[: text.index("sources:\n")] + sources)
    out = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, str(config), str(port), ",".join(OPTIONAL_LIBS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MW_API_KEY": "k" * 24},
    )
    lines = {x[:4]: json.loads(x[5:]) for x in out.stdout.splitlines() if x.startswith(("LIBS ", "OURS "))}
    if len(lines) != 2:
        raise RuntimeError(f"mw-gateway run did not come up: {out.stderr[-2000:]}")
    return list(lines["LIBS"]), list(lines["OURS"])


def idle_median(command: Path | None) -> tuple[float, list[float]]:
    runs = [asyncio.run(gateway_rss(big=False, command=command))[0] for _ in range(RUNS)]
    return statistics.median(runs), runs


def run() -> list[tuple[str, str, str]]:
    prod = ensure_prod_venv()
    idle, idle_runs = idle_median(prod)
    dev_idle, dev_runs = idle_median(None)
    big, n = asyncio.run(gateway_rss(big=True, command=prod))
    load = subprocess.run([sys.executable, "-c", LOAD], cwd=REPO, capture_output=True, text=True, check=True)
    after = json.loads(load.stdout)
    runs = " / ".join(f"{x:.1f}" for x in idle_runs)
    rows = [
        (
            "memory: RSS idle (1 Modbus source, 2 signals)",
            f"{idle:.1f} MiB",
            f"mw-gateway run, production install (bench/.prod-venv), VmRSS; median of {runs}",
        ),
        (
            "memory: RSS idle, development venv",
            f"{dev_idle:.1f} MiB",
            "the same from .venv (editable, test+dev extras); median of "
            + " / ".join(f"{x:.1f}" for x in dev_runs),
        ),
        (
            "memory: RSS with 10,000 signals and 1,000 rules",
            f"{big:.1f} MiB",
            f"production install; 3 Modbus sources, poll 1 s; {n:,} samples",
        ),
        (
            "memory: engine+store RSS at 10 / 60 simulated min",
            f"{after['10']:.1f} / {after['60']:.1f} MiB",
            f"1,000 rules, 10,000 signals every 2 s (18M samples), {after['fired']} firings stored;"
            f" growth {after['60'] - after['10']:+.1f} MiB",
        ),
    ]
    modbus = "sources:\n  p:\n    protocol: modbus\n    host: 127.0.0.1\n    signals: {a: {holding: 0}}\n"
    opcua = (
        "sources:\n  o:\n    protocol: opcua\n    url: opc.tcp://127.0.0.1:4840\n    signals: {a: ns=2;i=1}\n"
    )
    mqtt = "sources:\n  m:\n    protocol: mqtt\n    url: mqtt://127.0.0.1:1883\n    signals: {a: x/y}\n"
    sparkplug = (
        "sources:\n  s:\n    protocol: sparkplug\n    url: mqtt://127.0.0.1:1883\n"
        "    group: G\n    host_id: h\n    signals: {a: {node: N, metric: M}}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, src, want in (
            ("none", "sources: {}\n", []),
            ("modbus", modbus, ["pymodbus"]),
            ("opcua", opcua, ["asyncua"]),
            ("mqtt", mqtt, ["aiomqtt", "paho"]),
        ):
            libs = imported_libs(Path(tmp), src)
            verdict = "ok" if libs == want else f"UNEXPECTED (wanted {want})"
            rows.append(
                (
                    f"memory: protocol libraries imported, {label} configured",
                    ", ".join(libs) or "none",
                    verdict,
                )
            )
        # The real `mw-gateway run`, up and serving: which optional libraries each configuration loads.
        jwt_key = "  servicemobility_jwt_key: servicemobility-key-of-32-bytes-long\n"
        others: set[str] = set()
        for label, src, extra in (
            ("1 Modbus source", modbus, ""),
            ("1 Modbus source + ServiceMobility JWT key", modbus, jwt_key),
            ("1 OPC UA source", opcua, ""),
            ("1 MQTT source", mqtt, ""),
            ("1 Sparkplug B source", sparkplug, ""),
        ):
            libs, ours = run_imports(Path(tmp), src, extra)
            others.update(ours)
            rows.append(
                (
                    f"memory: optional libraries loaded by run, {label}",
                    ", ".join(libs) or "none",
                    f"of {', '.join(OPTIONAL_LIBS)} (jwt: on the first token)",
                )
            )
        rows.append(
            (
                "memory: other commands' modules loaded by run",
                ", ".join(sorted(others)) or "none",
                "backtest, bulk, tools, simulators, fleet bus/relay (any of the 5 configurations above)",
            )
        )
    return rows


if __name__ == "__main__":
    for metric, value, note in run():
        print(f"{metric:<55} {value:>14}  {note}")
