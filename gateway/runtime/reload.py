"""Loading and reloading: gateway.yaml and the rules validated whole; the rules-folder watch; the reload diff.

`load_all(path)` raises ProblemsError with every problem of both files; nothing is swapped unless all of it
is valid. `diff(old, new)` says which running parts a new config replaces (the lifecycle applies it).
`watch_rules(dir, reload)` polls the rules folder every RULES_WATCH_INTERVAL_S and calls `reload()` when a
rule file was added, removed or changed (by name, mtime and size: no inotify dependency, and it works on the
SD card's filesystem and on a bind mount alike).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, load_config
from gateway.engine.loader import RuleSet, load_rules

log = logging.getLogger(__name__)

RULES_WATCH_INTERVAL_S = 2.0


def known_signals(config: Config) -> set[str]:
    """Signal names rules may use: every configured signal, plus CMMS stock signals."""
    return {*config.signal_names(), "cmms.stock.*"}


def poll_intervals(config: Config) -> dict[str, float]:
    """Per source that polls (`poll:`), its interval: windows shorter than it are reported by `check`."""
    out: dict[str, float] = {}
    for name, source in config.sources.items():
        poll = getattr(source, "poll", None)
        if isinstance(poll, int | float) and not isinstance(poll, bool):
            out[name] = float(poll)
    return out


def load_all(config_path: Path) -> tuple[Config, RuleSet]:
    """Load gateway.yaml and every rule file; raise ProblemsError with every problem of both."""
    config = load_config(config_path)
    rules = load_rules(
        config.rules_dir, known_signals=known_signals(config), poll_intervals=poll_intervals(config)
    )
    return config, rules


@dataclass(frozen=True, slots=True)
class ReloadDiff:
    """Which running parts a new config replaces."""

    backend: bool  # the `cmms:` section changed: a new backend, started, handed to the dispatcher
    sources: bool  # the `sources:` section changed: every source restarted


# http.* settings read once, when the listening socket is opened: a reload cannot apply them. Every other
# http.* setting (webhook secrets, tolerance, template, body cap, JWT key and claims, auth) is read per
# request (gateway/web/server.py) and applies at once.
HTTP_RESTART_ONLY = ("listen", "tls_certificate", "tls_key")


def needs_restart(old: Config, new: Config) -> list[str]:
    """Why `new` cannot be applied by a reload (empty: it can). One line per setting, naming old and new."""
    out = []
    for name in HTTP_RESTART_ONLY:
        before, after = getattr(old.http, name), getattr(new.http, name)
        if before != after:
            out.append(
                f"http.{name} changed ({before} -> {after}): it takes effect only when the listening socket"
                " is opened; restart the service (systemctl restart mw-gateway)"
            )
    return out


def diff(old: Config, new: Config) -> ReloadDiff:
    return ReloadDiff(backend=new.cmms != old.cmms, sources=new.sources != old.sources)


def rules_fingerprint(rules_dir: Path) -> tuple[tuple[str, float, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime, p.stat().st_size) for p in rules_dir.glob("*.yaml")))
    except OSError:
        return ()


async def watch_rules(
    rules_dir: Callable[[], Path],
    reload: Callable[[], Awaitable[Any]],
    *,
    interval_s: float = RULES_WATCH_INTERVAL_S,
    beat: Callable[[], None] = lambda: None,
) -> None:
    """Forever: reload when the rules folder (asked each time: a reload may move it) changes."""
    folder = rules_dir()
    fingerprint = rules_fingerprint(folder)
    while True:
        await asyncio.sleep(interval_s)
        beat()
        if rules_dir() != folder:
            folder = rules_dir()
            fingerprint = rules_fingerprint(folder)
            continue
        current = rules_fingerprint(folder)
        if current != fingerprint:
            fingerprint = current
            log.info("rules folder changed: reloading")
            await reload()
