"""Hostile input: hypothesis fuzzing of the webhook endpoints (over real HTTP, against the real receiver and
SQLite store) and of the gateway.yaml and rule loaders (mutations of valid files).

Verified: no answer outside 200/400/401/413 (never a 500), nothing stored from an unsigned or wrongly signed
body, no stored event without an event name; the loaders either load or raise ConfigError/RuleError (never
another exception), and every problem they report carries a line number.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.core.errors import ConfigError, RuleError
from gateway.engine.loader import load_rules
from gateway.web.signature import sign
from tests.conftest import _free_port
from tests.web.test_webhooks_fuzz import json_values, webhooks
from tests.web.webhook_server import MW_PATH, SECRET, SM_JWT_KEY, SM_PATH, running_receiver, sm_token
from torture import Report

EXAMPLES = int(os.environ.get("TORTURE_EXAMPLES", "400"))
ALLOWED = {200, 400, 401, 413}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
REPO = Path(__file__).resolve().parents[1]
DEMO_ENV = {
    "DEMO_STATE_DIR": "./state",
    "DEMO_RULES_DIR": "rules/",
    "DEMO_MW_URL": "http://127.0.0.1:9",
    "DEMO_MW_API_KEY": "k" * 24,
    "DEMO_HTTP_PORT": "8080",
    "DEMO_WEBHOOK_SECRET": "s" * 24,
    "DEMO_PLC_PORT": "502",
}


def prop(report: Report, what: str, test: Callable[[], None]) -> None:
    """Run one hypothesis property; its failure (with the shrunk example) is one failed check."""
    try:
        test()
    except Exception as exc:  # hypothesis re-raises the minimal failing example's error
        report.check(False, f"{what}: {type(exc).__name__}: {str(exc)[:300]}")
    else:
        report.check(True, what)


async def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="torture-input-") as tmp:
        await webhooks_campaign(report, Path(tmp))
        await asyncio.to_thread(loaders_campaign, report, Path(tmp))


async def webhooks_campaign(report: Report, tmp: Path) -> None:
    port = _free_port()
    statuses: dict[int, int] = {}
    async with running_receiver(
        tmp, port, webhook_secret=SECRET, max_body_bytes=64 * 1024, servicemobility_jwt_key=SM_JWT_KEY
    ) as running:
        url = running.url
        db = tmp / "state" / "gateway.sqlite3"

        def stored() -> int:
            conn = sqlite3.connect(db, timeout=10)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM webhook_events").fetchone()[0])
            finally:
                conn.close()

        def post(client: httpx.Client, path: str, body: bytes, headers: dict[str, str]) -> int:
            r = client.post(url + path, content=body, headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code in ALLOWED, (r.status_code, r.text[:200])
            return r.status_code

        def fuzz() -> None:
            with httpx.Client(timeout=30) as client:

                @FUZZ
                @given(body=st.binary(max_size=3000), header=st.text(max_size=80))
                def unsigned(body: bytes, header: str) -> None:
                    before = stored()
                    with contextlib.suppress(UnicodeEncodeError, httpx.LocalProtocolError):
                        post(client, MW_PATH, body, {"X-MW-Signature": header})
                    assert stored() == before, "an unsigned or wrongly signed body was stored"

                @FUZZ
                @given(body=st.binary(max_size=3000))
                def signed_bytes(body: bytes) -> None:
                    for path in (MW_PATH, SM_PATH):
                        post(client, path, body, {"X-MW-Signature": sign(SECRET, body), **sm_token()})

                @FUZZ
                @given(payload=webhooks)
                def signed_json(payload: dict[str, Any]) -> None:
                    body = json.dumps(payload).encode()
                    post(client, MW_PATH, body, {"X-MW-Signature": sign(SECRET, body)})

                @FUZZ
                @given(data=json_values)
                def servicemobility(data: Any) -> None:
                    payload = {
                        "type": "InventoryUsage",
                        "data": {"rows": [{"InventoryUsage": {"Items": data}}]},
                    }
                    post(client, SM_PATH, json.dumps(payload).encode(), sm_token())

                prop(
                    report,
                    f"unsigned/wrong signature: never a 500, nothing stored ({EXAMPLES} bodies)",
                    unsigned,
                )
                prop(
                    report,
                    f"signed random bytes on both endpoints: never a 500 ({EXAMPLES} bodies)",
                    signed_bytes,
                )
                prop(report, f"signed webhook-shaped JSON: never a 500 ({EXAMPLES} bodies)", signed_json)
                prop(report, f"ServiceMobility envelopes: never a 500 ({EXAMPLES} bodies)", servicemobility)

        await asyncio.to_thread(fuzz)
        conn = sqlite3.connect(db, timeout=10)
        try:
            bad = conn.execute(
                "SELECT COUNT(*) FROM webhook_events WHERE event IS NULL OR TRIM(event) = '' OR body = ''"
            ).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM webhook_events").fetchone()[0]
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        report.fact(f"webhook answers: {dict(sorted(statuses.items()))}; {total} events stored")
        report.check(bad == 0, f"no stored event without an event name or body ({bad} of {total})")
        report.check(check == "ok", "the store's integrity_check after the fuzzing")


def mutations(text: str) -> st.SearchStrategy[str]:
    """A valid file with a few lines deleted, duplicated, replaced by junk, or cut at a random point."""
    lines = text.splitlines(keepends=True)
    junk = st.sampled_from(
        [
            "  - ",
            ": :",
            "{",
            "]",
            "\t",
            "'",
            '"',
            "&a",
            "*a",
            "!!python/object:os.system",
            "  x: [1, 2",
            "@",
            "%",
        ]
    ) | st.text(max_size=20)
    index = st.integers(0, max(len(lines) - 1, 0))
    edit = st.one_of(
        st.tuples(st.just("del"), index, st.just("")),
        st.tuples(st.just("dup"), index, st.just("")),
        st.tuples(st.just("junk"), index, junk),
        st.tuples(st.just("insert"), index, junk),
        st.tuples(st.just("cut"), st.integers(0, len(text)), st.just("")),
    )

    def apply(edits: list[tuple[str, int, str]]) -> str:
        out = list(lines)
        for op, i, s in edits:
            if op == "cut":
                return "".join(out)[:i]
            if not out:
                break
            i = min(i, len(out) - 1)
            if op == "del":
                del out[i]
            elif op == "dup":
                out.insert(i, out[i])
            elif op == "junk":
                out[i] = out[i][: len(out[i]) // 2] + s + "\n"
            else:
                out.insert(i, s + "\n")
        return "".join(out)

    return st.lists(edit, min_size=1, max_size=4).map(apply)


def loaders_campaign(report: Report, tmp: Path) -> None:
    config_text = (REPO / "gateway" / "demo_data" / "gateway.yaml").read_text()
    rules_text = "".join(p.read_text() for p in sorted((REPO / "rules").glob("*.yaml")))
    outcomes = {"config ok": 0, "config errors": 0, "rules ok": 0, "rules errors": 0}
    rules_dir = tmp / "fuzz-rules"
    rules_dir.mkdir()

    @FUZZ
    @given(text=mutations(config_text))
    def config(text: str) -> None:
        try:
            load_config(tmp / "gateway.yaml", env=DEMO_ENV, text=text)
            outcomes["config ok"] += 1
        except ConfigError as exc:
            outcomes["config errors"] += 1
            unlocated = [str(p) for p in exc.problems if p.line < 1]
            assert not unlocated, f"problems without a line: {unlocated}"

    @FUZZ
    @given(text=mutations(rules_text))
    def rules(text: str) -> None:
        (rules_dir / "rules.yaml").write_text(text, encoding="utf-8")
        try:
            load_rules(rules_dir)
            outcomes["rules ok"] += 1
        except RuleError as exc:
            outcomes["rules errors"] += 1
            unlocated = [str(p) for p in exc.problems if p.line < 1]
            assert not unlocated, f"problems without a line: {unlocated}"

    prop(report, f"gateway.yaml mutations: loaded or ConfigError, every problem located ({EXAMPLES})", config)
    prop(report, f"rule file mutations: loaded or RuleError, every problem located ({EXAMPLES})", rules)
    report.fact(f"loader outcomes: {outcomes}")
