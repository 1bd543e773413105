"""The gateway's side of the relay: a durable pull consumer on `<name>.webhooks.<gateway>`.

Each message carries the original headers and raw body of one webhook. It is handed to the SAME receiver as a
direct HTTP delivery (signature, nonce, idempotency key, ledger) through `handle(headers, body, path,
received_at)`, which answers an HTTP status. The message is acknowledged only after that answer, i.e. after
the ledger commit:

    200        acknowledged (stored, or a duplicate already stored)
    400/401/413 terminated: bad input or a replay never gets better by retrying (logged, counted)
    other      negative-acknowledged with a delay: redelivered later (503: the state database is busy)

`received_at` is the time the relay published the message (the stream's timestamp): the signature's
timestamp window is checked against it, so a backlog delivered after a day offline is still accepted.
The connection is outbound only; after an outage the consumer resumes where it acknowledged last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.fleet import names
from gateway.fleet.config import BusSection
from gateway.fleet.relay import SM_PATH, decode_headers

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, str], bytes, str, float | None], Awaitable[int]]
TERMINAL = frozenset({400, 401, 404, 413})


@dataclass
class ConsumerStats:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


class FleetConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        bus: BusSection,
        gateway: str,
        handle: Handler,
        *,
        batch: int = 32,
        ack_wait: float = 30.0,
        retry_delay: float = 5.0,
    ) -> None:
        self.js = js
        self.bus = bus
        self.gateway = gateway
        self.handle = handle
        self.batch = batch
        self.ack_wait = ack_wait
        self.retry_delay = retry_delay
        self.stream = names.stream(bus.name)
        self.durable = names.consumer(gateway)
        self.subject = names.subject(bus.name, gateway)
        self.stats = ConsumerStats()

    async def ensure(self) -> None:
        """The durable consumer (created when missing; in a locked-down account it is provisioned)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        try:
            await self.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await self.js.add_consumer(
                self.stream,
                ConsumerConfig(
                    name=self.durable,
                    durable_name=self.durable,
                    filter_subject=self.subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=1000,
                ),
            )

    async def process(self, msg: Msg) -> str:
        headers, path = decode_headers(msg.headers)
        try:
            received_at: float | None = msg.metadata.timestamp.timestamp()
        except Exception:
            received_at = None
        try:
            status = await self.handle(headers, msg.data, path, received_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("fleet: relayed webhook could not be handled; redelivered later")
            status = 503
        if status == 200:
            await msg.ack_sync()
            outcome = "acked"
        elif status in TERMINAL:
            log.warning("fleet: relayed webhook refused by the receiver (%d); not redelivered", status)
            await msg.term()
            outcome = "refused"
        else:
            await msg.nak(delay=self.retry_delay)
            outcome = "retry"
        self.stats.add(outcome)
        return outcome

    async def run(self) -> None:
        """Consume forever; survives NATS outages (the client reconnects, we re-subscribe)."""
        while True:
            try:
                await self.ensure()
                sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
                while True:
                    await self.drain_batch(sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("fleet consumer: %s; retrying", exc)
                await asyncio.sleep(1.0)

    async def drain_batch(self, sub: JetStreamContext.PullSubscription, *, wait_s: float = 1.0) -> int:
        import nats.errors

        try:
            msgs = await sub.fetch(self.batch, timeout=wait_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return 0
        for msg in msgs:
            await self.process(msg)
        return len(msgs)


class Receiver(Protocol):
    """What the consumer needs of the gateway's webhook receiver (gateway.web's WebhookReceiver)."""

    async def receive_mobility_work(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> _Reply: ...

    async def receive_servicemobility(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> _Reply: ...


class _Reply(Protocol):
    @property
    def status(self) -> int: ...


def receiver_handler(receiver: Callable[[], Receiver]) -> Handler:
    """The handler feeding relayed webhooks to the receiver direct HTTP delivery uses; `receiver` returns the
    current one (a reload that changed the HTTP settings makes a new one)."""

    async def handle(headers: dict[str, str], body: bytes, path: str, received_at: float | None) -> int:
        current = receiver()
        if path.rstrip("/") == SM_PATH:
            return (await current.receive_servicemobility(headers, body, now=received_at)).status
        return (await current.receive_mobility_work(headers, body, now=received_at)).status

    return handle
