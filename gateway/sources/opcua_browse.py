"""OPC UA discovery for `mw-gateway browse opc.tcp://...`: walk the address space below a node, level by
level, and describe every variable as a signal could read it. No asyncua type leaves this module.

- Breadth first, many nodes per Browse request, following the hierarchical references (Organizes,
  HasComponent, HasProperty...) forward to Objects and Variables. Objects are walked into, Variables are not
  (their children are properties such as EURange, not tags).
- Large servers: a server returns at most its own number of references per node (or the number we ask,
  `max_references`) and a continuation point for the rest; every continuation point is followed with
  BrowseNext until the server says it is done, and released if the walk stops early.
- Each variable's data type, access level and current value are read in batches (one Read of three
  attributes per node).
- Node ids are given in both forms: `ns=2;s=...` (what the server says today) and `nsu=URI;s=...` (what
  survives a server that renumbers its namespaces: the form written to gateway.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import UaError

from gateway.sources.opcua import OpcuaConnector
from gateway.sources.schema import OpcuaSource

BROWSE_BATCH = 100  # nodes per Browse request
READ_BATCH = 300  # variables per Read request (3 attributes each)

_CLASS_MASK = int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)
_NUMBER_TYPES = {
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "Number",
    "Integer",
    "UInteger",
    "Decimal",
}


@dataclass
class Found:
    """One node of the walk."""

    depth: int  # 1: a child of the root
    path: tuple[str, ...]  # browse names (without namespace index) from the root's child down to this node
    browse_name: str  # as the server writes it: "2:Temperature"
    node_id: str  # ns=2;s=Press1.Temperature
    nsu_id: str  # nsu=urn:...;s=Press1.Temperature (namespace 0: the same as node_id)
    node_class: str  # Object | Variable
    parent: str = ""  # node id of the node it was found under
    data_type: str = ""  # Double, Boolean, String... (variables)
    access: str = ""  # read, write, read/write, none (variables)
    value: Any = None
    status: str = ""  # the value's status when not Good, or why it could not be read

    @property
    def is_variable(self) -> bool:
        return self.node_class == "Variable"

    @property
    def signal_type(self) -> str:
        """The `type:` of an OPC UA signal that reads this variable."""
        if self.data_type == "Boolean":
            return "bool"
        if self.data_type in ("String", "LocalizedText", "ByteString", "XmlElement"):
            return "string"
        if self.data_type in _NUMBER_TYPES:
            return "number"
        return "any"


@dataclass
class Options:
    """How to reach the server: the connection options of an `opcua` source."""

    url: str
    security: str | None = None
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    state_dir: Path = Path("./state")


def nsu_form(node_id: ua.NodeId, namespaces: Sequence[str]) -> str:
    """`nsu=URI;...` for a node outside namespace 0, else the plain string form."""
    text = node_id.to_string()
    index = node_id.NamespaceIndex
    if index == 0 or index >= len(namespaces):
        return text
    rest = re.sub(r"^ns=\d+;", "", text)
    return f"nsu={namespaces[index]};{rest}"


def _plain(node_id: Any) -> ua.NodeId:
    """A reference's ExpandedNodeId as the NodeId of this server."""
    return ua.NodeId(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)


def _access(level: Any) -> str:
    if not isinstance(level, int):
        return ""
    read = bool(level & ua.AccessLevel.CurrentRead.mask)
    write = bool(level & ua.AccessLevel.CurrentWrite.mask)
    names = {(True, True): "read/write", (True, False): "read", (False, True): "write"}
    return names.get((read, write), "none")


async def connect(options: Options) -> Client:
    """A connected client, set up as an `opcua` source with these options would be (security, user)."""
    config = OpcuaSource.model_validate(
        {
            "protocol": "opcua",
            "url": options.url,
            "security": options.security,
            "certificate": options.certificate,
            "private_key": options.private_key,
            "server_certificate": options.server_certificate,
            "username": options.username,
            "password": options.password,
            "timeout": options.timeout,
            "signals": {},
        }
    )
    client = await OpcuaConnector("browse", config, state_dir=options.state_dir)._client()
    await client.connect(auto_reconnect=False)  # one walk: a lost connection ends it
    return client


