"""Connection limits (``limits:`` in the config), through the real process over raw sockets.

Before the fix a connection that sent nothing, or a header byte every few seconds, was held
for good (aiohttp closes only idle keep-alive connections, after an hour); now a request's
headers must be complete within ``header_read_timeout_s`` (408, or a silent close if nothing
was sent), an idle keep-alive connection goes after ``keepalive_timeout_s``, and a head over
``max_header_bytes`` is a 400 — on the data and the admin listener alike
(:mod:`proxy.connection`). Every wait is on the condition (the connection closed) with a
deadline; the only sleeps are the slow client's own pauses between bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import StartServer
from tests.harness import ProxyProcess, proxy_config, running_proxy

LIMITS = {"header_read_timeout_s": 1.0, "keepalive_timeout_s": 2.0, "max_header_bytes": 16384}
DEADLINE = 15.0  # far above every limit: reaching it means the connection was held
GET = b"GET /predict HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def proxy(tmp_path: Path, sample_servers: StartServer) -> AsyncIterator[ProxyProcess]:
    v1 = await sample_servers("v1")
    cfg = proxy_config({"v1": [v1.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
         "split": {"weights": {"a": 1}}}], limits=LIMITS)
    async with running_proxy(tmp_path, cfg) as p:
        yield p


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took; fails the
    test at :data:`DEADLINE` if the server holds the connection."""
    start = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        data = await reader.read()
    return data, time.monotonic() - start


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


def warnings(p: ProxyProcess, what: str) -> list[str]:
    return [line for line in p.log if f"WARNING splitway.http: {what} from " in line]


@pytest.mark.parametrize("listener", ["data", "admin"])
async def test_a_connection_that_sends_nothing_is_closed_silently(
    proxy: ProxyProcess, listener: str
) -> None:
    async with connect(proxy.data_url if listener == "data" else proxy.admin_url) as (r, _):
        data, took = await until_closed(r)
    assert data == b""  # no unsolicited 408 on a connection that never asked anything
    assert took >= LIMITS["header_read_timeout_s"] * 0.9


@pytest.mark.parametrize("listener", ["data", "admin"])
async def test_slow_headers_get_408_and_the_connection_closes(
    proxy: ProxyProcess, listener: str
) -> None:
    """Slowloris: one header byte every 0.2 s never completes a head; the deadline is for
    the whole head, so the trickle does not extend it."""
    url = proxy.data_url if listener == "data" else proxy.admin_url
    async with connect(url) as (r, w):
        w.write(b"GET /healthz HTTP/1.1\r\n")

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                for _ in range(10_000):
                    w.write(b"X")
                    await w.drain()
                    await asyncio.sleep(0.2)

        sender = asyncio.ensure_future(trickle())
        try:
            data, took = await until_closed(r)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", data
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "client_timeout" and "not complete within 1s" in body["detail"]
    assert LIMITS["header_read_timeout_s"] * 0.9 <= took < DEADLINE
    async with asyncio.timeout(10):
        while not warnings(proxy, "slow request headers"):
            await asyncio.sleep(0.05)


async def test_keepalive_idle_closes_and_each_request_gets_its_own_deadline(
    proxy: ProxyProcess,
) -> None:
    async with connect(proxy.data_url) as (r, w):
        # a first request, then an idle keep-alive connection: closed after keepalive_timeout_s
        w.write(GET)
        assert (await response(r))[0] == 200
        data, took = await until_closed(r)
        assert data == b"" and took >= LIMITS["keepalive_timeout_s"] * 0.9

    async with connect(proxy.data_url) as (r, w):
        # two prompt requests, then the start of a third that never completes: 408
        for _ in range(2):
            w.write(GET)
            assert (await response(r))[0] == 200
        w.write(b"GET /predict HTTP/1.1\r\nHost: x\r\n")
        data, took = await until_closed(r)
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert took < LIMITS["keepalive_timeout_s"]  # the head deadline, not the idle one


PARTIAL = b"GET /predict HTTP/1.1\r\nHo"  # the start of a head that never completes


