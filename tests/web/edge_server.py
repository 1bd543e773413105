"""The gateway's HTTP server (gateway/runtime/http.py over the real app, fake views behind it) in a process
of its own with a small RLIMIT_NOFILE, for the connection-flood tests and the torture `edges` campaign.

    python -m tests.web.edge_server PORT NOFILE '{"max_connections": 64, ...}'

Prints `ready` on stdout once serving; runs until killed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.config import HttpSection
from gateway.runtime.http import http_server
from gateway.web.server import build_app
from tests.web.fakes import fake

ROOT = Path(__file__).resolve().parents[2]


def spawn(port: int, nofile: int, settings: dict[str, Any]) -> subprocess.Popen[str]:
    """This module as a server process on `port` with `nofile` descriptors; it prints `ready` once serving."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.web.edge_server", str(port), str(nofile), json.dumps(settings)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def main(port: int, settings: dict[str, object]) -> None:
    f = fake()
    f.http = HttpSection(listen=f"127.0.0.1:{port}", **settings)  # type: ignore[arg-type]
    server = http_server(build_app(f.deps()), f.http, beat=lambda: None)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    nofile = int(sys.argv[2])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))  # the hard one too: nothing can raise it
    asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
