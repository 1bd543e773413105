"""Heartbeats and status summaries in the `<name>_status` bucket, and the fleet table built from them.

Each gateway puts one JSON document under its own key every `fleet.heartbeat` seconds:
`{"gateway", "at", "sources_up", "sources_down", "outbox_depth", "dead_letters", "quota_used", "quota_month",
"state"}`. `mw-gateway fleet` and the relay's status page read every key and show the age of each entry
(now − at): a gateway whose entry is older than three heartbeats is shown as `stale`.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.fleet import names
from gateway.web.read_json import BadRequest, parse_json_object

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

COLUMNS = ("gateway", "age", "state", "sources", "outbox", "dead", "quota")
STALE_AFTER_HEARTBEATS = 3


def summary_row(doc: dict[str, Any], *, now: float, heartbeat: float) -> dict[str, Any]:
    at = doc.get("at")
    age = max(0.0, now - at) if isinstance(at, int | float) else None
    stale = age is None or age > STALE_AFTER_HEARTBEATS * float(doc.get("heartbeat") or heartbeat)
    return {**doc, "age_s": None if age is None else round(age, 1), "stale": stale}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _cells(row: dict[str, Any]) -> list[str]:
    up, down = row.get("sources_up", 0), row.get("sources_down", 0)
    quota = f"{row.get('quota_used', '?')}/{row.get('quota_limit') or '-'}"
    return [
        str(row.get("gateway", "?")),
        _age(row.get("age_s")),
        "stale" if row.get("stale") else str(row.get("state", "?")),
        f"{up} up, {down} down",
        str(row.get("outbox_depth", "?")),
        str(row.get("dead_letters", "?")),
        quota,
    ]


def render_table(rows: list[dict[str, Any]]) -> str:
    header = [c.upper() for c in COLUMNS]
    body = [_cells(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]
    ]
    return "\n".join(lines) + "\n"


def render_html(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join(
        "<tr"
        + (' class="stale"' if r.get("stale") else "")
        + ">"
        + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


async def read_fleet(
    kv: KeyValue, *, now: float | None = None, heartbeat: float = 15.0
) -> list[dict[str, Any]]:
    """Every gateway's latest status entry, sorted by name. Unreadable entries are shown, not skipped."""
    from nats.js.errors import KeyNotFoundError, NoKeysError

    now = time.time() if now is None else now
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    rows = []
    for key in sorted(keys):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        try:
            doc = parse_json_object(entry.value or b"")
        except BadRequest:  # not a JSON object (or absurdly nested)
            doc = {"gateway": key, "state": "unreadable"}
        doc.setdefault("gateway", key)
        rows.append(summary_row(doc, now=now, heartbeat=heartbeat))
    return rows


class Heartbeat:
    """Puts `summary()` under this gateway's key every `interval` seconds while NATS is reachable."""

    def __init__(
        self,
        kv: KeyValue,
        gateway: str,
        summary: Callable[[], Awaitable[dict[str, Any]]],
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.gateway = gateway
        self.key = names.token(gateway)
        self.summary = summary
        self.interval = interval
        self.clock = clock
        self.sent = 0

    async def beat(self) -> None:
        doc = {
            **(await self.summary()),
            "gateway": self.gateway,
            "at": self.clock(),
            "heartbeat": self.interval,
        }
        await self.kv.put(self.key, json.dumps(doc, separators=(",", ":")).encode())
        self.sent += 1

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: the next beat tries again
                log.debug("fleet heartbeat not sent: %s", exc)
            await asyncio.sleep(self.interval)