@pytest.mark.parametrize(("listener", "first"), [
    ("data", GET),
    ("admin", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("data", b"POST /_sample/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n\n\r\n\r\nx"),
    ("data", b"POST /_sample/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"3\r\nabc\r\n0\r\n\r\n"),
], ids=["data", "admin", "data-content-length", "data-chunked"])
async def test_a_pipelined_partial_head_gets_the_header_deadline(
    proxy: ProxyProcess, listener: str, first: bytes
) -> None:
    """A request and the start of the next in one write: the partial head is held to
    header_read_timeout_s (then 408), not to the keep-alive timeout."""
    async with connect(proxy.data_url if listener == "data" else proxy.admin_url) as (r, w):
        w.write(first + PARTIAL)
        assert (await response(r))[0] == 200
        data, took = await until_closed(r)
    assert data.startswith(b"HTTP/1.1 408 "), data  # a silent close: the keep-alive timeout
    assert b"not complete within 1s" in data
    assert took < LIMITS["keepalive_timeout_s"]


async def test_pipelined_requests_are_all_answered_and_the_connection_stays_open(
    proxy: ProxyProcess,
) -> None:
    """Complete pipelined requests (and blank lines between them) start no head deadline:
    each is answered, then the connection idles until the keep-alive timeout, silently."""
    async with connect(proxy.data_url) as (r, w):
        w.write(GET + GET + b"\r\n" + GET)
        for _ in range(3):
            assert (await response(r))[0] == 200
        data, took = await until_closed(r)
    assert data == b""
    assert took >= LIMITS["keepalive_timeout_s"] * 0.9


async def test_a_slow_body_is_not_cut_by_the_header_deadline(proxy: ProxyProcess) -> None:
    """The deadline is for headers only: a body may take longer (the upstream timeout
    bounds it)."""
    pieces = [b"x" * 10] * 6
    async with connect(proxy.data_url) as (r, w):
        w.write(b"POST /_sample/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
        for piece in pieces:  # 1.5 s in all, past the 1 s header deadline
            await asyncio.sleep(0.25)
            w.write(piece)
        status, _, body = await response(r)
    assert status == 200, body
    assert json.loads(body)["bytes"] == 60


async def test_headers_over_max_header_bytes_are_refused(proxy: ProxyProcess) -> None:
    pads = [b"X-Pad-%d: %s\r\n" % (i, b"a" * 4000) for i in range(5)]
    big = b"".join(pads)  # 20 KB
    async with connect(proxy.data_url) as (r, w):  # all at once: one read holds the head
        w.write(b"GET /predict HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        status, _, body = await response(r)
    assert status == 400 and "request headers over 16384 bytes" in json.loads(body)["detail"]

    async with connect(proxy.data_url) as (r, w):  # in pieces: refused before it completes
        w.write(b"GET /predict HTTP/1.1\r\nHost: x\r\n")
        for pad in pads:
            w.write(pad)
            await w.drain()
        data, _ = await until_closed(r)
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"request headers over 16384 bytes" in data

    async with connect(proxy.data_url) as (r, w):  # under the limit: served
        w.write(b"GET /predict HTTP/1.1\r\nHost: x\r\n" + b"".join(pads[:3]) + b"\r\n")
        assert (await response(r))[0] == 200


def test_limits_are_validated(tmp_path: Path) -> None:
    from proxy.config_load import load_settings
    from proxy.errors import ConfigError

    base = ("version: 1\nbackends: {a: {endpoints: ['http://127.0.0.1:1']}}\n"
            "routes: [{name: r, variants: {s: a}, split: {weights: {s: 1}}}]\n")
    settings = load_settings(base)
    assert settings.limits.header_read_timeout_s == 10 and settings.limits.keepalive_timeout_s == 75
    with pytest.raises(ConfigError) as info:
        load_settings(base + "limits: {header_read_timeout_s: 0, max_header_bytes: 10, x: 1}\n")
    got: Any = sorted(p.path for p in info.value.problems)
    assert got == ["limits.header_read_timeout_s", "limits.max_header_bytes", "limits.x"]
