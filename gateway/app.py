"""Wiring and lifecycle: sources -> engine -> store -> dispatcher, the HTTP server, signals, systemd.

The Gateway object owns every running part. `run_gateway(config_path)` is what `mw-gateway run` calls.
SIGHUP (and a change in the rules folder) reloads: the new config and rules are validated whole first, and if
anything is wrong the running ones stay. SIGTERM/SIGINT drain: sources stop, the engine's state and any firing
in flight are committed, the dispatcher finishes its current attempt, then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.cmms.registry import build_backend
from gateway.config import Config, load_config
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem
from gateway.core.errors import BackendError, ProblemsError
from gateway.core.firings import Firing
from gateway.core.ports import Backend, Source
from gateway.core.samples import Quality, Sample
from gateway.dispatcher import Dispatcher
from gateway.engine.advice import while_open_advice
from gateway.engine.engine import Engine
from gateway.engine.loader import RuleSet, load_rules
from gateway.logs import setup_logging
from gateway.retention import Housekeeping
from gateway.store import Store
from gateway.systemd import notify, watchdog_interval_s

log = logging.getLogger(__name__)

STATE_SAVE_INTERVAL_S = 60.0  # rule state without a firing is saved this often (SD-card wear)
TICK_INTERVAL_S = 1.0
RULES_WATCH_INTERVAL_S = 2.0
SAMPLE_QUEUE_SIZE = 100_000
STORE_RETRY_S = 5.0  # a failed firing commit (disk full) is retried this often until it succeeds


def known_signals(config: Config) -> set[str]:
    """Signal names rules may use: every configured signal, plus CMMS stock signals."""
    return {*config.signal_names(), "cmms.stock.*"}


def load_all(config_path: Path) -> tuple[Config, RuleSet]:
    """Load gateway.yaml and every rule file; raise ProblemsError with every problem of both."""
    config = load_config(config_path)
    rules = load_rules(config.rules_dir, known_signals=known_signals(config))
    return config, rules


def _rules_fingerprint(rules_dir: Path) -> tuple[tuple[str, float, int], ...]:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime, p.stat().st_size) for p in rules_dir.glob("*.yaml")))
    except OSError:
        return ()


@dataclass
class Gateway:
    config: Config
    rules: RuleSet
    clock: Clock = field(default_factory=SystemClock)
    backend_transport: Any = None  # an httpx transport for tests; None in production

    store: Store = field(init=False)
    engine: Engine = field(init=False)
    backend: Backend = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    network: NetworkInfo = field(init=False, default_factory=NetworkInfo)
    sources: dict[str, Source] = field(init=False, default_factory=dict)
    started_at: float = field(init=False, default=0.0)
    samples_in: int = field(init=False, default=0)
    firings_out: int = field(init=False, default=0)
    last_reload: dict[str, Any] = field(init=False, default_factory=dict)
    listeners: list[Callable[[str, Any], None]] = field(init=False, default_factory=list)

    _queue: asyncio.Queue[Sample] = field(init=False)
    _tasks: list[asyncio.Task[Any]] = field(init=False, default_factory=list)
    _source_tasks: dict[str, asyncio.Task[Any]] = field(init=False, default_factory=dict)
    _stopping: asyncio.Event = field(init=False)
    _reload_requested: asyncio.Event = field(init=False)
    _http_server: Any = field(init=False, default=None)
    housekeeping: Any = field(init=False, default=None)  # gateway.retention.Housekeeping: disk check, pruning

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        self.started_at = self.clock.now()
        self._queue = asyncio.Queue(maxsize=SAMPLE_QUEUE_SIZE)
        self._stopping = asyncio.Event()
        self._reload_requested = asyncio.Event()
        cfg = self.config
        self.store = await Store.open(cfg.state_dir, gateway_id=cfg.gateway.id, clock=self.clock)
        self.housekeeping = Housekeeping(self)
        self.engine = Engine(self.rules, gateway_id=cfg.gateway.id, state=await self.store.rules.load())
        self.backend = build_backend(
            cfg.cmms,
            gateway_id=cfg.gateway.id,
            timezone=cfg.gateway.timezone,
            clock=self.clock,
            transport=self.backend_transport,
        )
        self.network = await self._start_backend(self.backend)
        self.dispatcher = Dispatcher(
            self.store,
            self.backend,
            settings=cfg.dispatcher,
            quota=cfg.cmms.quota,
            timezone=self.timezone,
            clock=self.clock,
            on_delivery=self._delivered,
        )
        self._start_sources()
        self._tasks += [
            asyncio.create_task(self._consume(), name="engine"),
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self._periodic(), name="periodic"),
        ]
        await self._start_http()
        log.info(
            "mw-gateway %s started: gateway %s, %d sources, %d rules, CMMS %s, state %s",
            __version__,
            cfg.gateway.id,
            len(self.sources),
            len(self.rules.rules),
            cfg.cmms.kind,
            self.store.path,
        )
        for warning in while_open_advice(
            self.rules,
            webhooks=cfg.http.webhook_secret is not None or cfg.http.servicemobility_jwt_key is not None,
        ):
            log.warning("%s", warning.removeprefix("warning: "))
        notify("READY=1\nSTATUS=running")

    @property
    def timezone(self) -> str:
        return self.config.gateway.timezone or self.network.timezone or "UTC"

    async def _start_backend(self, backend: Backend) -> NetworkInfo:
        try:
            info = await backend.start()
        except BackendError as exc:
            # Reported clearly; the gateway still runs and queues, the dispatcher will pause on the first 401.
            log.error("CMMS %s: %s", backend.kind, exc)
            return NetworkInfo()
        if info.timezone:
            log.info(
                "CMMS network %s (timezone %s, currency %s)",
                info.name or info.network_id or "?",
                info.timezone,
                info.currency or "?",
            )
        return info

    def _start_sources(self) -> None:
        from gateway.sources.registry import build_source

        for name, src_cfg in self.config.sources.items():
            source = build_source(
                name,
                src_cfg,
                clock=self.clock,
                state_dir=self.config.state_dir,
                gateway_id=self.config.gateway.id,
            )
            self.sources[name] = source
            self._source_tasks[name] = asyncio.create_task(self._supervise(source), name=f"source:{name}")

    async def _supervise(self, source: Source) -> None:
        """A source must never die for a device problem; if its code fails anyway, restart it."""
        while True:
            try:
                await source.run(self.submit)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("source %s failed unexpectedly; restarting it in 5 s", source.name)
                await asyncio.sleep(5)

    async def _start_http(self) -> None:
        import uvicorn

        from gateway.web.server import build_app

        http = self.config.http
        app = build_app(self)
        ssl: dict[str, Any] = {}
        if http.tls_certificate and http.tls_key:
            ssl = {"ssl_certfile": http.tls_certificate, "ssl_keyfile": http.tls_key}
        server_config = uvicorn.Config(
            app, host=http.host, port=http.port, log_config=None, access_log=False, lifespan="off", **ssl
        )
        self._http_server = uvicorn.Server(server_config)
        self._http_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._tasks.append(asyncio.create_task(self._http_server.serve(), name="http"))
        for _ in range(200):
            if self._http_server.started:
                break
            await asyncio.sleep(0.01)
        log.info(
            "HTTP on %s://%s (status page, /metrics, /healthz, webhooks)",
            "https" if ssl else "http",
            http.listen,
        )

    # ------------------------------------------------------------------ the sample path

    def submit(self, sample: Sample) -> None:
        """Called by sources (and by the webhook side for cmms.stock.* signals)."""
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            log.warning("sample queue full (%d): dropping a sample of %s", SAMPLE_QUEUE_SIZE, sample.signal)

    async def _consume(self) -> None:
        while True:
            sample = await self._queue.get()
            batch = [sample]
            while not self._queue.empty() and len(batch) < 1000:
                batch.append(self._queue.get_nowait())
            firings = self.engine.process_batch(batch, self.clock.now(), self.clock.monotonic())
            self.samples_in += len(batch)
            if firings:
                await self.commit_firings(firings)

    async def commit_firings(self, firings: list[Firing]) -> None:
        """Firings and the rule state that produced them, in one transaction; then wake the dispatcher."""
        states = self.engine.take_dirty_state()
        while True:
            try:
                results = await self.store.outbox.record_firings(firings, rule_states=states)
                break
            except sqlite3.Error as exc:  # disk full or read-only: keep the firings, report, try again
                self.housekeeping.store_failed(exc, doing="recording firings")
                await asyncio.sleep(STORE_RETRY_S)
        self.housekeeping.store_ok()
        for firing, result in zip(firings, results, strict=True):
            self.firings_out += 1
            log.info(
                "rule %s fired (%s): %s -> %s%s",
                firing.rule_id,
                firing.key,
                firing.task.description[:80],
                result.status.value,
                f" (task of firing {result.suppressed_by} still open)" if result.suppressed_by else "",
            )
            for listener in self.listeners:
                listener("firing", (firing, result))
        self.dispatcher.wake()

    def _delivered(self, item: OutboxItem, delivery: Delivery) -> None:
        for listener in self.listeners:
            listener("delivery", (item, delivery))

    async def _periodic(self) -> None:
        last_save = time.monotonic()
        fingerprint = _rules_fingerprint(self.config.rules_dir)
        last_watch = time.monotonic()
        watchdog = watchdog_interval_s()
        last_watchdog = 0.0
        while True:
            await asyncio.sleep(TICK_INTERVAL_S if watchdog is None else min(TICK_INTERVAL_S, watchdog))
            mono = time.monotonic()
            await self.housekeeping.tick(mono)
            firings = self.engine.tick(self.clock.now(), self.clock.monotonic())
            if firings:
                await self.commit_firings(firings)
            if mono - last_save >= STATE_SAVE_INTERVAL_S:
                await self.save_state()
                last_save = mono
            if mono - last_watch >= RULES_WATCH_INTERVAL_S:
                last_watch = mono
                current = _rules_fingerprint(self.config.rules_dir)
                if current != fingerprint:
                    fingerprint = current
                    log.info("rules folder changed: reloading")
                    await self.reload()
            if watchdog is not None and mono - last_watchdog >= watchdog:
                # This runs on the event loop: if the loop is stuck, no WATCHDOG=1 and systemd restarts us.
                notify("WATCHDOG=1")
                last_watchdog = mono

    async def save_state(self) -> None:
        dirty = self.engine.take_dirty_state()
        if dirty:
            try:
                await self.store.rules.save(dirty)
            except sqlite3.Error as exc:  # disk full or read-only: saved again with the next change
                self.housekeeping.store_failed(exc, doing="saving rule state")
                return
            self.housekeeping.store_ok()

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """Reload gateway.yaml and the rules. On any problem, keep everything running as it is."""
        now = self.clock.now()
        try:
            config, rules = load_all(self.config.path)
        except ProblemsError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused (%d problems): the previous rules keep running", len(exc.problems))
            self.last_reload = {"at": now, "ok": False, "problems": [str(p) for p in exc.problems]}
            return False
        self.engine.reload(rules)
        self.rules = rules
        if config.cmms != self.config.cmms:
            old = self.backend
            self.backend = build_backend(
                config.cmms,
                gateway_id=config.gateway.id,
                timezone=config.gateway.timezone,
                clock=self.clock,
                transport=self.backend_transport,
            )
            self.network = await self._start_backend(self.backend)
            self.dispatcher.set_backend(self.backend, quota=config.cmms.quota)
            await old.aclose()
        if config.sources != self.config.sources:
            for task in self._source_tasks.values():
                task.cancel()
            await asyncio.gather(*self._source_tasks.values(), return_exceptions=True)
            self.sources.clear()
            self._source_tasks.clear()
            self.config = config
            self._start_sources()
        self.config = config
        self.dispatcher.settings = config.dispatcher
        self.dispatcher.resume()
        setup_logging(fmt=config.logging.format, level=config.logging.level, secrets=config.secrets())
        self.last_reload = {"at": now, "ok": True, "problems": []}
        log.info("reloaded: %d rules, %d sources", len(rules.rules), len(self.sources))
        return True

    def request_reload(self) -> None:
        self._reload_requested.set()

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait(self) -> None:
        """Run until asked to stop; serve reload requests meanwhile."""
        while not self._stopping.is_set():
            stop = asyncio.create_task(self._stopping.wait())
            reload = asyncio.create_task(self._reload_requested.wait())
            done, pending = await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if reload in done and not self._stopping.is_set():
                self._reload_requested.clear()
                notify("RELOADING=1")
                await self.reload()
                notify("READY=1")
            failed = [t for t in self._tasks if t.done() and not t.cancelled() and t.exception()]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]

    async def stop(self) -> None:
        notify("STOPPING=1")
        log.info("stopping: draining")
        for task in self._source_tasks.values():
            task.cancel()
        await asyncio.gather(*self._source_tasks.values(), return_exceptions=True)
        # Give the engine the samples already queued, then commit its state.
        with contextlib.suppress(Exception):
            firings: list[Firing] = []
            while not self._queue.empty():
                firings.extend(
                    self.engine.process(self._queue.get_nowait(), self.clock.now(), self.clock.monotonic())
                )
            if firings:
                await self.commit_firings(firings)
            await self.save_state()
        if self._http_server is not None:
            self._http_server.should_exit = True
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.backend.aclose()
        await self.store.close()
        log.info("stopped")


def bad_sample(signal_name: str, ts: float, reason: str) -> Sample:
    return Sample(signal=signal_name, value=None, ts=ts, quality=Quality.BAD, reason=reason)


async def serve(gateway: Gateway, *, until: Awaitable[Any] | None = None) -> None:
    """Start, install signal handlers, run until SIGTERM/SIGINT (or `until` completes), then drain."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig, handler in (
        (signal.SIGTERM, gateway.request_stop),
        (signal.SIGINT, gateway.request_stop),
        (signal.SIGHUP, gateway.request_reload),
    ):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    await gateway.start()
    watcher = None
    if until is not None:

        async def _until() -> None:
            await until
            gateway.request_stop()

        watcher = asyncio.ensure_future(_until())
    try:
        await gateway.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await gateway.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_gateway(config_path: Path) -> int:
    """`mw-gateway run`: validate everything first, then serve."""
    try:
        config, rules = load_all(config_path)
    except ProblemsError as exc:
        setup_logging()
        for problem in exc.problems:
            log.error("%s", problem)
        count = len(exc.problems)
        log.error(
            "not starting: %d problem%s (run `mw-gateway check -c %s`)",
            count,
            "" if count == 1 else "s",
            config_path,
        )
        return 1
    setup_logging(fmt=config.logging.format, level=config.logging.level, secrets=config.secrets())
    gateway = Gateway(config, rules)
    try:
        asyncio.run(serve(gateway))
    except KeyboardInterrupt:
        pass
    return 0
