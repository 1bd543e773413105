"""Absurd values: NaN, ±inf, 1e308, float32 garbage near 3.4e38, 400-digit integers, huge negatives, wrong
types, booleans for numbers, long strings, mixed with plausible values.

1. Through the real Engine at volume (TORTURE_ABSURD_SAMPLES samples, in batches as the gateway feeds them),
   with a rule of every trigger kind: no exception escapes, the work per batch stays bounded, refused values
   are bad samples (never stored as a signal's value), counter meters never move backwards and no firing key
   repeats; afterwards a scripted plausible scenario fires every rule again.
2. Through `mw-gateway run` with an MQTT source on a real mosquitto and the Mobility Work simulator: absurd
   payloads on three topics (plain and JSON), then plausible ones: the process stays up, the rules fire
   afterwards, /healthz answers 200 "ok" (honest: the engine does work), the door's WARNING is logged once
   per signal, not once per payload.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from gateway.core.samples import Quality, Sample
from gateway.engine.admit import refusal
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules
from gateway.engine.triggers import TRIGGER_KINDS
from gateway.sim.mobility_work import run_mobility_work_sim
from tests.conftest import _free_port
from tests.e2e.helpers import GatewayProcess, wait_for
from torture import Report, keep_log

SAMPLES = int(os.environ.get("TORTURE_ABSURD_SAMPLES", "200000"))
T0 = 1_767_225_600.0
API_KEY = "absurd-campaign-key-0123456789"

HUGE = 10**400
ABSURD: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    -1e308,
    3.4028234663852886e38,
    -3.4e38,
    HUGE,
    -HUGE,
    1 << 64,
    -(1 << 63) - 1,
    10**19 * 7,
    "x" * 10_000,
    b"\xff\x00",
    [1, 2, 3],
    {"v": 1},
    (),
    object(),
]
ODD_BUT_ACCEPTED: list[Any] = [True, False, None, "", "AUTO", "3.5", -1, 0, 2**63, -(2**63), 1.8e19, 1e-300]

# One rule per trigger kind (and per variant of the kinds whose runtimes differ), each on its own signal.
RULES = """
- id: count
  when: {counter: m.count, every: 100}
  while_open: create
  task: {description: "count {{ value }}"}
- id: count16
  when: {counter: m.count16, every: 1000, wrap: int16}
  while_open: create
  task: {description: "count16 {{ value }}"}
- id: count32
  when: {counter: m.count32, every: 1000, wrap: uint32, confirm: 1}
  while_open: create
  task: {description: "count32 {{ value }}"}
- id: hours
  when: {hours: m.run, every: 0.01}
  while_open: create
  task: {description: "hours {{ value }}"}
- id: hours-expr
  when: {hours: {expr: "m.load > 10"}, every: 0.01}
  while_open: create
  task: {description: "hours-expr {{ value }}"}
- id: above
  when: {signal: m.temp, above: 80, for: 2s, reset_below: 70}
  while_open: create
  task: {description: "above {{ value }}"}
- id: below
  when: {signal: m.level, below: 5}
  while_open: create
  task: {description: "below {{ value }}"}
- id: equals
  when: {signal: m.mode, equals: MANUAL}
  while_open: create
  task: {description: "equals {{ value }}"}
- id: in
  when: {signal: m.state, in: [3, 4]}
  while_open: create
  task: {description: "in {{ value }}"}
- id: bit
  when: {signal: m.faults, bit: 3}
  while_open: create
  task: {description: "bit {{ value }}"}
- id: expr
  when: {expr: "m.load > 90 and m.temp < 200", for: 1s}
  while_open: create
  task: {description: "expr {{ m.load }}"}
- id: stale
  when: {stale: m.flow, for: 30s}
  while_open: create
  task: {description: "stale {{ value }}"}
- id: avg
  when: {signal: m.vib, avg: 5s, above: 80, reset_below: 70}
  while_open: create
  task: {description: "avg {{ value }}"}
- id: min
  when: {signal: m.vib2, min: 5s, above: 80, reset_below: 70}
  while_open: create
  task: {description: "min {{ value }}"}
- id: max
  when: {signal: m.vib3, max: 5s, above: 80, reset_below: 70}
  while_open: create
  task: {description: "max {{ value }}"}
- id: change
  when: {signal: m.oven, change: 5s, above: 30}
  while_open: create
  task: {description: "change {{ value }}"}
