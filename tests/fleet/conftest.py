"""A real 3-node NATS cluster with JetStream on loopback, started once for the fleet tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sim.nats_cluster import NatsCluster


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(Path(tmp_path_factory.mktemp("nats")), nodes_count=3).start()
    try:
        asyncio.run(cluster.wait_ready())
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A cluster of its own, for a test that kills nodes."""
    cluster = NatsCluster(tmp_path / "nats", nodes_count=3).start()
    try:
        asyncio.run(cluster.wait_ready())
        yield cluster
    finally:
        cluster.stop()