class Walker:
    """Walks the address space below `root`, calling `found` for every node as soon as it is known."""

    def __init__(
        self,
        client: Client,
        *,
        max_references: int = 0,
        depth: int | None = None,
        include_standard: bool = False,
        found: Callable[[Found], None] | None = None,
    ) -> None:
        self.client = client
        self.max_references = max_references
        self.depth = depth
        self.include_standard = include_standard
        self.nodes: list[Found] = []
        self.browse_requests = 0
        self.continuations = 0
        self._found = found
        self._namespaces: list[str] = []
        self._type_names: dict[ua.NodeId, str] = {}
        self._open_points: set[bytes] = set()

    async def walk(self, root: str | None = None) -> list[Found]:
        self._namespaces = await self.client.get_namespace_array()
        start = self._root_id(root)
        seen = {start}
        level: list[tuple[ua.NodeId, tuple[str, ...]]] = [(start, ())]
        try:
            await self._walk_levels(level, seen, root)
        except asyncio.CancelledError:
            raise  # the session is about to be dropped: its continuation points go with it
        except BaseException:
            await self._release()
            raise
        return self.nodes

    async def _walk_levels(
        self, level: list[tuple[ua.NodeId, tuple[str, ...]]], seen: set[ua.NodeId], root: str | None
    ) -> None:
        depth = 0
        while level and (self.depth is None or depth < self.depth):
            depth += 1
            children: list[tuple[ua.NodeId, tuple[str, ...]]] = []
            for at in range(0, len(level), BROWSE_BATCH):
                batch = level[at : at + BROWSE_BATCH]
                refs = await self._browse([node for node, _ in batch])
                found_now: list[Found] = []
                for (parent, path), references in zip(batch, refs, strict=True):
                    for ref in references:
                        node_id = _plain(ref.NodeId)
                        if node_id in seen:
                            continue
                        standard = depth == 1 and root is None and node_id.NamespaceIndex == 0
                        if standard and not self.include_standard:
                            continue  # the Server object and friends: --root i=2253 shows them
                        seen.add(node_id)
                        name = ref.BrowseName
                        item = Found(
                            depth=depth,
                            path=(*path, str(name.Name)),
                            browse_name=f"{name.NamespaceIndex}:{name.Name}",
                            node_id=node_id.to_string(),
                            nsu_id=nsu_form(node_id, self._namespaces),
                            node_class=ua.NodeClass(ref.NodeClass).name,
                            parent=parent.to_string(),
                        )
                        found_now.append(item)
                        if item.node_class == "Object":
                            children.append((node_id, item.path))
                await self._describe([f for f in found_now if f.is_variable])
                for item in found_now:
                    self.nodes.append(item)
                    if self._found is not None:
                        self._found(item)
            level = children

    def _root_id(self, root: str | None) -> ua.NodeId:
        if root is None:
            return ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
        text = root.strip()
        if text.startswith("nsu="):
            uri, _, rest = text[4:].partition(";")
            if uri not in self._namespaces:
                raise ValueError(f"the server has no namespace {uri!r}")
            text = f"ns={self._namespaces.index(uri)};{rest}"
        return ua.NodeId.from_string(text)

    async def _browse(self, nodes: list[ua.NodeId]) -> list[list[Any]]:
        """The forward hierarchical references of every node, every continuation point followed."""
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.RequestedMaxReferencesPerNode = self.max_references
        for node in nodes:
            desc = ua.BrowseDescription()
            desc.NodeId = node
            desc.BrowseDirection = ua.BrowseDirection.Forward
            desc.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
            desc.IncludeSubtypes = True
            desc.NodeClassMask = _CLASS_MASK
            desc.ResultMask = int(ua.BrowseResultMask.All)
            params.NodesToBrowse.append(desc)
        self.browse_requests += 1
        results = await self.client.uaclient.browse(params)
        out: list[list[Any]] = []
        pending: dict[bytes, int] = {}
        for i, result in enumerate(results):
            out.append(list(result.References) if result.StatusCode.is_good() else [])
            if result.ContinuationPoint:
                pending[result.ContinuationPoint] = i
                self._open_points.add(result.ContinuationPoint)
        while pending:
            nxt = ua.BrowseNextParameters()
            nxt.ReleaseContinuationPoints = False
            nxt.ContinuationPoints = list(pending)
            self.browse_requests += 1
            self.continuations += len(pending)
            answers = await self.client.uaclient.browse_next(nxt)
            following: dict[bytes, int] = {}
            for point, result in zip(list(pending), answers, strict=True):
                self._open_points.discard(point)
                index = pending[point]
                if result.StatusCode.is_good():
                    out[index].extend(result.References)
                if result.ContinuationPoint:
                    following[result.ContinuationPoint] = index
                    self._open_points.add(result.ContinuationPoint)
            pending = following
        return out

    async def _release(self) -> None:
        """Free the server's continuation points of a walk that stopped early (Ctrl-C, an error)."""
        if not self._open_points:
            return
        params = ua.BrowseNextParameters()
        params.ReleaseContinuationPoints = True
        params.ContinuationPoints = list(self._open_points)
        self._open_points.clear()
        with contextlib.suppress(Exception):
            await self.client.uaclient.browse_next(params)

    async def _describe(self, variables: list[Found]) -> None:
        """Data type, access level and value of every variable, in batches."""
        attrs = (AttributeIds.DataType, AttributeIds.UserAccessLevel, AttributeIds.Value)
        for at in range(0, len(variables), READ_BATCH):
            batch = variables[at : at + READ_BATCH]
            params = ua.ReadParameters()
            for item in batch:
                for attr in attrs:
                    rv = ua.ReadValueId()
                    rv.NodeId = ua.NodeId.from_string(item.node_id)
                    rv.AttributeId = attr
                    params.NodesToRead.append(rv)
            values = await self.client.uaclient.read(params)
            for i, item in enumerate(batch):
                dtype, access, value = values[3 * i : 3 * i + 3]
                if dtype.Value is not None and (dtype.StatusCode is None or dtype.StatusCode.is_good()):
                    item.data_type = await self._type_name(dtype.Value.Value)
                if access.Value is not None and (access.StatusCode is None or access.StatusCode.is_good()):
                    item.access = _access(access.Value.Value)
                status = value.StatusCode
                if status is not None and not status.is_good():
                    item.status = status.name
                else:
                    item.value = value.Value.Value if value.Value is not None else None

    async def _type_name(self, type_id: Any) -> str:
        if not isinstance(type_id, ua.NodeId):
            return ""
        if type_id in self._type_names:
            return self._type_names[type_id]
        name = ""
        if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int):
            name = ObjectIdNames.get(type_id.Identifier, "")
        if not name:
            try:
                browse_name = await self.client.get_node(type_id).read_browse_name()
                name = str(browse_name.Name)
            except (UaError, OSError, TimeoutError):
                name = type_id.to_string()
        self._type_names[type_id] = name
        return name


async def browse_server(
    options: Options,
    *,
    root: str | None = None,
    depth: int | None = None,
    max_references: int = 0,
    include_standard: bool = False,
    found: Callable[[Found], None] | None = None,
) -> Walker:
    """Connect, walk, disconnect. The walker keeps what it found even when the walk is cancelled."""
    client = await connect(options)
    walker = Walker(
        client, max_references=max_references, depth=depth, include_standard=include_standard, found=found
    )
    try:
        await walker.walk(root)
    except asyncio.CancelledError:
        client.disconnect_socket()  # Ctrl-C: at once, not after a server that may be stuck answers
        raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), options.timeout)
    return walker
