"""HTTP edge limits: what an unauthenticated client can hold of the gateway (issue 18.10).

Before: no connection limit and no read timeout. 1,100 idle sockets ran the process out of file descriptors
(`/healthz` hung, delivery could not connect to the CMMS, reload failed, 122 MB of accept() tracebacks in
30 s); 300 slow 1 MB bodies took RSS from 54 to 370 MB. Now, every setting read per connection from
`http:` (a reload applies it):

- `max_connections`: open connections. Beyond it, the connection idle the longest (waiting for its request's
  headers, or kept alive between requests) is closed to make room, else the one that has been receiving its
  request's body the longest: a flood of idle sockets, slow heads or slow bodies can never lock out a real
  client. Only when every connection has a whole request being answered is the newcomer closed. The limit is
  also kept below the process's file-descriptor limit (`effective_max_connections`).
- `header_timeout`: a connection must deliver a complete request head this long after it opened or after
  its previous response (slowloris); `body_timeout`: a request's whole body this long after its head. Past
  either, the connection is closed.
- `max_buffered_bytes` (gateway/web/webhooks.py): request bodies held in memory at once, all requests
  together; past it a webhook gets 503 and its sender retries. With `max_body_bytes` per body, memory for
  bodies is bounded whatever the number of connections.
- accept() failing for lack of descriptors (EMFILE/ENFILE, from asyncio's accept loop) is logged once per
  episode, without a traceback, instead of once per attempt (AcceptErrorLog).

`GuardedH11Protocol` is uvicorn's h11 protocol with these limits (`uvicorn.Config(http=...)`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("gateway.web.limits")

# Descriptors kept for the rest of the gateway when sizing max_connections below RLIMIT_NOFILE: SQLite (the
# database, its WAL and shm), sources (one socket each, OPC UA a few), the CMMS client's pool, logs, DNS.
FD_RESERVE = 128
ACCEPT_QUIET_S = 60.0  # an accept() error episode ends after this long without one


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's LimitNOFILE=). Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def effective_max_connections(configured: int, soft_limit: int, *, reserve: int = FD_RESERVE) -> int:
    """`configured`, lowered so that the gateway keeps `reserve` descriptors for itself (at least 4)."""
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return configured
    return max(4, min(configured, soft_limit - reserve))


class ConnectionGuard:
    """The limits shared by every connection of one server. `http()` is the current HttpSection."""

    def __init__(self, http: Callable[[], Any], *, fd_limit: int | None = None) -> None:
        self.http = http
        self.fd_limit = fd_limit if fd_limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.idle_since: dict[GuardedH11Protocol, float] = {}  # open connections without a request running
        self.receiving_since: dict[GuardedH11Protocol, float] = {}  # a request whose body is still coming
        self.open: set[GuardedH11Protocol] = set()
        self._full = False
        self._lowered_for: int | None = None

    @property
    def max_connections(self) -> int:
        configured = int(self.http().max_connections)
        limit = effective_max_connections(configured, self.fd_limit)
        if limit < configured and self._lowered_for != configured:
            self._lowered_for = configured
            log.warning(
                "http.max_connections %d lowered to %d: the process may open %d files (RLIMIT_NOFILE; "
                "LimitNOFILE= in the systemd unit) and keeps %d for the database, sources and the CMMS",
                configured,
                limit,
                self.fd_limit,
                FD_RESERVE,
            )
        return limit

    def opened(self, conn: GuardedH11Protocol, now: float) -> bool:
        """A new connection. False: it must be closed (every slot has a request in progress)."""
        self.open.add(conn)
        limit = self.max_connections
        if len(self.open) <= limit:
            if self._full and len(self.open) < limit * 0.9:
                self._full = False
                log.info("HTTP connections back under the limit (%d open)", len(self.open))
            self.idle_since[conn] = now
            return True
        if not self._full:
            self._full = True
            log.warning(
                "HTTP connection limit reached (http.max_connections %d): closing the longest idle "
                "connections to make room",
                limit,
            )
        victim = min(self.idle_since, key=self.idle_since.__getitem__, default=None)
        if victim is None:
            victim = min(self.receiving_since, key=self.receiving_since.__getitem__, default=None)
        if victim is None:
            self.open.discard(conn)
            return False
        self.forget(victim)
        victim.transport.close()
        self.idle_since[conn] = now
        return True

    def receiving(self, conn: GuardedH11Protocol, now: float) -> None:
        self.idle_since.pop(conn, None)
        if conn in self.open:
            self.receiving_since.setdefault(conn, now)

    def answering(self, conn: GuardedH11Protocol) -> None:
        self.idle_since.pop(conn, None)
        self.receiving_since.pop(conn, None)

    def idle(self, conn: GuardedH11Protocol, now: float) -> None:
        self.receiving_since.pop(conn, None)
        if conn in self.open:
            self.idle_since[conn] = now

    def forget(self, conn: GuardedH11Protocol) -> None:
        self.open.discard(conn)
        self.idle_since.pop(conn, None)
        self.receiving_since.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection limit and header/body timeouts (see the module doc)."""

    guard: ConnectionGuard  # set on the subclass made by `protocol_for`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._seen_cycle: Any = None
        if not self.guard.opened(self, self.loop.time()):
            transport.close()
            return
        self._arm(self.guard.http().header_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        if cycle is not self._seen_cycle:
            self._seen_cycle = cycle  # a request head just completed: now its body has a deadline
            self._arm(self.guard.http().body_timeout, self._body_timeout)
        if cycle.more_body:
            self.guard.receiving(self, self.loop.time())
        else:
            self.guard.answering(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.guard.idle(self, self.loop.time())
            self._arm(self.guard.http().header_timeout, self._head_timeout)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # no request in progress: drop the socket
            self.transport.close()

    def _body_timeout(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self.transport.close()  # the app sees http.disconnect; nothing half-read is stored


def protocol_for(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class bound to `guard` (uvicorn instantiates the class per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


class AcceptErrorLog:
    """An asyncio exception handler: accept() failing for lack of descriptors or memory (asyncio logs it
    with a traceback at every retry) is one ERROR per episode, then nothing until ACCEPT_QUIET_S passed
    without one (then one INFO). Everything else goes to the previous handler."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, *, clock: Callable[[], float], quiet_s: float = ACCEPT_QUIET_S) -> None:
        self.clock = clock
        self.quiet_s = quiet_s
        self.last: float | None = None
        self.suppressed = 0
        self.previous: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.clock()
        if self.last is None or now - self.last > self.quiet_s:
            if self.last is not None and self.suppressed:
                log.info("accept() errors of the previous episode: %d more", self.suppressed)
            self.suppressed = 0
            log.error(
                "cannot accept HTTP connections: %s (out of file descriptors or memory); accepting again "
                "as soon as some close. Logged once per episode",
                context.get("exception"),
            )
        else:
            self.suppressed += 1
        self.last = now
