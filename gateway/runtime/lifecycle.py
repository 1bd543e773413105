"""The Gateway: start, run, reload, stop; signals and systemd. `run_gateway(path)` is `mw-gateway run`.

Parts and who owns them: the Pipeline (gateway/runtime/pipeline.py: the one input queue -> engine -> store),
the Dispatcher (outbox -> CMMS), Housekeeping (disk check, pruning), the sources, the HTTP server, and the
Supervisor (gateway/runtime/supervisor.py), which starts every long-running task and stops the gateway
(exit status 1, so systemd restarts it) when a critical one dies.

SIGHUP (and a change in the rules folder) reloads: the new config and rules are validated whole first, and
if anything is wrong the running ones stay. SIGTERM/SIGINT drain: sources stop, the queued samples and any
firing held in memory are committed with the engine's state, the dispatcher finishes its current attempt,
then the process exits. The systemd watchdog is fed from the periodic task, and only while the engine
consumer, the dispatcher and the HTTP server all beat (made progress within PROGRESS_STALL_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.cmms.registry import build_backend
from gateway.config import Config
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem
from gateway.core.errors import BackendError, ProblemsError
from gateway.core.events import DeliveryDone, EventBus
from gateway.core.inputs import Tick
from gateway.core.ports import Backend, Source
from gateway.core.samples import Sample
from gateway.core.views import ReloadOutcome
from gateway.engine.advice import while_open_advice
from gateway.engine.engine import Engine
from gateway.engine.loader import RuleSet
from gateway.runtime.dispatcher import Dispatcher
from gateway.runtime.firinglog import FiringLog
from gateway.runtime.housekeeping import Housekeeping
from gateway.runtime.logs import setup_logging
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.reload import diff, load_all, needs_restart, watch_rules
from gateway.runtime.supervisor import Supervisor
from gateway.runtime.systemd import notify, watchdog_interval_s
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.runtime.http import HttpServer

log = logging.getLogger("gateway.runtime.lifecycle")

TICK_INTERVAL_S = 1.0
PROGRESS_STALL_S = 15.0  # a watched task without a heartbeat this long: the watchdog is no longer fed
WATCHED = ("engine", "dispatcher", "http")


class TaskDied(RuntimeError):
    """A critical task died; the gateway stopped. The names are in `tasks`."""

    def __init__(self, tasks: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {why}" for name, why in tasks.items()))
        self.tasks = tasks


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
    pipeline: Pipeline = field(init=False)
    housekeeping: Housekeeping = field(init=False)
    network: NetworkInfo = field(init=False, default_factory=NetworkInfo)
    sources: dict[str, Source] = field(init=False, default_factory=dict)
    started_at: float = field(init=False, default=0.0)
    last_reload: ReloadOutcome | None = field(init=False, default=None)
    events: EventBus = field(init=False, default_factory=EventBus)
    firing_log: FiringLog = field(init=False, default_factory=FiringLog)
    supervisor: Supervisor = field(init=False)
    fleet: Any = field(init=False, default=None)  # gateway.fleet.member.FleetMember when `fleet:` is set

    _stopping: asyncio.Event = field(init=False)
    _reload_requested: asyncio.Event = field(init=False)
    _reload_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)  # SIGHUP, rules watcher
    _http_server: HttpServer | None = field(init=False, default=None)

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        self.started_at = self.clock.now()
        self._stopping = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.supervisor = Supervisor()
        self.firing_log.attach(self.events)
        cfg = self.config
        self.store = await Store.open(cfg.state_dir, gateway_id=cfg.gateway.id, clock=self.clock)
        self.housekeeping = Housekeeping(
            self.store,
            state_dir=lambda: self.config.state_dir,
            retention_s=lambda: self.config.dispatcher.delivered_retention,
            history_s=lambda: self.config.dispatcher.history_retention,
            clock=self.clock,
        )
        self.engine = Engine(self.rules, gateway_id=cfg.gateway.id, state=await self.store.rules.load())
        self.backend = self._build_backend(cfg)
        self.network = await self._start_backend(self.backend)
        self.dispatcher = Dispatcher(
            self.store,
            self.backend,
            settings=cfg.dispatcher,
            quota=cfg.cmms.quota,
            timezone=lambda: self.timezone,  # late-bound: network settings learned later, reloads
            clock=self.clock,
            on_delivery=self._delivered,
        )
        self.dispatcher.heartbeat = lambda: self.supervisor.beat("dispatcher")
        self.pipeline = Pipeline(
            self.engine,
            self.store,
            clock=self.clock,
            events=self.events,
            health=self.housekeeping,
            wake=self.dispatcher.wake,
            beat=lambda: self.supervisor.beat("engine"),
        )
        if cfg.fleet is not None:  # NATS: relayed webhooks, heartbeat, the fleet's quota (docs/fleet.md)
            from gateway.fleet.wiring import attach

            self.fleet = attach(self)
            await self.fleet.start()
        self._start_sources()
        sup = self.supervisor
        sup.start("engine", self.pipeline.run)
        sup.start("dispatcher", self.dispatcher.run)
        sup.start("periodic", self._periodic)
        sup.start("rules-watch", lambda: watch_rules(lambda: self.config.rules_dir, self.reload))
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
        learned = getattr(self.backend, "network", None)  # a backend that read its settings after start-up
        learned_tz = getattr(learned, "timezone", None)
        return self.config.gateway.timezone or self.network.timezone or learned_tz or "UTC"

    @property
    def samples_in(self) -> int:
        return self.pipeline.samples_in

    @property
    def firings_out(self) -> int:
        return self.pipeline.firings_out

    def submit(self, sample: Sample) -> None:
        """Called by sources: into the engine's input queue."""
        self.pipeline.submit(sample)

    def _build_backend(self, cfg: Config) -> Backend:
        return build_backend(
            cfg.cmms,
            gateway_id=cfg.gateway.id,
            timezone=cfg.gateway.timezone,
            clock=self.clock,
            transport=self.backend_transport,
        )

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
            self.supervisor.start(f"source:{name}", _runner(source, self.submit), restart=True)

    async def _start_http(self) -> None:
        from gateway.runtime.http import http_server
        from gateway.runtime.views import web_deps
        from gateway.web.server import build_app

        http = self.config.http
        server = http_server(
            build_app(web_deps(self)),
            http,
            beat=lambda: self.supervisor.beat("http"),
            current=lambda: self.config.http,
        )
        self._http_server = server
        task = self.supervisor.start("http", server.serve)
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        tls = bool(http.tls_certificate and http.tls_key)
        log.info(
            "HTTP on %s://%s (status page, /metrics, /healthz, webhooks)",
            "https" if tls else "http",
            http.listen,
        )

    def _delivered(self, item: OutboxItem, delivery: Delivery) -> None:
        self.events.publish(DeliveryDone(item, delivery))

    # ------------------------------------------------------------------ periodic

    async def _periodic(self) -> None:
        watchdog = watchdog_interval_s()
        last_watchdog = 0.0
        starving: list[str] = []
        while True:
            await asyncio.sleep(TICK_INTERVAL_S if watchdog is None else min(TICK_INTERVAL_S, watchdog))
            mono = time.monotonic()
            self.supervisor.beat("periodic")
            await self.housekeeping.tick(mono)
            self.pipeline.publish(Tick())
            if watchdog is None or mono - last_watchdog < watchdog:
                continue
            stalled = self.stalled()
            if stalled:
                if stalled != starving:
                    log.error("not feeding the systemd watchdog: no progress from %s", ", ".join(stalled))
                starving = stalled
                continue
            if starving:
                log.info("feeding the systemd watchdog again: every task makes progress")
                starving = []
            notify("WATCHDOG=1")
            last_watchdog = mono

    def stalled(self) -> list[str]:
        """The watched tasks (engine consumer, dispatcher, HTTP server) that made no progress lately."""
        after = max(PROGRESS_STALL_S, 3 * self.config.dispatcher.idle_poll)
        return self.supervisor.stalled(WATCHED, after_s=after)

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """Reload gateway.yaml and the rules. On any problem, keep everything running as it is. One reload at
        a time: SIGHUP and the rules watcher may ask together, and a second reload running into the first
        one's `await`s would start the sources twice or keep a backend the first one closed."""
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        now = self.clock.now()
        try:
            config, rules = load_all(self.config.path)
        except ProblemsError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused (%d problems): the previous rules keep running", len(exc.problems))
            self.last_reload = ReloadOutcome(now, False, tuple(str(p) for p in exc.problems))
            return False
        restart = needs_restart(self.config, config)
        if restart:
            for reason in restart:
                log.error("reload refused: %s", reason)
            log.error("reload refused: nothing changed, the previous configuration keeps running")
            self.last_reload = ReloadOutcome(now, False, tuple(restart))
            return False
        changes = diff(self.config, config)
        http_changed = config.http != self.config.http
        self.engine.reload(rules)
        self.rules = rules
        if changes.backend:
            old = self.backend
            self.backend = self._build_backend(config)
            self.network = await self._start_backend(self.backend)
            self.dispatcher.set_backend(self.backend, quota=config.cmms.quota)
            await old.aclose()
        if changes.sources:
            await self.supervisor.cancel(self.supervisor.names("source:"))
            self.sources.clear()
            self.config = config
            self._start_sources()
        if http_changed:
            # Read per request by the web side (the webhook receiver is made again): applied from now on.
            log.info("reload: http settings applied (webhook secrets, tokens and limits as now configured)")
        if self.fleet is not None:
            self.fleet.reloaded(config.fleet, config.cmms.quota)
        self.config = config
        self.dispatcher.settings = config.dispatcher
        self.dispatcher.resume()
        setup_logging(fmt=config.logging.format, level=config.logging.level, secrets=config.secrets())
        self.last_reload = ReloadOutcome(now, True)
        log.info("reloaded: %d rules, %d sources", len(rules.rules), len(self.sources))
        return True

    def request_reload(self) -> None:
        self._reload_requested.set()

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait(self) -> None:
        """Run until asked to stop; serve reload requests meanwhile. Raises TaskDied at once when a critical
        task dies (the caller then stops the gateway, and the process exits non-zero)."""
        failure = self.supervisor.failure
        while not self._stopping.is_set() and not failure.is_set():
            waiters = [
                asyncio.create_task(event.wait())
                for event in (self._stopping, self._reload_requested, failure)
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if self._reload_requested.is_set() and not self._stopping.is_set() and not failure.is_set():
                self._reload_requested.clear()
                notify("RELOADING=1")
                await self.reload()
                notify("READY=1")
        if failure.is_set():
            raise TaskDied(dict(self.supervisor.failed))

    async def stop(self) -> None:
        notify("STOPPING=1")
        log.info("stopping: draining")
        sup = self.supervisor
        sup.stopping = True
        await sup.cancel([*sup.names("source:"), "rules-watch", "periodic"])
        await self.housekeeping.aclose()  # a prune in progress: its batch rolls back, the next start goes on
        if self.fleet is not None:  # no relayed webhooks now; the quota stays until the dispatcher stops
            await self.fleet.stop_intake()
        # The samples and webhooks already queued, held firings, then the engine's state.
        self.pipeline.finish()
        await sup.wait_for(["engine"])
        with contextlib.suppress(Exception):
            await self.pipeline.drain()
        self.pipeline.closed = True
        if self._http_server is not None:
            self._http_server.should_exit = True
            await sup.wait_for(["http"])
        with contextlib.suppress(Exception):
            await self.pipeline.drain()  # webhooks that arrived while the first drain ran
        await sup.cancel(list(sup.tasks))
        if self.fleet is not None:
            await self.fleet.stop()
        with contextlib.suppress(Exception):
            await self.backend.aclose()
        await self.store.close()
        log.info("stopped")


def _runner(source: Source, emit: Callable[[Sample], None]) -> Callable[[], Awaitable[None]]:
    return lambda: source.run(emit)


async def serve(gateway: Gateway, *, until: Awaitable[Any] | None = None) -> None:
    """Start, install signal handlers, run until SIGTERM/SIGINT (or `until` completes), then drain. Raises
    TaskDied (after the drain) when a critical task died."""
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
    """`mw-gateway run`: validate everything first, then serve. 1 when it cannot start or a task died."""
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
    except TaskDied as exc:
        log.error("stopped because a task died (%s): exiting with status 1", exc)
        return 1
    return 0
