"""The dry-run backend: sends nothing, and answers DONE with the request it would have sent.

Shadow mode: new rules run against live machines and every firing goes through the outbox as usual, but
`deliver` only renders the request, so the dispatcher records it (`Delivery.request`) against an outbox row
marked as delivered by `dry_run` (`mw-gateway outbox list --dry-run` shows them). Switching `cmms.kind` to a
real backend later does not resend those rows: they are delivered.

With `compare_with` (a full `cmms:` section of another kind), the request is exactly the one that backend
would send (its `build_request`), without any network call and without secrets; a task that backend could
not build (e.g. no Servitly thing) is a dead letter here too. Without it, the request is a neutral JSON
rendering of the firing.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

from gateway.cmms.schema import DryRunConfig
from gateway.core.clock import Clock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome

log = logging.getLogger(__name__)


class RequestBuilder(Protocol):
    """What a backend offers to render a task without sending it (every real backend has it)."""

    def build_request(self, item: OutboxItem) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def neutral_request(item: OutboxItem, *, gateway_id: str) -> dict[str, Any]:
    """The firing as plain JSON, for when no backend is named to compare with."""
    return {
        "method": None,
        "path": None,
        "json": {"gateway": gateway_id, "firing": item.firing_uuid, **item.firing.to_json()},
    }


class DryRunBackend:
    kind = "dry_run"
    counts_against_quota = False

    def __init__(
        self,
        config: DryRunConfig,
        *,
        gateway_id: str,
        timezone: str | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self._timezone = timezone
        self._builder: RequestBuilder | None = None
        if config.compare_with is not None:
            from gateway.cmms.registry import build_backend  # the registry imports this module

            built: Any = build_backend(
                config.compare_with,
                gateway_id=gateway_id,
                timezone=timezone,
                clock=clock,
                transport=transport,
            )
            self._builder = built

    @property
    def compare_with(self) -> str | None:
        return self.config.compare_with.kind if self.config.compare_with is not None else None

    async def start(self) -> NetworkInfo:
        target = self.compare_with or "no backend"
        log.info("dry run: nothing is sent to a CMMS; tasks are rendered as %s would send them", target)
        return NetworkInfo(timezone=self._timezone, name="dry run", extra={"compare_with": self.compare_with})

    def build_request(self, item: OutboxItem) -> dict[str, Any]:
        """The request `compare_with` would send, or the neutral rendering (also for `mode: shadow` rules)."""
        if self._builder is None:
            return neutral_request(item, gateway_id=self.gateway_id)
        return self._builder.build_request(item)

    async def deliver(self, item: OutboxItem) -> Delivery:
        try:
            request = self.build_request(item)
        except (ValueError, TypeError, KeyError) as exc:  # only a compare_with backend raises
            return Delivery(
                Outcome.DEAD, error=f"dry run, {self.compare_with} could not build the task: {exc}"
            )
        log.info(
            "dry run: firing %s of rule %s not sent (%s %s)",
            item.firing_uuid,
            item.firing.rule_id,
            request.get("method") or "",
            request.get("path") or "neutral rendering",
        )
        return Delivery(Outcome.DONE, request={**request, "dry_run": True, "compare_with": self.compare_with})

    async def aclose(self) -> None:
        if self._builder is not None:
            await self._builder.aclose()


__all__ = ["DryRunBackend", "RequestBuilder", "neutral_request"]
