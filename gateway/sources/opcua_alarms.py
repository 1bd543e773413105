"""OPC UA alarms and conditions (Part 9) of one object's events, as signals rules can use.

Every condition the server reports (an event carrying a ConditionId and an ActiveState) becomes five signals,
named after its ConditionName (`alarms.name: condition`, the default) or SourceName.ConditionName
(`name: source_condition`), with every character other than letters, digits, '_' and '-' replaced by '_':

    press1.alarm.HighTemp.active     bool: true while the condition is active (the signal to trigger on)
    press1.alarm.HighTemp.severity   int:  1..1000, from the last event of the condition
    press1.alarm.HighTemp.message    str:  the event's Message text
    press1.alarm.HighTemp.acked      bool: AckedState
    press1.alarm.HighTemp.source     str:  the SourceName (the equipment raising it)

The details are emitted before `active`, so a rule firing on `active` renders its task with this activation's
message and severity. `active` carries the activation time (ActiveState/TransitionTime, else the event's Time)
as its sample time, so the evidence of a firing names when the alarm went active on the PLC.

One activation makes one task: the source remembers, per ConditionId, the activation time it last reported
active (in memory and in `<state_dir>/opcua/<source>-alarms.json`). An event, or a ConditionRefresh after a
reconnect or a restart, repeating that activation emits `active: true` again, which a rule already fired on
ignores (the link drop in between made the signals BAD, which never re-arms a rule). An activation with
another time while the condition was active for us (it cleared and rose again while the link was down)
emits `false` then `true`: the rule re-arms and fires once for the new activation. A condition the source
knew but the refresh did not list (it cleared while the link was down) goes `false` at the RefreshEndEvent.

ConditionRefresh is called after subscribing, after each reconnect, when asyncua re-creates the subscription,
and on a RefreshRequiredEvent, one at a time. Events of condition branches (a non-null BranchId: an earlier
state kept for acknowledgement) are skipped.

`severity_min` gates activations: an activation is reported once an event of it has a Severity at or above
the minimum; once reported it stays active until ActiveState clears (a severity that drops does not clear it,
which would re-arm a rule and make a second task for the same activation). Conditions never reported do not
become signals. Non-alarm conditions (no ActiveState) are ignored.

No asyncua type leaves this module; the connector (gateway/sources/opcua.py) calls subscribe(), on_event(),
refresh() and link_down().
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.observer import Observer, SubscriptionEvent
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from gateway.core.clock import Clock
from gateway.core.samples import Value
from gateway.sources._common import Sink
from gateway.sources.schema import OpcuaAlarms

log = logging.getLogger(__name__)


class _OnRecreated(Observer):
    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def on_subscription_event(self, subscription_id: int | None, event: SubscriptionEvent) -> None:
        if event is SubscriptionEvent.RECREATED:
            self._callback()


def _nid(identifier: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier))


_REFRESH_START = _nid(ObjectIds.RefreshStartEventType)
_REFRESH_END = _nid(ObjectIds.RefreshEndEventType)
_REFRESH_REQUIRED = _nid(ObjectIds.RefreshRequiredEventType)
_DETAILS = ("severity", "message", "acked", "source")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_NS_PREFIX = re.compile(r"^[0-9]+:")  # node-opcua's SourceName is the browse name with its index: "2:Oven1"
_REFRESH_WAIT_S = 10.0  # how long a refresh after a reconnect waits for asyncua to re-create the event item
_SAME_TIME_S = 0.001  # two activation times closer than this are the same activation

# The event filter's select clauses, in this order: (field, type definition, browse path, attribute).
_FIELDS: tuple[tuple[str, int, tuple[str, ...], int], ...] = (
    ("EventType", ObjectIds.BaseEventType, ("EventType",), AttributeIds.Value),
    ("SourceName", ObjectIds.BaseEventType, ("SourceName",), AttributeIds.Value),
    ("Time", ObjectIds.BaseEventType, ("Time",), AttributeIds.Value),
    ("Message", ObjectIds.BaseEventType, ("Message",), AttributeIds.Value),
    ("Severity", ObjectIds.BaseEventType, ("Severity",), AttributeIds.Value),
    ("ConditionId", ObjectIds.ConditionType, (), AttributeIds.NodeId),
    ("ConditionName", ObjectIds.ConditionType, ("ConditionName",), AttributeIds.Value),
    ("Retain", ObjectIds.ConditionType, ("Retain",), AttributeIds.Value),
    ("ActiveState/Id", ObjectIds.AlarmConditionType, ("ActiveState", "Id"), AttributeIds.Value),
    (
        "ActiveState/TransitionTime",
        ObjectIds.AlarmConditionType,
        ("ActiveState", "TransitionTime"),
        AttributeIds.Value,
    ),
    ("AckedState/Id", ObjectIds.AcknowledgeableConditionType, ("AckedState", "Id"), AttributeIds.Value),
    ("BranchId", ObjectIds.ConditionType, ("BranchId",), AttributeIds.Value),
)


def event_filter() -> ua.EventFilter:
    """The standard condition fields, no where clause (the ConditionId tells conditions from other events)."""
    flt = ua.EventFilter()
    for _, type_id, path, attribute in _FIELDS:
        op = ua.SimpleAttributeOperand()
        op.TypeDefinitionId = _nid(type_id)
        op.BrowsePath = [ua.QualifiedName(part, 0) for part in path]
        op.AttributeId = attribute
        flt.SelectClauses.append(op)
    return flt


@dataclass(frozen=True)
class ConditionEvent:
    """One condition event, decoded from the filter's fields; None where the server sent nothing."""

    condition_id: str
    condition_name: str
    source_name: str
    active: bool | None
    acked: bool | None
    severity: int
    message: str
    time: float | None
    transition: float | None  # ActiveState/TransitionTime


