"""Logging setup: text, logfmt or JSON lines, and a filter that removes every configured secret."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TextIO

_REDACTED = "***"


class RedactSecrets(logging.Filter):
    """Replaces every known secret in a record's final message (args included) and exception text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = self.redact(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage()
        if record.exc_text or record.exc_info:
            msg += " | " + (record.exc_text or self.formatException(record.exc_info)).replace("\n", " | ")  # type: ignore[arg-type]
        quoted = json.dumps(msg, ensure_ascii=False)
        return f"ts={ts}Z level={record.levelname.lower()} logger={record.name} msg={quoted}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text or record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(out, ensure_ascii=False)


_redactor = RedactSecrets()


def setup_logging(
    *, fmt: str = "text", level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> RedactSecrets:
    """Configure the root logger once; later calls update the format, level and secrets."""
    _redactor.update(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "logfmt":
        handler.setFormatter(LogfmtFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(_redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that are chatty at INFO: their link changes are reported by our sources instead.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Protocol libraries log every failed retry, often at ERROR with a traceback; our sources say once that a
    # link is down and once that it is back. Their warnings and errors show only at level DEBUG.
    for protocol in ("asyncua", "pymodbus", "paho", "aiomqtt"):
        logging.getLogger(protocol).setLevel(logging.WARNING if level == "DEBUG" else logging.CRITICAL)
    return _redactor
