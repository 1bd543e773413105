"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands on fd 3,
answers and events on fd 4, each JSON message ended by a NUL byte), for tests that click in a page. No
package beyond the chromium binary the status-page test already uses."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # as in tests/web/test_page.py
TIMEOUT_S = 60.0


class Page:
    def __init__(self, reader: asyncio.StreamReader, write_fd: int) -> None:
        self._reader = reader
        self._write_fd = write_fd
        self._next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        while True:
            answer = await self._read()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    async def wait_event(self, method: str) -> dict[str, Any]:
        """The next event `method` (earlier ones already received are consumed first)."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(await self._read())

    async def navigate(self, url: str) -> None:
        self.events.clear()
        await self.call("Page.navigate", {"url": url})
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    async def _read(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self._reader.readuntil(b"\0"), timeout=TIMEOUT_S)
        message: dict[str, Any] = json.loads(raw[:-1])
        return message


def _high(fd: int) -> int:
    """A copy of `fd` numbered 10 or more, so that the child's dup2 to 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


@contextlib.asynccontextmanager
async def chromium_page(tmp_path: Path, *, headers: dict[str, str] | None = None) -> AsyncIterator[Page]:
    to_r, to_w = (_high(fd) for fd in os.pipe())
    from_r, from_w = (_high(fd) for fd in os.pipe())

    def child_fds() -> None:
        os.dup2(to_r, 3)
        os.dup2(from_w, 4)

    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--remote-debugging-pipe",
        f"--user-data-dir={tmp_path / 'chromium-cdp-profile'}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=child_fds,
        pass_fds=(3, 4),
    )
    os.close(to_r)
    os.close(from_w)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(from_r, "rb", buffering=0)
    )
    page = Page(reader, to_w)
    try:
        target = await page.call("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = await page.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        page.session = attached["sessionId"]
        await page.call("Page.enable")
        await page.call("Network.enable")
        if headers:
            await page.call("Network.setExtraHTTPHeaders", {"headers": headers})
        yield page
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(page.call("Browser.close", browser=True), timeout=5)
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        transport.close()
        os.close(to_w)
