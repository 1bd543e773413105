"""A real asyncua server holding a plant of more than 1,000 variables in nested folders, with paging.

asyncua's server returns every reference of a node at once and does not implement BrowseNext; real servers
(Siemens, Kepware, node-opcua...) cap the references per node and hand out continuation points. `paging()`
adds exactly that to the asyncua server of the test: each Browse result is cut to the smaller of the
client's RequestedMaxReferencesPerNode and the server's own limit, the rest kept behind a continuation point
that BrowseNext follows (or releases). `gate` can hold BrowseNext answers (for the Ctrl-C test).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncua import Server, ua
from asyncua.common.utils import Buffer
from asyncua.server.internal_session import InternalSession
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import struct_from_binary

NAMESPACE = "urn:mw-gateway:test:plant"
LINES, MACHINES, SENSORS = 4, 5, 50  # 4 × 5 × (50 + 3) = 1,060 variables


@dataclass
class Paging:
    limit: int  # the server's own maximum of references per node and answer
    points: dict[bytes, list[Any]] = field(default_factory=dict)
    browse_next_calls: int = 0
    hold_after: int | None = None  # BrowseNext answers after this many wait for `gate`
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def cut(self, result: ua.BrowseResult, requested: int) -> None:
        limit = min(requested, self.limit) if requested else self.limit
        if len(result.References) > limit:
            point = f"cp-{next(self._ids)}".encode()
            self.points[point] = result.References[limit:]
            result.References = result.References[:limit]
            result.ContinuationPoint = point


@contextlib.contextmanager
def paging(monkeypatch: pytest.MonkeyPatch, limit: int) -> Any:
    state = Paging(limit)
    browse = InternalSession.browse

    async def paged_browse(self: InternalSession, params: ua.BrowseParameters) -> list[ua.BrowseResult]:
        results = await browse(self, params)
        for result in results:
            state.cut(result, params.RequestedMaxReferencesPerNode)
        return results

    async def browse_next(self: InternalSession, params: ua.BrowseNextParameters) -> list[ua.BrowseResult]:
        out = []
        if not params.ReleaseContinuationPoints:
            state.browse_next_calls += 1
            if state.hold_after is not None and state.browse_next_calls > state.hold_after:
                state.held.set()
                await state.gate.wait()
        for point in params.ContinuationPoints:
            result = ua.BrowseResult()
            rest = state.points.pop(point, None)
            if rest is None:
                result.StatusCode = ua.StatusCode(ua.StatusCodes.BadContinuationPointInvalid)
            elif not params.ReleaseContinuationPoints:
                result.References = rest
                state.cut(result, 0)
            out.append(result)
        return out

    process = UaProcessor._process_message

    async def process_message(
        self: UaProcessor, typeid: Any, requesthdr: Any, seqhdr: Any, body: Buffer
    ) -> Any:
        if typeid == ua.NodeId(ObjectIds.BrowseNextRequest_Encoding_DefaultBinary) and self.session:
            params = struct_from_binary(ua.BrowseNextParameters, body)
            response = ua.BrowseNextResponse()
            response.Parameters.Results = await self.session.browse_next(params)
            self.send_response(requesthdr.RequestHandle, seqhdr, response)
            return True
        return await process(self, typeid, requesthdr, seqhdr, body)

    monkeypatch.setattr(InternalSession, "browse", paged_browse)
    monkeypatch.setattr(InternalSession, "browse_next", browse_next)
    monkeypatch.setattr(UaProcessor, "_process_message", process_message)
    yield state


@dataclass
class Plant:
    url: str
    variables: int
    folders: int


@contextlib.asynccontextmanager
async def run_plant(
    port: int, *, lines: int = LINES, machines: int = MACHINES, sensors_per_machine: int = SENSORS
) -> AsyncIterator[Plant]:
    """Objects/Plant/Line1..4/Machine1..5/{Sensors/Sensor01..50, Temperature, Running, Recipe}."""
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plant")
    ns = await server.register_namespace(NAMESPACE)
    plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns))
    variables, folders = 0, 1
    for line in range(1, lines + 1):
        lf = await plant.add_folder(ua.NodeId(f"L{line}", ns), ua.QualifiedName(f"Line{line}", ns))
        folders += 1
        for machine in range(1, machines + 1):
            key = f"L{line}.M{machine}"
            mo = await lf.add_object(ua.NodeId(key, ns), ua.QualifiedName(f"Machine{machine}", ns))
            sensors = await mo.add_folder(ua.NodeId(f"{key}.Sensors", ns), ua.QualifiedName("Sensors", ns))
            folders += 2
            for s in range(1, sensors_per_machine + 1):
                node = ua.NodeId(f"{key}.S{s:02d}", ns)
                await sensors.add_variable(node, ua.QualifiedName(f"Sensor{s:02d}", ns), float(s))
            temp = await mo.add_variable(
                ua.NodeId(f"{key}.Temp", ns), ua.QualifiedName("Temperature", ns), 20.0 + line
            )
            await temp.set_writable()
            await mo.add_variable(ua.NodeId(f"{key}.Run", ns), ua.QualifiedName("Running", ns), True)
            await mo.add_variable(ua.NodeId(f"{key}.Recipe", ns), ua.QualifiedName("Recipe", ns), "PART-A")
            variables += sensors_per_machine + 3
    await server.start()
    try:
        yield Plant(f"opc.tcp://127.0.0.1:{port}/plant", variables, folders)
    finally:
        await server.stop()
