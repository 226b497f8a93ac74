"""A request body that stalls is answered 408 within ``limits.body_read_timeout_s``: through
the real process over raw sockets.

Before the fix a small body with a Content-Length (up to 64 KiB, read whole before the
upstream exchange) was read with no timeout at all: ``Content-Length: 500`` and 10 bytes,
then silence, held the connection and one of the route's ``max_concurrency`` slots for
good — four such connections made every other request on a ``max_concurrency: 4`` route a
503. A streamed body (larger, or chunked) was only bounded by the backend's whole-exchange
timeout. Now the proxy waits at most ``body_read_timeout_s`` for each next piece of a body
(nginx's ``client_body_timeout``), either way, and the stall is the client's: 408
``client_timeout``, the connection closed, no variant charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from proxy.config_load import load_settings
from proxy.errors import ConfigError
from tests.harness import ProxyProcess, proxy_config, running_proxy
from tests.security.raw_backend import RawBackend, raw_backend

TIMEOUT_S = 0.5
ANSWER_WITHIN_S = 10.0  # 20 x the configured timeout; the old code never answered


@dataclass
class Setup:
    proxy: ProxyProcess
    backend: RawBackend


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with raw_backend(name="model") as backend:
        cfg = proxy_config({"model": [backend.url]}, [
            {"name": "exp", "match": {"path_prefix": "/exp"}, "variants": {"a": "model"},
             "split": {"weights": {"a": 1}}, "max_concurrency": 4}],
            limits={"body_read_timeout_s": TIMEOUT_S})
        # The backend's own timeout is far longer: only the body timeout can answer in time.
        cfg["backends"]["model"]["timeout_s"] = 300
        async with running_proxy(tmp_path, cfg) as p:
            yield Setup(p, backend)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@contextlib.asynccontextmanager
async def connection(p: ProxyProcess) -> AsyncIterator[
        tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, _, port = p.data_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def answer(reader: asyncio.StreamReader) -> Answer:
    """The response to a request whose body the client never finished sending."""
    async with asyncio.timeout(ANSWER_WITHIN_S):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers["content-length"]))
    return Answer(int(head[0].split(" ")[1]), headers, body)


async def stall(p: ProxyProcess, head: bytes, sent: bytes) -> Answer:
    async with connection(p) as (reader, writer):
        writer.write(head + sent)
        await writer.drain()
        return await answer(reader)


async def counter(p: ProxyProcess, pattern: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(p.admin_url + "/metrics") as r:
        text = await r.text()
    return sum(float(m.group(1)) for m in re.finditer(pattern + r" (\S+)", text))


def assert_client_timeout(a: Answer) -> None:
    assert a.status == 408, a
    assert json.loads(a.body)["error"] == "client_timeout", a
    assert a.headers.get("connection", "").lower() == "close", a


async def test_a_stalled_small_body_is_408_and_frees_its_concurrency_slot(
    setup: Setup
) -> None:
    p = setup.proxy
    head = b"POST /exp/p HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\n"
    # As many stalled bodies as the route has slots: before the fix none was ever answered
    # and every other request was refused 503 from then on.
    answers = await asyncio.gather(*(stall(p, head, b"x" * 10) for _ in range(4)))
    for a in answers:
        assert_client_timeout(a)
    assert setup.backend.seen == []  # a small body goes upstream only once it is whole
    # Every slot is free again: requests are served, none refused.
    async with aiohttp.ClientSession() as http:
        for i in range(6):
            async with http.post(p.data_url + f"/exp/p?{i}", json={"i": i}) as r:
                assert r.status == 200, await r.text()
    assert await counter(p, r'splitway_overloaded_requests_total\{route="exp"\}') == 0
    # Counted with their real class, charged to nobody: no upstream error either.
    assert await counter(p, r'splitway_requests_total\{code="4xx",route="exp"[^}]*\}') == 4
    assert await counter(p, r'splitway_upstream_errors_total\{[^}]*\}') == 0


@pytest.mark.parametrize("head,sent", [
    (b"POST /exp/p HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n", b"x" * 10),
    (b"POST /exp/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"a\r\n0123456789\r\n"),
], ids=["content-length-streamed", "chunked"])
async def test_a_stalled_streamed_body_is_408_within_the_body_timeout(
    setup: Setup, head: bytes, sent: bytes
) -> None:
    """Bodies that stream upstream as they arrive: before the fix only the backend's
    whole-exchange timeout (here 300 s) ended the wait."""
    assert_client_timeout(await stall(setup.proxy, head, sent))
    assert await counter(setup.proxy, r'splitway_upstream_errors_total\{[^}]*\}') == 0


async def test_a_slow_body_that_keeps_coming_is_served(setup: Setup) -> None:
    """The timeout bounds the wait for each next piece, not the whole upload: ten pieces
    0.15 s apart (1.5 s in all, three times the timeout) are a request like any other."""
    pieces = [b"%02d-456789" % i for i in range(10)]
    async with connection(setup.proxy) as (reader, writer):
        writer.write(b"POST /exp/p HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % sum(map(len, pieces)))
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(TIMEOUT_S * 0.3)  # the pace of the upload under test
        a = await answer(reader)
    assert a.status == 200, a
    assert setup.backend.seen[-1].body == b"".join(pieces)


def test_the_body_timeout_is_validated() -> None:
    base = ("version: 1\nbackends: {a: {endpoints: [http://127.0.0.1:1]}}\n"
            "routes: [{name: r, variants: {v: a}, split: {weights: {v: 1}}}]\n")
    assert load_settings(base).limits.body_read_timeout_s == 30
    with pytest.raises(ConfigError, match="body_read_timeout_s"):
        load_settings(base + "limits: {body_read_timeout_s: 0}\n")
