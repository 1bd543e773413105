"""HTTP edge limits on loopback (issue 18.10): idle-socket floods, slow headers, slow bodies, the body budget,
accept() errors logged once, the connection limit sized below RLIMIT_NOFILE. Counts and times are bounded;
memory is measured in the torture `edges` campaign, not asserted here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.config import HttpSection
from gateway.runtime.http import http_server
from gateway.web.server import build_app
from tests.web.edge_server import spawn
from tests.web.fakes import fake

NOFILE = 256  # the server process's descriptor limit: 1,100 sockets in the report, 400 here
FLOOD = 400


@contextlib.asynccontextmanager
async def edge_server(port: int, **settings: Any) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    proc = spawn(port, NOFILE, settings)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line.strip() == "ready", line
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait(30)


async def open_idle(port: int, n: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
    return writers


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()


async def test_healthz_answers_through_a_flood_of_idle_sockets(free_port: Callable[[], int]) -> None:
    """1,100 idle sockets made /healthz hang (the process was out of descriptors) and logged a traceback per
    accept(). Now the longest-idle connections are closed to make room, below RLIMIT_NOFILE."""
    port = free_port()
    async with edge_server(port, header_timeout=60) as (url, proc):
        writers = await open_idle(port, FLOOD)
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                r = await client.get(url + "/healthz")
            assert r.status_code == 200
        finally:
            close_all(writers)
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    assert err.count("HTTP connection limit reached") == 1  # once per episode, not per connection


async def test_a_slow_request_head_is_cut_off(free_port: Callable[[], int]) -> None:
    port = free_port()
    async with edge_server(port, header_timeout=0.5) as _:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")  # never finished
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 20) == b""  # closed by the server (before: never)
        writer.close()


async def test_a_slow_body_is_cut_off(free_port: Callable[[], int]) -> None:
    port = free_port()
    async with edge_server(port, body_timeout=0.5) as (url, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhooks/mobility-work HTTP/1.1\r\nHost: gateway\r\nContent-Length: 500000\r\n\r\n"
            + b"{" * 1000
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 20)
        assert b" 200 " not in answer.split(b"\r\n", 1)[0]
        writer.close()
        async with httpx.AsyncClient(timeout=20) as client:
            assert (await client.get(url + "/healthz")).status_code == 200


async def test_healthz_answers_while_every_slot_holds_a_slow_body(free_port: Callable[[], int]) -> None:
    """Slow bodies hold their connection for body_timeout: the longest-receiving one makes room."""
    port = free_port()
    async with edge_server(port, max_connections=8, body_timeout=60) as (url, _):
        held = await open_idle(port, 20)
        for w in held:
            w.write(b"POST /webhooks/mobility-work HTTP/1.1\r\nHost: g\r\nContent-Length: 9000\r\n\r\n{")
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                assert (await client.get(url + "/healthz")).status_code == 200
        finally:
            close_all(held)


@contextlib.asynccontextmanager
async def in_process(port: int, http: HttpSection) -> AsyncIterator[Any]:
    f = fake()
    f.http = http
    app = build_app(f.deps())
    server = http_server(app, http, beat=lambda: None)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield app
    finally:
        server.should_exit = True
        await task


async def test_bodies_held_at_once_are_bounded(free_port: Callable[[], int]) -> None:
    """300 slow 1 MB bodies took RSS from 54 to 370 MB: each one buffered (twice) whatever their count."""
    port = free_port()
    http = HttpSection(
        listen=f"127.0.0.1:{port}", max_body_bytes=16384, max_buffered_bytes=32768, body_timeout=60
    )
    async with in_process(port, http) as app:
        budget = app.state.body_budget
        held = []
        for n in (1, 2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /webhooks/mobility-work HTTP/1.1\r\nHost: g\r\nContent-Length: 16000\r\n\r\n"
                + b" " * 15000
            )
            await writer.drain()
            held.append((reader, writer))
            for _ in range(2000):
                if budget.held >= 15000 * n:
                    break
                await asyncio.sleep(0.005)
            assert budget.held == 15000 * n
        async with httpx.AsyncClient(timeout=20) as client:
            r = await client.post(
                f"http://127.0.0.1:{port}/webhooks/mobility-work",
                content=b'{"_event": "X"' + b" " * 9000 + b"}",
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            for _, writer in held:
                writer.close()
            for _ in range(2000):
                if budget.held == 0:
                    break
                await asyncio.sleep(0.005)
            assert budget.held == 0  # released when the slow senders went
            r = await client.post(
                f"http://127.0.0.1:{port}/webhooks/mobility-work", content=b'{"_event": "X"}'
            )
            assert r.status_code == 200


def test_accept_errors_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.web.limits import AcceptErrorLog

    now = [1000.0]
    handler = AcceptErrorLog(clock=lambda: now[0], quiet_s=60)
    loop = asyncio.new_event_loop()
    try:
        handler.install(loop)
        context = {"message": AcceptErrorLog.MESSAGE, "exception": OSError(24, "Too many open files")}
        with caplog.at_level(logging.INFO, logger="gateway.web.limits"):
            for _ in range(500):  # asyncio retries every second; 122 MB of tracebacks in 30 s before
                loop.call_exception_handler(context)
                now[0] += 0.1
            now[0] += 61  # quiet for a minute: the next one is a new episode
            loop.call_exception_handler(context)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and all(r.exc_info is None for r in errors)
        assert "Too many open files" in errors[0].getMessage()
        assert any("499 more" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    finally:
        loop.close()


def test_other_loop_errors_still_reach_the_previous_handler() -> None:
    from gateway.web.limits import AcceptErrorLog

    seen: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        AcceptErrorLog(clock=lambda: 0.0).install(loop)
        loop.call_exception_handler({"message": "something else"})
        assert [c["message"] for c in seen] == ["something else"]
    finally:
        loop.close()


def test_the_connection_limit_stays_below_the_descriptor_limit() -> None:
    from gateway.web.limits import effective_max_connections

    assert effective_max_connections(256, 1024) == 256
    assert effective_max_connections(256, 256) == 128  # 128 descriptors kept for SQLite, sources, the CMMS
    assert effective_max_connections(256, 100) == 4
