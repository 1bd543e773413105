"""The systemd watchdog is fed only while the engine consumer, the dispatcher and the HTTP server all make
progress (heartbeats), not merely while the event loop turns."""

from __future__ import annotations

import logging

import gateway.runtime.lifecycle as lifecycle
from gateway.runtime.lifecycle import Gateway
from gateway.runtime.reload import load_all
from tests.e2e.helpers import wait_for
from tests.runtime.test_supervisor import _config


async def test_a_stalled_dispatcher_stops_the_watchdog_pings_and_they_resume_with_it(
    tmp_path, free_port, monkeypatch, caplog
):
    sent: list[str] = []
    monkeypatch.setattr(lifecycle, "notify", lambda message: sent.append(message) or True)
    monkeypatch.setattr(lifecycle, "watchdog_interval_s", lambda: 0.02)
    monkeypatch.setattr(lifecycle, "PROGRESS_STALL_S", 0.3)
    path = _config(tmp_path, free_port())
    path.write_text(path.read_text() + "dispatcher:\n  idle_poll: 50ms\n")
    config, rules = load_all(path)
    gw = Gateway(config, rules)
    caplog.set_level(logging.INFO, logger="gateway.runtime.lifecycle")
    await gw.start()
    try:

        def pings() -> int:
            return sent.count("WATCHDOG=1")

        await wait_for(lambda: pings() >= 3, what="the watchdog to be fed while everything progresses")
        beat = gw.dispatcher.heartbeat
        gw.dispatcher.heartbeat = lambda: None  # the dispatcher stops making progress
        await wait_for(
            lambda: any("no progress from dispatcher" in r.getMessage() for r in caplog.records),
            what="the stalled dispatcher to be named",
        )
        stopped_at = pings()
        periodic = gw.supervisor.heartbeats["periodic"]
        turns = 0

        def loop_turned_again() -> bool:
            nonlocal periodic, turns
            if gw.supervisor.heartbeats["periodic"] != periodic:
                periodic, turns = gw.supervisor.heartbeats["periodic"], turns + 1
            return turns >= 5

        await wait_for(loop_turned_again, what="five more turns of the periodic task")
        assert pings() == stopped_at  # the loop turns, but nobody feeds the watchdog

        gw.dispatcher.heartbeat = beat
        await wait_for(lambda: pings() > stopped_at, what="the pings to resume")
        assert any("feeding the systemd watchdog again" in r.getMessage() for r in caplog.records)
    finally:
        await gw.stop()