- id: count-edges
  when: {count: m.jam, within: 1m, at_least: 3}
  while_open: create
  task: {description: "count {{ value }}"}
"""
SIGNALS = ["m.count", "m.count16", "m.count32", "m.run", "m.load", "m.temp", "m.level", "m.mode"]
SIGNALS += ["m.state", "m.faults", "m.flow", "m.vib", "m.vib2", "m.vib3", "m.oven", "m.jam"]


async def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="torture-absurd-") as tmp:
        await asyncio.to_thread(engine_campaign, report, Path(tmp), random.Random(13))
        await gateway_campaign(report, Path(tmp))


# ---------------------------------------------------------------- 1. the engine at volume


def _value(rng: random.Random, signal: str) -> Any:
    r = rng.random()
    if r < 0.35:
        return rng.choice(ABSURD)
    if r < 0.45:
        return rng.choice(ODD_BUT_ACCEPTED)
    if signal.startswith("m.count"):
        return rng.randrange(-40_000, 5_000_000)
    if signal == "m.run":
        return rng.random() < 0.5
    if signal == "m.mode":
        return rng.choice(["AUTO", "MANUAL", "SETUP"])
    return rng.uniform(-50, 150) if rng.random() < 0.8 else rng.randrange(0, 256)


def _meters(eng: Engine) -> dict[str, float]:
    return {
        s["id"]: s["progress"]["current"] or 0
        for s in eng.rule_status(T0)
        if s["trigger"] == "counter" and s.get("progress")
    }


def engine_campaign(report: Report, tmp: Path, rng: random.Random) -> None:
    (tmp / "rules").mkdir()
    (tmp / "rules" / "rules.yaml").write_text(RULES)
    ruleset = load_rules(tmp / "rules")
    kinds = {r.kind for r in ruleset.rules}
    report.check(
        set(TRIGGER_KINDS) <= kinds,
        f"a rule of every registered trigger kind ({', '.join(sorted(set(TRIGGER_KINDS) - kinds)) or 'all'}"
        " missing)",
    )
    eng = Engine(ruleset, gateway_id="absurd")
    logging.getLogger("gateway.engine").setLevel(logging.ERROR)  # the WARNINGs are tested in tests/engine
    keys: list[str] = []
    errors: list[str] = []
    stored_refused = 0
    backwards = 0
    slowest = 0.0
    now = T0
    meters = _meters(eng)
    batch_size = 1000
    for start in range(0, SAMPLES, batch_size):
        batch = []
        for _ in range(batch_size):
            signal = rng.choice(SIGNALS)
            quality = Quality.BAD if rng.random() < 0.03 else Quality.GOOD
            value = _value(rng, signal) if quality is Quality.GOOD else None
            batch.append(Sample(signal, value, now, quality))
            now += 0.001
        began = time.process_time()
        try:
            fired = eng.process_batch(batch, now, now - T0)
            fired += eng.tick(now, now - T0)
            if start % 10_000 == 0:  # the single-sample path too
                fired += eng.process(Sample("m.count", rng.choice(ABSURD), now), now, now - T0)
        except Exception as exc:  # what this campaign looks for
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        slowest = max(slowest, time.process_time() - began)
        keys += [f.key for f in fired]
        stored_refused += sum(
            1 for s in eng.last_values.values() if s.quality is Quality.GOOD and refusal(s.value) is not None
        )
        current = _meters(eng)
        backwards += sum(1 for rid, v in current.items() if v < meters.get(rid, 0))
        meters = current
    report.fact(
        f"engine: {SAMPLES} samples ({len(ABSURD)} kinds of absurd value, ~35%), {len(keys)} firings, "
        f"slowest batch of {batch_size} {slowest * 1000:.0f} ms CPU, refused per signal "
        f"{sum(eng.refused().values())}"
    )
    report.check(not errors, f"no exception escaped the engine ({len(errors)}: {errors[:3]})")
    report.check(slowest < 5.0, f"bounded work: the slowest batch took {slowest:.2f} s of CPU (< 5 s)")
    report.check(stored_refused == 0, f"no refused value stored as a good last value ({stored_refused})")
    report.check(backwards == 0, f"no counter meter moved backwards ({backwards} times)")
    report.check(
        len(keys) == len(set(keys)), f"no firing key repeated ({len(keys) - len(set(keys))} repeats)"
    )
    report.check(all(math.isfinite(v) for v in _meters(eng).values()), "every counter meter is finite")
    logging.getLogger("gateway.engine").setLevel(logging.NOTSET)
    after = _plausible_scenario(eng, now + 100)
    silent = sorted(r.id for r in ruleset.rules if r.id not in after)
    report.check(not silent, f"after the storm every rule fires again on plausible values (silent: {silent})")


def _plausible_scenario(eng: Engine, t: float) -> set[str]:
    """Plausible values that make every rule of RULES fire, whatever state the storm left: the ids fired."""
    fired: list[Any] = []
    mono = t - T0

    def feed(signal: str, value: Any) -> None:
        nonlocal t, mono
        t += 1.0
        mono += 1.0
        fired.extend(eng.process(Sample(signal, value, t), t, mono))
        fired.extend(eng.tick(t, mono))

    # reset every latched condition, then meet it
    for signal, value in (("m.temp", 20.0), ("m.level", 50.0), ("m.mode", "AUTO"), ("m.state", 0)):
        feed(signal, value)
    feed("m.faults", 0)
    feed("m.load", 0.0)
    feed("m.flow", 1.0)
    feed("m.run", True)
    feed("m.load", 50.0)
    for signal in ("m.count", "m.count16", "m.count32"):
        base = 1000
        for step in range(40):  # in line, within max_jump: a pending suspicion is confirmed or a glitch
            feed(signal, base + step * 250)
    for signal in ("m.vib", "m.vib2", "m.vib3"):  # below the reset, held past the window
        for _ in range(8):
            feed(signal, 10.0)
    for _ in range(8):
        feed("m.oven", 20.0)
    feed("m.jam", False)
    for signal in ("m.vib", "m.vib2", "m.vib3"):
        for _ in range(8):
            feed(signal, 95.0)
    feed("m.oven", 90.0)
    for _ in range(3):  # three rising edges within the minute
        feed("m.jam", True)
        feed("m.jam", False)
    feed("m.temp", 95.0)
    feed("m.level", 1.0)
    feed("m.mode", "MANUAL")
    feed("m.state", 3)
    feed("m.faults", 8)
    feed("m.load", 95.0)
    for _ in range(60):  # `for` timers, running hours (0.01 h = 36 s), the stale timer (30 s)
        t += 1.0
        mono += 1.0
        fired.extend(eng.tick(t, mono))
    feed("m.run", True)
    feed("m.load", 95.0)
    feed("m.temp", 95.0)
    return {f.rule_id for f in fired}


# ---------------------------------------------------------------- 2. through mw-gateway run and MQTT

MQTT_RULES = """
- id: count
  when: {counter: line.count, every: 10}
  while_open: create
  task: {description: "count {{ value }}"}
