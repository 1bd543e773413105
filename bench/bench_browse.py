"""`mw-gateway browse` speed: nodes per second walking an asyncua server of ~2,100 variables in nested folders
that pages its answers (20 references per node and answer: continuation points), values, data types and
access levels included. Client and server share this process (and its one core): a lower bound."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

import pytest

from gateway.sources.opcua_browse import Options, browse_server
from tests.tools.opcua_plant import paging, run_plant

Row = tuple[str, str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _walks(runs: int = 3) -> tuple[int, int, list[float]]:
    with pytest.MonkeyPatch.context() as monkeypatch, paging(monkeypatch, limit=20):
        async with run_plant(_free_port(), lines=8, machines=5, sensors_per_machine=50) as plant:
            times: list[float] = []
            nodes = requests = 0
            for _ in range(runs):
                t0 = time.perf_counter()
                walker = await browse_server(Options(plant.url))
                times.append(time.perf_counter() - t0)
                nodes, requests = len(walker.nodes), walker.browse_requests
            assert nodes == plant.variables + plant.folders
            return nodes, requests, times


def run() -> list[Row]:
    nodes, requests, times = asyncio.run(_walks())
    median = statistics.median(times)
    return [
        (
            "browse nodes/s",
            f"{nodes / median:,.0f}",
            f"{nodes:,} nodes in {median:.2f}s (median of {len(times)}), {requests} "
            "Browse + BrowseNext requests, server pages of 20 references, client and server in one process",
        )
    ]


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
