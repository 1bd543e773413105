"""An asyncua server that raises and clears real Part 9 alarms: AlarmConditionType events with a ConditionId,
retained while active, replayed by ConditionRefresh between a RefreshStartEvent and a RefreshEndEvent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds


class Alarm:
    """One condition instance (an AlarmConditionType object under its source) and its event generator."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.event = generator.event

    async def raise_(self, message: str, *, severity: int = 800, at: datetime | None = None) -> datetime:
        """Active, unacknowledged, retained; returns the activation time."""
        at = at or datetime.now(UTC)
        setattr(self.event, "ActiveState/Id", True)
        setattr(self.event, "ActiveState/TransitionTime", at)
        self.event.ActiveState = ua.LocalizedText("Active")
        setattr(self.event, "AckedState/Id", False)
        self.event.Retain = True
        self.event.Severity = severity
        await self.generator.trigger(time_attr=at, message=message)
        return at

    async def update(self, *, severity: int, message: str) -> None:
        """A new event of the same activation (a severity change)."""
        self.event.Severity = severity
        await self.generator.trigger(message=message)

    async def acknowledge(self) -> None:
        setattr(self.event, "AckedState/Id", True)
        self.event.Retain = bool(getattr(self.event, "ActiveState/Id"))
        await self.generator.trigger()

    async def clear(self, *, acked: bool = True) -> None:
        """Inactive; retained only while still unacknowledged."""
        at = datetime.now(UTC)
        setattr(self.event, "ActiveState/Id", False)
        setattr(self.event, "ActiveState/TransitionTime", at)
        self.event.ActiveState = ua.LocalizedText("Inactive")
        if acked:
            setattr(self.event, "AckedState/Id", True)
        self.event.Retain = not acked
        await self.generator.trigger(time_attr=at)


class AlarmServer:
    """Conditions raised by equipment objects, reported through the Server object (and the objects)."""

    def __init__(self, port: int) -> None:
        self.url = f"opc.tcp://127.0.0.1:{port}/"
        self.server: Any = None
        self.ns = 0
        self._objects: dict[str, Any] = {}

    async def start(self) -> None:
        server = Server()
        server.iserver.bind_condition_methods = True  # ConditionRefresh, RefreshStart/EndEvents
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await server.register_namespace("urn:mw-gateway:test:alarms")
        await server.start()
        self.server = server
        self._objects = {}

    async def stop(self) -> None:
        server, self.server = self.server, None
        await server.stop()

    async def equipment(self, name: str) -> Any:
        if name not in self._objects:
            self._objects[name] = await self.server.nodes.objects.add_object(
                ua.NodeId(name, self.ns), f"{self.ns}:{name}"
            )
        return self._objects[name]

    async def alarm(self, equipment: str, name: str, *, via: str = "server") -> Alarm:
        """An AlarmConditionType instance `name` under `equipment`. via="server": its events are reported by
        the Server object (as a PLC's do); via="equipment": by the equipment object itself."""
        source = await self.equipment(equipment)
        condition = await source.add_object(
            ua.NodeId(f"{equipment}.{name}", self.ns),
            f"{self.ns}:{name}",
            objecttype=ua.NodeId(ua.Int32(ObjectIds.AlarmConditionType)),
        )
        emitter = ua.NodeId(ua.Int32(ObjectIds.Server)) if via == "server" else source.nodeid
        generator = await self.server.get_event_generator(ua.Int32(ObjectIds.AlarmConditionType), emitter)
        event = generator.event
        event.SourceNode = source.nodeid
        event.SourceName = equipment
        event.ConditionName = name
        event.NodeId = condition.nodeid  # the ConditionId
        # asyncua declares the UtcTime properties of its event classes with a NodeId as the variant type,
        # which it cannot encode: they are DateTime variants.
        for name, kind in list(event.data_types.items()):
            if isinstance(kind, ua.NodeId):
                event.data_types[name] = (
                    ua.VariantType.DateTime if name.endswith("Time") else ua.VariantType.Double
                )
        return Alarm(generator)
