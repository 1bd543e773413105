"""Helpers for the source tests: a sample collector that can wait for a condition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.core.ports import Source
from gateway.core.samples import Quality, Sample

SAFETY_TIMEOUT_S = 20.0  # only a guard against a hung test; no assertion depends on it


class Collector:
    """The emit() callback of a source under test, remembering every sample."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._changed = asyncio.Event()

    def __call__(self, sample: Sample) -> None:
        self.samples.append(sample)
        self._changed.set()

    def of(self, signal: str) -> list[Sample]:
        return [s for s in self.samples if s.signal == signal]

    def last(self, signal: str) -> Sample | None:
        found = self.of(signal)
        return found[-1] if found else None

    def good(self, signal: str) -> list[Sample]:
        return [s for s in self.of(signal) if s.quality is Quality.GOOD]

    async def wait_for(self, predicate: Callable[[], bool], what: str = "condition") -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), SAFETY_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"never happened: {what}; last samples: {self.samples[-5:]}") from None


@contextlib.asynccontextmanager
async def running(source: Source, collector: Collector) -> AsyncIterator[asyncio.Task[None]]:
    """Run a source in the background; cancel it on exit and check it did not die on its own."""
    task = asyncio.create_task(source.run(collector))
    try:
        yield task
        assert not task.done(), f"the source stopped by itself: {task.exception() if task.done() else ''}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def collector() -> Collector:
    return Collector()


async def until(predicate: Callable[[], bool], what: str = "condition", step_s: float = 0.01) -> None:
    """Wait for a condition that no sample announces (a counter, a log line), checking every step_s."""
    for _ in range(int(SAFETY_TIMEOUT_S / step_s)):
        if predicate():
            return
        await asyncio.sleep(step_s)
    raise AssertionError(f"never happened: {what}")
