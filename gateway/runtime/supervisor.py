"""Every long-running task of the gateway is started here, by name, and watched.

    sup = Supervisor()
    sup.start("engine", pipeline.run)                     # critical: its death stops the gateway
    sup.start("source:press1", run_source, restart=True)  # restarted with backoff
    sup.beat("engine")                                    # the task says it made progress

What happens when a task dies unexpectedly (an exception, or a return while the gateway is not stopping):

- critical tasks (the engine consumer, the dispatcher, the periodic/housekeeping task, the HTTP server, the
  rules watch): logged ONCE at ERROR with the traceback, recorded in `failed` (so /healthz turns 503 naming
  the task), and `failure` is set: `Gateway.wait()` returns at once, the gateway drains what it can and the
  process exits non-zero so systemd restarts it. Restarting these in place is not safe: the engine consumer
  may have died between taking samples and committing them, the dispatcher between claiming a row and
  recording the answer, and only a fresh process runs the recovery that makes such states consistent.
- sources (`restart=True`): restarted with backoff (1 s doubling to 60 s), each failure logged with its
  traceback. That is safe: a source holds no state the rest of the gateway depends on (its samples are
  values at a time; a reconnect is what a source does anyway), and one broken device driver must not stop
  the rules of every other machine.

Heartbeats: `beat(name)` records the monotonic time of a task's last progress; `stalled(names, after_s)` says
which of them made none for `after_s`. The systemd watchdog is fed only while the engine, the dispatcher and
the HTTP server all beat (gateway/runtime/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.core.backoff import Backoff

log = logging.getLogger(__name__)

RESTART_INITIAL_S = 1.0
RESTART_MAX_S = 60.0


class Supervisor:
    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.failed: dict[str, str] = {}  # task name -> "ExceptionType: message"
        self.heartbeats: dict[str, float] = {}
        self.failure = asyncio.Event()  # set when a critical task died
        self.stopping = False
        self._monotonic = monotonic

    def start(
        self,
        name: str,
        run: Callable[[], Awaitable[Any]],
        *,
        restart: bool = False,
        backoff: Backoff | None = None,
    ) -> asyncio.Task[None]:
        """Start `run()` as the task `name`. restart=True: restarted with backoff when it fails."""
        if name in self.tasks and not self.tasks[name].done():
            raise RuntimeError(f"task {name} is already running")
        self.heartbeats[name] = self._monotonic()
        if restart:
            delays = backoff or Backoff(initial_s=RESTART_INITIAL_S, max_s=RESTART_MAX_S)
            task = asyncio.create_task(self._restarting(name, run, delays), name=name)
        else:
            task = asyncio.create_task(self._critical(name, run), name=name)
        self.tasks[name] = task
        return task

    def beat(self, name: str) -> None:
        self.heartbeats[name] = self._monotonic()

    def stalled(self, names: Iterable[str], *, after_s: float) -> list[str]:
        """The tasks among `names` (that were started) whose last beat is older than `after_s`."""
        now = self._monotonic()
        return [n for n in names if n in self.heartbeats and now - self.heartbeats[n] > after_s]

    async def _critical(self, name: str, run: Callable[[], Awaitable[Any]]) -> None:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._died(name, exc)
            return
        if not self.stopping:
            self._died(name, None)

    async def _restarting(self, name: str, run: Callable[[], Awaitable[Any]], delays: Backoff) -> None:
        while True:
            started = self._monotonic()
            try:
                await run()
                return  # a source returns only when it was asked to stop
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._monotonic() - started >= RESTART_MAX_S:
                    delays.reset()  # it ran a good while: a new failure starts the backoff again
                delay = delays.next()
                log.exception("task %s failed unexpectedly; restarting it in %.0f s", name, delay)
                await asyncio.sleep(delay)

    def _died(self, name: str, exc: BaseException | None) -> None:
        if exc is None:
            reason = "ended unexpectedly"
            log.error("task %s ended unexpectedly: stopping the gateway (systemd restarts it)", name)
        else:
            reason = f"{type(exc).__name__}: {exc}"
            text = "".join(traceback.format_exception(exc))
            log.error("task %s died: stopping the gateway (systemd restarts it)\n%s", name, text.rstrip())
        self.failed[name] = reason
        self.failure.set()

    async def cancel(self, names: Iterable[str]) -> None:
        """Cancel these tasks and wait for them to end."""
        tasks = [self.tasks.pop(n) for n in list(names) if n in self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            self.heartbeats.pop(task.get_name(), None)

    async def wait_for(self, names: Iterable[str]) -> None:
        """Wait for these tasks to end by themselves (e.g. the HTTP server after should_exit)."""
        tasks = [self.tasks.pop(n) for n in list(names) if n in self.tasks]
        await asyncio.gather(*tasks, return_exceptions=True)

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.tasks if n.startswith(prefix)]