@dataclass
class _Known:
    """What the source has reported of one condition (persisted)."""

    name: str  # the signal base, e.g. press1.alarm.HighTemp
    since: float | None  # the activation time last reported active; None while inactive
    severity: int = 0
    message: str = ""
    acked: bool = False
    source: str = ""


def decode(fields: list[Any]) -> tuple[str, ConditionEvent | None]:
    """(kind, event) from the event's fields (Variants or values) in _FIELDS order: kind is "condition",
    "branch", "refresh_start", "refresh_end", "refresh_required" or "other" (the event is set only for a
    condition).
    Never raises."""
    plain = [f.Value if isinstance(f, ua.Variant) else f for f in fields]
    get = dict(zip((f[0] for f in _FIELDS), plain, strict=False)).get
    etype = get("EventType")
    if etype == _REFRESH_START:
        return "refresh_start", None
    if etype == _REFRESH_END:
        return "refresh_end", None
    if etype == _REFRESH_REQUIRED:
        return "refresh_required", None
    cid = get("ConditionId")
    if not isinstance(cid, ua.NodeId) or cid.is_null():
        return "other", None
    branch = get("BranchId")
    if isinstance(branch, ua.NodeId) and not branch.is_null():
        return "branch", None  # a previous state kept for acknowledgement, not the condition's current state
    active = get("ActiveState/Id")
    acked = get("AckedState/Id")
    severity = get("Severity")
    return "condition", ConditionEvent(
        condition_id=cid.to_string(),
        condition_name=_text(get("ConditionName")),
        source_name=_NS_PREFIX.sub("", _text(get("SourceName"))),
        active=active if isinstance(active, bool) else None,
        acked=acked if isinstance(acked, bool) else None,
        severity=int(severity) if isinstance(severity, int) and not isinstance(severity, bool) else 0,
        message=_text(get("Message")),
        time=_unix(get("Time")),
        transition=_unix(get("ActiveState/TransitionTime")),
    )


