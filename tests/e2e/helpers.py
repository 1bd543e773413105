"""Running the real `mw-gateway` as a subprocess, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def write_config(
    tmp: Path,
    *,
    mw_url: str,
    api_key: str,
    http_port: int,
    plc_port: int,
    rules: str,
    extra: str = "",
    cmms: str | None = None,
) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "rules.yaml").write_text(rules)
    cmms_block = (
        cmms
        or f"""cmms:
  kind: mobility_work
  url: {mw_url}
  api_key: ${{MW_API_KEY}}
  plan: premium
  network_name: Test Factory
"""
    )
    config = tmp / "gateway.yaml"
    config.write_text(f"""gateway:
  id: e2e-line
  state_dir: ./state
  rules: rules/
{cmms_block}
http:
  listen: 127.0.0.1:{http_port}
dispatcher:
  retry_initial: 200ms
  retry_max: 1s
  idle_poll: 200ms
sources:
  press1:
    protocol: modbus
    host: 127.0.0.1
    port: {plc_port}
    unit: 1
    poll: 100ms
    signals:
      strokes: {{holding: 0, type: uint32}}
      temp:    {{holding: 2, type: float32}}
{extra}""")
    return config


class GatewayProcess:
    """`mw-gateway run -c FILE` in a subprocess, its output captured to a file. `argv` is the command
    before `run` (default: `python -m gateway.cli` of this checkout; bench_memory runs an installed one)."""

    def __init__(
        self, config: Path, *, env: dict[str, str], http_port: int, argv: Sequence[str] | None = None
    ) -> None:
        self.config = config
        self.argv = list(argv) if argv is not None else [sys.executable, "-m", "gateway.cli"]
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.http_port = http_port
        self.log_path = config.parent / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.argv, "run", "-c", str(self.config)],
            cwd=self.config.parent,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_healthy_http(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.output}")
                try:
                    await client.get(f"http://127.0.0.1:{self.http_port}/api/status", timeout=5.0)
                    return
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        raise AssertionError(f"gateway HTTP did not come up:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


async def wait_for(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    *,
    timeout_s: float = 20.0,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_draining(count: Callable[[], int], *, stall_s: float = 30.0, what: str = "rows") -> None:
    """Wait until count() reaches 0, failing only when it has not gone down for stall_s.

    For queues whose drain rate depends on the machine (a loaded CI box drains a few thousand rows slower):
    the test still fails on a stuck queue, but not on a slow one."""
    best = count()
    last_progress = time.monotonic()
    while best > 0:
        await asyncio.sleep(0.2)
        now_count = count()
        if now_count < best:
            best, last_progress = now_count, time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            raise AssertionError(f"{what}: stuck at {best} for {stall_s:.0f} s")
