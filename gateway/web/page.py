"""GET /: the status page. Server-rendered HTML from `collect_status`, refreshed by the browser every few
seconds (`<meta http-equiv="refresh">`), no JavaScript. Jinja2 with autoescape: every value from a device, a
rule or a webhook is escaped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape

from gateway.core.units import human_bytes

TEMPLATES = Path(__file__).parent / "templates"
REFRESH_S = 5

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _missing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


def fmt_number(value: Any) -> str:
    """37212 -> "37,212"; 12.345 -> "12.35"; anything else as text."""
    if _missing(value):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.2f}"
    return str(value)


def fmt_age(seconds: Any) -> str:
    if _missing(seconds):
        return "never"
    s = float(seconds)
    if s < 0:
        return "in the future"
    if s < 60:
        return f"{s:.1f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def fmt_duration(seconds: float) -> str:
    s = abs(seconds)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


class _Fmt:
    """Formatting bound to the gateway's timezone and the status's `now`."""

    def __init__(self, timezone: str, now: float) -> None:
        self.tz = ZoneInfo(timezone) if timezone and timezone != "UTC" else UTC
        self.now = now

    def time(self, ts: Any) -> str:
        if _missing(ts):
            return "—"
        moment = datetime.fromtimestamp(float(ts), tz=self.tz)
        today = datetime.fromtimestamp(self.now, tz=self.tz).date()
        fmt = "%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M"
        return moment.strftime(fmt)

    def relative(self, ts: Any) -> str:
        if _missing(ts):
            return "—"
        delta = float(ts) - self.now
        when = self.time(ts)
        return f"{when} (in {fmt_duration(delta)})" if delta >= 0 else f"{when} ({fmt_duration(delta)} ago)"

    def rule(self, rule: dict[str, Any]) -> str:
        """One line for the rule's state: pending since, cooldown until, suppressed by, progress."""
        parts: list[str] = []
        state = rule.get("state")
        if rule.get("since") is not None:
            parts.append(f"{state} since {self.relative(rule['since'])}")
        if (
            rule.get("fires_at") is not None
            and state in ("pending", "idle")
            and rule.get("trigger") != "counter"
        ):
            parts.append(f"fires at {self.relative(rule['fires_at'])}")
        if rule.get("silent_for") is not None:
            parts.append(f"no good sample for {fmt_duration(float(rule['silent_for']))}")
        if rule.get("until") is not None:
            parts.append(f"cooldown until {self.relative(rule['until'])}")
        if rule.get("suppressed_by"):
            parts.append(
                f"last firing suppressed: the task of firing {str(rule['suppressed_by'])[:8]} is still open"
            )
        progress = rule.get("progress")
        if isinstance(progress, dict):
            parts.append(progress_text(progress))
        forecast = rule.get("forecast")
        if isinstance(forecast, dict) and forecast.get("text"):
            parts.append(f"next: {forecast['text']}")
        if rule.get("swallowed_by_cooldown"):
            parts.append(f"{rule['swallowed_by_cooldown']} occurrences swallowed by the cooldown")
        return "; ".join(parts)


def progress_text(progress: dict[str, Any]) -> str:
    """{"current": 37212, "next": 50000, "unit": "strokes"} -> "37,212 / 50,000 strokes"."""
    value = progress.get("current", progress.get("value"))
    target = progress.get("next", progress.get("target", progress.get("threshold")))
    unit = progress.get("unit") or ""
    text = f"{fmt_number(value)} / {fmt_number(target)}"
    return f"{text} {unit}".rstrip()


def progress_ratio(progress: Any) -> float | None:
    if not isinstance(progress, dict):
        return None
    value = progress.get("current", progress.get("value"))
    target = progress.get("next", progress.get("target", progress.get("threshold")))
    every = progress.get("every")
    start = float(target) - float(every) if target is not None and every else 0.0
    if value is None or target is None:
        return None
    try:
        span = float(target) - float(start)
        return max(0.0, min(1.0, (float(value) - float(start)) / span)) if span > 0 else None
    except (TypeError, ValueError):
        return None


def render_status_page(
    status: dict[str, Any], *, refresh_s: int = REFRESH_S, csrf_token: str | None = None
) -> str:
    """`csrf_token`: show the approve/reject buttons with this token (only when http.auth_* is set)."""
    gateway = status["gateway"]
    fmt = _Fmt(gateway.get("timezone") or "UTC", float(status.get("now") or 0.0))
    template = _env.get_template("status.html")
    return template.render(
        s=status,
        fmt=fmt,
        refresh_s=refresh_s,
        csrf_token=csrf_token,
        number=fmt_number,
        age=fmt_age,
        human_bytes=human_bytes,
        duration=fmt_duration,
        progress_ratio=progress_ratio,
        as_json=lambda v: json.dumps(v, ensure_ascii=False, default=str),
    )