class AlarmState:
    """The protocol-free part: condition events in, (signal, value, ts) out; deduplicates activations."""

    def __init__(self, source: str, config: OpcuaAlarms, clock: Clock, path: Path | None) -> None:
        self._source = source
        self._config = config
        self._clock = clock
        self._path = path
        self._known: dict[str, _Known] = {}
        self._names: dict[str, str] = {}  # signal base -> ConditionId
        self._refreshing: set[str] | None = None  # ConditionIds seen since the RefreshStartEvent
        self._load()

    def signal_names(self) -> list[str]:
        return [f"{k.name}.{part}" for k in self._known.values() for part in (*_DETAILS, "active")]

    # ------------------------------------------------------------ events

    def refresh_start(self) -> None:
        self._refreshing = set()

    def refresh_end(self) -> list[tuple[str, Value, float]]:
        """The conditions the refresh did not list have cleared (or were never retained): report them."""
        seen, self._refreshing = self._refreshing, None
        if seen is None:
            return []
        now = self._clock.now()
        out: list[tuple[str, Value, float]] = []
        changed = False
        for cid, known in self._known.items():
            if cid in seen:
                continue
            out += self._details(known, now)
            out.append((f"{known.name}.active", False, now))
            changed |= known.since is not None
            known.since = None
        if changed:
            self._save()
        return out

    def on_condition(self, event: ConditionEvent) -> list[tuple[str, Value, float]]:
        if event.active is None:
            return []  # not an alarm (a dialog, a plain condition): nothing that is active or not
        if self._refreshing is not None:
            self._refreshing.add(event.condition_id)
        known = self._known.get(event.condition_id)
        now = self._clock.now()
        ts = event.time if event.time is not None else now
        if event.active:
            since = event.transition if event.transition is not None else ts
            if known is not None and known.since is not None:
                if event.transition is None and self._refreshing is not None:
                    since = known.since  # a refresh without a transition time repeats what we know
                elif abs(since - known.since) < _SAME_TIME_S:
                    since = known.since
            elif event.severity < self._config.severity_min:
                return []  # an activation below severity_min: not (yet) reported
        else:
            if known is None:
                return []  # never reported: no signals for it
            since = None
        if known is None:
            known = _Known(name=self._name_for(event), since=None)
            self._known[event.condition_id] = known
        out: list[tuple[str, Value, float]] = []
        before = known.since
        known.severity, known.message, known.source = event.severity, event.message, event.source_name
        known.acked = bool(event.acked)
        out += self._details(known, ts)
        active = f"{known.name}.active"
        if since is None:
            out.append((active, False, ts))
        else:
            if before is not None and before != since:
                out.append((active, False, since))  # cleared and active again while we did not see it
            out.append((active, True, since))
        known.since = since
        if before != since:
            self._save()
        return out

    def _details(self, known: _Known, ts: float) -> list[tuple[str, Value, float]]:
        return [
            (f"{known.name}.severity", known.severity, ts),
            (f"{known.name}.message", known.message, ts),
            (f"{known.name}.acked", known.acked, ts),
            (f"{known.name}.source", known.source, ts),
        ]

    def _name_for(self, event: ConditionEvent) -> str:
        condition = _safe(event.condition_name) or _safe(event.condition_id)
        key = condition
        if self._config.name == "source_condition":
            key = f"{_safe(event.source_name) or 'unknown'}.{condition}"
        base = f"{self._source}.alarm.{key}"
        owner = self._names.get(base)
        if owner is not None and owner != event.condition_id:
            suffix = hashlib.sha256(event.condition_id.encode()).hexdigest()[:6]
            log.warning(
                "%s: two conditions are named %s (%s and %s): the second is %s_%s; "
                "set alarms.name: source_condition to name them after their source",
                self._source,
                base,
                owner,
                event.condition_id,
                base,
                suffix,
            )
            base = f"{base}_{suffix}"
        self._names[base] = event.condition_id
        return base

    # ------------------------------------------------------------ persistence

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            for cid, entry in data["conditions"].items():
                known = _Known(**entry)
                if not known.name.startswith(f"{self._source}.alarm."):
                    continue  # the source was renamed: its names no longer apply
                self._known[cid] = known
                self._names[known.name] = cid
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "%s: ignoring %s (%s): activations seen before are forgotten", self._source, self._path, exc
            )
            self._known.clear()
            self._names.clear()

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"conditions": {cid: asdict(k) for cid, k in self._known.items()}}),
                encoding="utf-8",
            )
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("%s: cannot save the alarm activations to %s: %s", self._source, self._path, exc)


