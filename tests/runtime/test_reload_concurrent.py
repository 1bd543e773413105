"""Two reloads at once (SIGHUP served by `wait()` while the rules-folder watcher reloads): they run one after
the other, and a `sources:` change restarts the sources once, not twice ("task source:press1 is already
running" stopped the gateway)."""

from __future__ import annotations

import asyncio

from tests.web.ops_gateway import running_gateway


async def test_two_reloads_at_once_with_a_sources_change_both_complete(tmp_path, free_port, monkeypatch):
    async with running_gateway(tmp_path, free_port(), monkeypatch) as run:
        await run.wait_for_sample("press1.strokes", 0)
        path, before = run.gw.config.path, run.gw.config.sources
        path.write_text(path.read_text().replace("poll: 100ms", "poll: 150ms"))
        assert await asyncio.gather(run.gw.reload(), run.gw.reload()) == [True, True]
        assert run.gw.config.sources != before
        assert not run.gw.supervisor.failure.is_set()
        assert run.gw.supervisor.names("source:") == ["source:press1"]
        await run.set_strokes(42)
        await run.wait_for_sample("press1.strokes", 42)  # the restarted source polls
