"""Log on state change: one line when a condition changes, DEBUG while it stays the same.

    settings = StateLog(log, "Mobility Work network settings")
    settings.change("unknown", logging.WARNING, "unreachable (%s); tasks will be queued", error)  # logged
    settings.change("unknown", logging.WARNING, "unreachable (%s); tasks will be queued", error)  # DEBUG
    settings.change("known", logging.INFO, "timezone %s", tz)                                     # logged

A long outage is one WARNING and one INFO, not one line per attempt. The state before any change is
`initial` (None by default). One copy for every "say it once" in the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any


class StateLog:
    def __init__(self, logger: logging.Logger, what: str, *, initial: Hashable = None) -> None:
        self._log = logger
        self.what = what
        self.state: Hashable = initial

    def change(self, state: Hashable, level: int, message: str, *args: Any) -> bool:
        """Record `state`; log `what: message % args` at `level` when it differs from the last one, at DEBUG
        otherwise. True when it changed."""
        changed = state != self.state
        self.state = state
        self._log.log(level if changed else logging.DEBUG, "%s: " + message, self.what, *args)
        return changed

    def quiet(self, state: Hashable) -> bool:
        """Record `state` without logging (e.g. the normal state reached the normal way); True if changed."""
        changed = state != self.state
        self.state = state
        return changed
