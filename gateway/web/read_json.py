"""Tolerant readers of webhook JSON: each returns None (or {}) for anything unexpected, never raises."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any


class BadRequest(Exception):
    """Answer 400 with this message."""


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def timestamp(value: Any) -> float | None:
    """ISO 8601 (the documents' `2021-11-02T16:32:38+00:00`, or with Z) to Unix seconds; naive means UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def person(value: Any) -> str | None:
    data = obj(value)
    name = " ".join(p for p in (text(data.get("firstName")), text(data.get("lastName"))) if p)
    return name or text(data.get("userId")) or text(data.get("id")) or text(data.get("email"))


def parse_json_object(body: bytes) -> dict[str, Any]:
    def _reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def canonical_hash(data: Any) -> str:
    try:
        encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError):
        encoded = repr(data)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()