- id: hot
  when: {signal: line.temp, above: 100, reset_below: 50}
  while_open: create
  task: {description: "hot {{ value }}"}
- id: level
  when: {signal: line.level, above: 100, reset_below: 50}
  while_open: create
  task: {description: "level {{ value }}"}
"""
PAYLOADS: list[bytes] = [
    b"nan",
    b"NaN",
    b"inf",
    b"-inf",
    b"1e400",
    b"-1e400",
    b"1e308",
    b"3.4028235e38",
    b"9" * 400,
    b"-" + b"9" * 400,
    b"1" * 5000,
    str(1 << 64).encode(),
    b"18446744073709551616.5",
    b"true",
    b"null",
    b"",
    b"\xff\xfe\x00garbage",
    b"x" * 100_000,
    b"[1, 2]",
    b'{"v": 1}',
]
JSON_PAYLOADS: list[bytes] = [
    b'{"v": NaN}',
    b'{"v": Infinity}',
    b'{"v": -Infinity}',
    b'{"v": 1e400}',
    b'{"v": ' + b"9" * 400 + b"}",
    b'{"v": 3.4e38}',
    b'{"v": true}',
    b'{"v": "' + b"y" * 50_000 + b'"}',
    b'{"v": [1, 2]}',
    b'{"v": {"w": 1}}',
    b'{"v": null}',
    b"{not json",
]


def _firings(state_dir: Path, rule: str) -> int:
    db = state_dir / "gateway.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM firings WHERE rule_id = ?", (rule,)).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _config(tmp: Path, *, sim_url: str, http_port: int, mqtt_port: int) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "rules.yaml").write_text(MQTT_RULES)
    config = tmp / "gateway.yaml"
    config.write_text(f"""gateway:
  id: absurd-line
  state_dir: ./state
  rules: rules/
