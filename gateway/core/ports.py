"""The ports: the narrow interfaces between the runtime and its adapters (sources, CMMS backends).

Adapters implement these; the runtime depends on them, never on an adapter's module.
"""

from __future__ import annotations

from typing import Protocol

from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem
from gateway.core.firings import Priority
from gateway.core.samples import Emit, SourceStats


class Source(Protocol):
    """A running connection to one device or broker, named in gateway.yaml under `sources:`."""

    name: str
    stats: SourceStats

    def signal_names(self) -> list[str]:
        """Full names ("source.signal") of every signal this source produces."""
        ...

    async def run(self, emit: Emit) -> None:
        """Connect, read, and call emit() for every sample, forever; reconnect with backoff on failure.

        Returns only when cancelled. Must never raise for a device or network problem: such problems become
        BAD samples for the affected signals, `stats.link = DOWN`, one ERROR log line when the link goes down
        and one INFO line when it comes back.
        """
        ...


class Backend(Protocol):
    kind: str  # "mobility_work", "amage", "servitly", "dry_run"
    counts_against_quota: bool  # whether delivered tasks use the plan's monthly quota

    async def start(self) -> NetworkInfo:
        """Check credentials and learn the account's settings. Raises BackendError on bad credentials;
        returns NetworkInfo() (unknowns) when the CMMS is unreachable, so the gateway still starts and queues.
        """
        ...

    async def deliver(self, item: OutboxItem) -> Delivery:
        """Send one task. Never raises for network or server problems: they are Delivery outcomes."""
        ...

    async def aclose(self) -> None: ...


class SharedQuota(Protocol):
    """A monthly task quota shared with other gateways (gateway/fleet/quota.py: FleetQuota), consulted by the
    dispatcher before each task leaves, beside its own local guard."""

    async def reserve(self, priority: Priority) -> bool:
        """True: one task may leave now (counted). False: hold it."""
        ...

    async def release(self, month: str | None = None) -> None:
        """Give back one reservation of `month` (default: this month)."""
        ...
