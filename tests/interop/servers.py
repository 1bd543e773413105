"""Independent servers on loopback for the interop tests: a libmodbus Modbus TCP server (C, built here from
tests/interop/modbus_server.c against Debian's libmodbus-dev) and a node-opcua OPC UA server (JavaScript,
tests/interop/opcua_server.js, node-opcua installed into tests/interop/node_modules by
`make interop-deps`, which `make test` runs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
START_TIMEOUT_S = 60.0  # a guard against a hung start only (node-opcua creates its certificates at first run)


def libmodbus_server_binary() -> Path:
    """tests/interop/build/modbus_server, compiled when missing or older than its source."""
    source = HERE / "modbus_server.c"
    binary = BUILD / "modbus_server"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libmodbus"], capture_output=True, text=True, check=False
    )
    if flags.returncode != 0 or shutil.which("gcc") is None:
        raise RuntimeError(
            "the libmodbus interop server needs gcc and libmodbus-dev: run scripts/ensure-system-deps.sh"
        )
    BUILD.mkdir(exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}")
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", str(partial), str(source), *flags.stdout.split()], check=True
    )
    partial.replace(binary)
    return binary


class Process:
    """A server process that prints a line containing `ready` once it serves; kill() and start() again."""

    def __init__(self, argv: Sequence[str], ready: str, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.ready = ready
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        async def wait_ready() -> None:
            while True:
                line = (await stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"{self.argv[0]} ended before serving: {''.join(self.output)}")
                self.output.append(line)
                if self.ready in line:
                    return

        await asyncio.wait_for(wait_ready(), START_TIMEOUT_S)
        self._drain = asyncio.create_task(self._read_rest(stdout))

    async def _read_rest(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            self.output.append(line.decode(errors="replace"))

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        self.proc = None


@contextlib.asynccontextmanager
async def libmodbus_server(port: int, *options: str) -> AsyncIterator[Process]:
    server = Process([str(libmodbus_server_binary()), str(port), *options], ready="listening")
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


def node_opcua_ready() -> Path:
    """The node-opcua package folder; a clear error when `make interop-deps` was not run."""
    module = HERE / "node_modules" / "node-opcua"
    if not module.exists() or shutil.which("node") is None:
        raise RuntimeError("node-opcua is not installed: run make interop-deps (make test does)")
    return module


@contextlib.asynccontextmanager
async def node_opcua_server(port: int, *options: str) -> AsyncIterator[Process]:
    node_opcua_ready()
    server = Process(
        ["node", str(HERE / "opcua_server.js"), str(port), *options], ready="listening", cwd=HERE
    )
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