cmms:
  kind: mobility_work
  url: {sim_url}
  api_key: ${{MW_API_KEY}}
  plan: ultimate
  network_name: Test Factory
http:
  listen: 127.0.0.1:{http_port}
dispatcher:
  retry_initial: 200ms
  retry_max: 1s
  idle_poll: 200ms
sources:
  line:
    protocol: mqtt
    url: mqtt://127.0.0.1:{mqtt_port}
    keepalive: 2s
    reconnect_delay: 200ms
    reconnect_max_delay: 2s
    signals:
      count: plant/count
      temp: plant/temp
      level: {{topic: plant/json, json: v}}
""")
    return config


async def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0)
        return r.status_code, r.json()


async def gateway_campaign(report: Report, tmp: Path) -> None:
    tmp = tmp / "gateway"
    tmp.mkdir()
    http_port, mqtt_port = _free_port(), _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = await asyncio.create_subprocess_exec(
        "mosquitto", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    state_dir = tmp / "state"
    gw: GatewayProcess | None = None
    try:
        async with run_mobility_work_sim(api_key=API_KEY) as sim:
            config = _config(tmp, sim_url=sim.url, http_port=http_port, mqtt_port=mqtt_port)
            gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
            gw.start()
            await gw.wait_healthy_http()
            async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="absurd-publisher") as mqtt:
                count = 0

                async def first_firing() -> bool:
                    nonlocal count
                    count += 5
                    await mqtt.publish("plant/count", str(count).encode(), qos=1)
                    await asyncio.sleep(0.1)
                    return _firings(state_dir, "count") > 0

                await wait_for(first_firing, what="a first counter firing through MQTT", timeout_s=30)
                published = 0
                for _ in range(5):
                    for payload in PAYLOADS:
                        for topic in ("plant/count", "plant/temp"):
                            await mqtt.publish(topic, payload, qos=1)
                            published += 1
                    for payload in JSON_PAYLOADS:
                        await mqtt.publish("plant/json", payload, qos=1)
                        published += 1
                await asyncio.sleep(1.0)
                report.fact(f"gateway: {published} absurd payloads published on 3 topics")
                alive = gw.proc is not None and gw.proc.poll() is None
                report.check(alive, "mw-gateway run survives the absurd payloads")
                # plausible values again: the conditions re-armed, then met; the counter goes on where it was
                await mqtt.publish("plant/temp", b"20", qos=1)
                await mqtt.publish("plant/json", b'{"v": 20}', qos=1)
                await asyncio.sleep(1.0)
                before = {r: _firings(state_dir, r) for r in ("count", "hot", "level")}
                for _ in range(6):
                    count += 10
                    await mqtt.publish("plant/count", str(count).encode(), qos=1)
                    await asyncio.sleep(0.05)
                await mqtt.publish("plant/temp", b"150", qos=1)
                await mqtt.publish("plant/json", b'{"v": 150}', qos=1)

                async def all_fired() -> bool:
                    return (
                        _firings(state_dir, "count") >= before["count"] + 5
                        and _firings(state_dir, "hot") > before["hot"]
                        and _firings(state_dir, "level") > before["level"]
                    )

                try:
                    await wait_for(all_fired, what="firings after the absurd payloads", timeout_s=20)
                    fired_again = True
                except AssertionError:
                    fired_again = False
                after = {r: _firings(state_dir, r) for r in ("count", "hot", "level")}
                report.check(
                    fired_again, f"every rule fires again afterwards (before {before}, after {after})"
                )
            status, body = await _healthz(http_port)
            report.check(status == 200 and body.get("status") == "ok", f"/healthz 200 ok ({status} {body})")
            log = gw.output
            refusals = [line for line in log.splitlines() if "value refused by the engine" in line]
            report.fact(f"gateway log: {len(refusals)} 'value refused' WARNINGs, {len(log)} bytes")
            report.check(
                1 <= len(refusals) <= 2 * 3 * 5,
                f"the door's WARNING once per signal and episode, not per payload ({len(refusals)})",
            )
            report.check("Traceback" not in log, "no traceback in the gateway's log")
            gw.stop()
            report.check(gw.proc is not None and gw.proc.returncode == 0, "a clean stop (exit 0)")
    finally:
        if gw is not None:
            if gw.proc is not None and gw.proc.poll() is None:
                gw.kill()
            keep_log("absurd-gateway.log", gw.output)
        broker.terminate()
        await broker.wait()
