"""SD-card wear: bytes the gateway writes to its state directory per hour, idle and under a typical load.

The gateway's write pattern is replayed in accelerated time with the real engine and the real store (SQLite,
WAL, synchronous=FULL) in a temporary directory: samples go to the engine only (no write per sample); rule
state is saved every 60 s of gateway time when it changed (gateway/runtime/pipeline.py:
STATE_SAVE_INTERVAL_S); a firing is committed with its outbox row and the rule state in one transaction,
then marked delivered (the dispatcher);
retention runs hourly. Bytes are counted with /proc/self/io: `wchar` (bytes handed to write()/pwrite() by this
process: the WAL frames and the checkpoints into the database file) and `write_bytes` (what reached a block
device; 0 on tmpfs). Nothing else in the process writes while a scenario runs.

Scenarios (a simulated day each, reported per hour):
    idle      5 signals polled at 1 Hz, values steady, no rule fires
    typical   20 signals at 1 Hz (a press and a pump: counters, temperatures, run flags), a counter rule
              firing every 10 min (6 tasks/hour, well above a real press line), threshold rules staying quiet
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, Outcome
from gateway.core.samples import Sample
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules
from gateway.runtime.housekeeping import prune
from gateway.store import Store

T0 = 1_767_225_600.0
STATE_SAVE_INTERVAL_S = 60.0
HOUR = 3600
HOURS = 24  # a simulated day, so that WAL checkpoints into the database file are included

RULES = """
- id: lube
  when: {counter: m0.strokes, every: 6000}
  task: {equipment: EQ-1, description: "Lubricate at {{ value | int }}", assignees: [1]}
- id: hot
  when: {signal: m0.temp, above: 85, for: 5m, reset_below: 80}
  task: {equipment: EQ-1, description: "Hot", assignees: [1]}
- id: pump-hours
  when: {hours: m1.running, every: 500}
  task: {equipment: EQ-2, description: "Service pump", assignees: [1]}
- id: pump-hot
  when: {signal: m1.temp, above: 90, for: 1m}
  task: {equipment: EQ-2, description: "Pump hot", assignees: [1]}
"""


def _io() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


def _signals(n: int) -> list[str]:
    base = ["m0.strokes", "m0.temp", "m1.running", "m1.temp"]
    return (base + [f"m{2 + i // 4}.x{i % 4}" for i in range(max(0, n - len(base)))])[:n]


def _value(signal: str, t: int) -> float | bool:
    if signal == "m0.strokes":
        return float(t * 10)  # 10 strokes/s: the counter rule fires every 600 s
    if signal == "m1.running":
        return True
    if signal.endswith("temp"):
        return 60.0 + (t % 7) * 0.1
    return float(t % 100)


async def _scenario(tmp: Path, *, n_signals: int, strokes: bool) -> tuple[int, int, int]:
    """HOURS simulated hours. Returns (wchar bytes, block bytes, firings), totals."""
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(RULES)
    clock = ManualClock(T0)
    store = await Store.open(tmp / "state", gateway_id="bench", clock=clock)
    signals = _signals(n_signals)
    engine = Engine(
        load_rules(rules_dir, known_signals=set(signals)), gateway_id="bench", state=await store.rules.load()
    )
    firings_total = 0
    before = _io()
    last_save = 0
    for t in range(HOUR * HOURS):
        now = T0 + t
        clock.set(now)
        firings = []
        for name in signals:
            value = _value(name, t) if (strokes or name != "m0.strokes") else 0.0
            firings.extend(engine.process(Sample(name, value, now), now))
        firings.extend(engine.tick(now))
        if firings:
            firings_total += len(firings)
            await store.outbox.record_firings(firings, rule_states=engine.take_dirty_state())
            for item in await store.outbox.due(now=now, limit=100):
                await store.outbox.mark_delivered(
                    item,
                    Delivery(Outcome.DONE, status_code=201),
                    backend="mobility_work",
                    quota_month="2026-01",
                )
        if t - last_save >= STATE_SAVE_INTERVAL_S:
            last_save = t
            dirty = engine.take_dirty_state()
            if dirty:
                await store.rules.save(dirty)
        if t % HOUR == HOUR - 1:
            await prune(store, now=now, retention_s=30 * 86400)
    after = _io()
    await store.close()
    return after[0] - before[0], after[1] - before[1], firings_total


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


def run() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, n_signals, strokes in (("idle", 5, False), ("typical", 20, True)):
        with tempfile.TemporaryDirectory() as tmp:
            total, block_total, firings = asyncio.run(
                _scenario(Path(tmp), n_signals=n_signals, strokes=strokes)
            )
        written, block = total // HOURS, block_total // HOURS
        samples = n_signals * HOUR
        rows.append(
            (
                f"disk: bytes written per hour, {name}",
                _kib(written),
                f"{samples:,} samples/h, {firings / HOURS:.0f} firings/h; {written / samples:.1f} B/sample; "
                f"block layer {_kib(block)}/h; ~{written * 24 * 365 / 2**30:.1f} GiB/year",
            )
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
