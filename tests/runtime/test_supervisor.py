"""The supervisor: every long-running task named and watched; a dead one is logged once, turns /healthz 503
naming it, and `mw-gateway run` exits non-zero (systemd restarts it)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from gateway.runtime.lifecycle import Gateway, TaskDied
from gateway.runtime.reload import load_all
from gateway.runtime.supervisor import Supervisor
from tests.e2e.helpers import REPO, wait_for


def _config(tmp_path: Path, http_port: int) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "none.yaml").write_text("[]\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        gateway:
          id: supervisor-test
          state_dir: ./state
          rules: rules/
        cmms:
          kind: dry_run
        http:
          listen: 127.0.0.1:{http_port}
        sources: {{}}
        """)
    )
    return path


async def test_a_critical_task_that_raises_is_logged_once_and_sets_failure(caplog):
    sup = Supervisor()

    async def boom() -> None:
        raise ValueError("broken")

    sup.start("engine", boom)
    await asyncio.wait_for(sup.failure.wait(), timeout=5)
    assert sup.failed == {"engine": "ValueError: broken"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "task engine died" in errors[0].getMessage()
    assert "ValueError: broken" in errors[0].getMessage()  # the traceback is in the one line


async def test_a_critical_task_that_returns_while_running_has_died_too():
    sup = Supervisor()

    async def quits() -> None:
        return None

    sup.start("dispatcher", quits)
    await asyncio.wait_for(sup.failure.wait(), timeout=5)
    assert sup.failed == {"dispatcher": "ended unexpectedly"}


async def test_a_source_is_restarted_and_the_gateway_keeps_running(caplog):
    from gateway.core.backoff import Backoff

    sup = Supervisor()
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("driver bug")
        await asyncio.Event().wait()

    sup.start("source:press1", flaky, restart=True, backoff=Backoff(initial_s=0.001, max_s=0.001))
    await wait_for(lambda: len(runs) == 3, what="two restarts")
    assert not sup.failure.is_set() and sup.failed == {}
    assert len([r for r in caplog.records if "restarting it" in r.getMessage()]) == 2
    await sup.cancel(["source:press1"])


async def test_stalled_names_the_tasks_without_a_recent_beat():
    now = [100.0]
    sup = Supervisor(monotonic=lambda: now[0])

    async def forever() -> None:
        await asyncio.Event().wait()

    for name in ("engine", "dispatcher", "http"):
        sup.start(name, forever)
    now[0] = 110.0
    sup.beat("engine")
    sup.beat("http")
    now[0] = 120.0
    assert sup.stalled(["engine", "dispatcher", "http"], after_s=15.0) == ["dispatcher"]
    await sup.cancel(sup.names())


async def test_a_dead_engine_turns_healthz_503_naming_it_and_wait_returns_at_once(tmp_path, free_port):
    port = free_port()
    config, rules = load_all(_config(tmp_path, port))
    gw = Gateway(config, rules)
    await gw.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200

            def broken(now: float, mono: float | None = None) -> list[object]:
                raise RuntimeError("engine bug")

            gw.engine.tick = broken  # type: ignore[method-assign,assignment]
            await asyncio.wait_for(gw.supervisor.failure.wait(), timeout=10)  # the next Tick kills it
            response = await client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["reasons"][0].startswith("task engine died (RuntimeError: engine bug)")
        try:
            await asyncio.wait_for(gw.wait(), timeout=5)
        except TaskDied as exc:
            assert exc.tasks == {"engine": "RuntimeError: engine bug"}
        else:
            raise AssertionError("wait() returned without TaskDied")
    finally:
        await gw.stop()


CRASHING_RUN = """
import sys
from gateway.engine.engine import Engine
def broken(self, now, mono=None):
    raise RuntimeError("engine bug injected by the test")
Engine.tick = broken
from gateway.cli import main
sys.exit(main(["run", "-c", sys.argv[1]]))
"""


def test_mw_gateway_run_exits_non_zero_when_a_task_dies(tmp_path, free_port):
    config = _config(tmp_path, free_port())
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert output.count("task engine died") == 1, output
    assert "RuntimeError: engine bug injected by the test" in output
    assert "exiting with status 1" in output