class AlarmWatch:
    """The asyncua side: one event monitored item on the source's subscription, ConditionRefresh, decoding."""

    def __init__(self, source: str, config: OpcuaAlarms, clock: Clock, state_dir: Path | None) -> None:
        path = None if state_dir is None else state_dir / "opcua" / f"{source}-alarms.json"
        self.state = AlarmState(source, config, clock, path)
        self.config = config
        self._source = source
        self._handle: int | None = None  # the event item's client handle on the subscription
        self._client: Any = None
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._refreshed: int | None = None  # the subscription id of the last ConditionRefresh

    def signal_names(self) -> list[str]:
        return self.state.signal_names()

    async def subscribe(self, client: Any, sub: Any, resolve: Callable[[str], Awaitable[Any]]) -> None:
        """Monitor the events of the configured object on `sub`, then ConditionRefresh (the active alarms).
        An object that cannot be found or monitored is one WARNING; the data signals keep working."""
        self._client, self._sub = client, sub
        self._handle = None
        # asyncua re-creates the subscription after a reconnect to a server that lost it (a restart): the
        # retained conditions must then be refreshed on the new subscription
        client.uaclient.observer = _OnRecreated(lambda: self._schedule_refresh(unless_done=True))
        try:
            node = await resolve(self.config.source)
            before = set(sub._monitored_items)
            await sub.subscribe_events(node, evfilter=event_filter(), queuesize=self.config.queue_size)
        except (UaError, ValueError, KeyError) as exc:
            log.warning("%s: cannot subscribe to the alarms of %s: %s", self._source, self.config.source, exc)
            return
        added = set(sub._monitored_items) - before
        self._handle = added.pop() if len(added) == 1 else None
        await self.refresh()

    def on_event(self, event: Any, sink: Sink) -> None:
        """Emit the signals one event changes (an asyncua OpcEvent of our filter)."""
        kind, cond = decode(list(getattr(event.event, "event_fields", None) or ()))
        emitted: list[tuple[str, Value, float]] = []
        if kind == "refresh_start":
            self.state.refresh_start()
        elif kind == "refresh_end":
            emitted = self.state.refresh_end()
        elif kind == "refresh_required":  # the server lost events: it asks for a ConditionRefresh
            self._schedule_refresh()
        elif cond is not None:
            emitted = self.state.on_condition(cond)
        for signal, value, ts in emitted:
            sink.good(signal, value, ts)

    async def refresh(self, *, unless_done: bool = False) -> None:
        """ConditionRefresh on the subscription. One at a time: the events of two refreshes must not mix.
        unless_done: not when the subscription as it is now was refreshed already (after a re-creation, the
        refresh that followed the reconnect usually waited for it)."""
        async with self._lock:
            sub = self._sub
            if unless_done and sub is not None and sub.subscription_id == self._refreshed:
                return
            await self._refresh()

    def _schedule_refresh(self, *, unless_done: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self.refresh(unless_done=unless_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self) -> None:
        """Once the event item exists on the server: after a reconnect asyncua may still be transferring or
        re-creating the subscription when the session is back. A refresh that went to a subscription
        re-created meanwhile is made again on the new one."""
        client, sub = self._client, self._sub
        if client is None or sub is None or self._handle is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REFRESH_WAIT_S
        while True:
            used = sub.subscription_id
            if used is not None and self._handle in sub._monitored_items:
                try:
                    await client.get_node(_nid(ObjectIds.ConditionType)).call_method(
                        _nid(ObjectIds.ConditionType_ConditionRefresh),
                        ua.Variant(used, ua.VariantType.UInt32),
                    )
                except UaError as exc:
                    # the subscription is being moved to the new session: try again; anything else is final
                    if "BadSubscriptionIdInvalid" not in str(exc) or loop.time() >= deadline:
                        log.warning("%s: ConditionRefresh failed: %s", self._source, exc)
                        return
                else:
                    if sub.subscription_id == used and self._handle in sub._monitored_items:
                        self._refreshed = used
                        log.debug("%s: ConditionRefresh on subscription %s", self._source, used)
                        return
            elif loop.time() >= deadline:
                log.warning("%s: no ConditionRefresh: the subscription was not re-created", self._source)
                return
            await asyncio.sleep(0.05)

    def link_down(self, sink: Sink, reason: str) -> None:
        sink.all_bad(self.signal_names(), reason)


def _text(value: Any) -> str:
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    if isinstance(value, ua.QualifiedName):
        return value.Name or ""
    return value if isinstance(value, str) else ""


def _unix(value: Any) -> float | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    with contextlib.suppress(OverflowError, OSError, ValueError):
        stamp = value.timestamp()
        return stamp if stamp > 0 else None  # 1601-01-01 is OPC UA's "no time"
    return None


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text.strip()).strip("_")
