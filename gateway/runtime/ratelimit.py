"""The request rate limit toward the CMMS: at most `rate()` requests per second leave.

Two phases per attempt: `slot()` waits for a turn before the row is claimed (a row waiting here is not "in
flight"), then `send_turn()` right before the request leaves, one request at a time, measured on the real
send times (the claim's fsync and the event loop's wake-ups must not bunch requests). Real monotonic time:
this is about spacing requests on the wire, not about the gateway's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: Callable[[], float]) -> None:
        self._rate = rate  # late-bound: a reload that changes dispatcher.rate_limit is seen at once
        self._last_slot = 0.0
        self._last_sent = 0.0
        self._send_lock = asyncio.Lock()

    def _spacing(self) -> float:
        return 1.0 / self._rate()

    async def slot(self) -> None:
        now = time.monotonic()
        slot = max(now, self._last_slot + self._spacing())
        self._last_slot = slot
        if slot > now:
            await asyncio.sleep(slot - now)

    async def send_turn(self) -> None:
        async with self._send_lock:
            wait = self._last_sent + self._spacing() - time.monotonic()
            while wait > 0:
                await asyncio.sleep(wait)
                wait = self._last_sent + self._spacing() - time.monotonic()
            self._last_sent = time.monotonic()
