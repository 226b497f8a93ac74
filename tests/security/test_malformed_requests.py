"""Malformed requests, sent on raw sockets to the real process.

Before the fix each one logged an ERROR with a traceback (aiohttp's "Error handling
request"), and a bad chunk arriving after the headers left the request waiting for the rest
of its body until the upstream timeout (a 504, charged to the variant). Now each gets a JSON
400, and one WARNING line, rate-limited (``limits.malformed_log_per_s``), never a traceback
(:mod:`proxy.connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import StartServer
from tests.harness import ProxyProcess, proxy_config, running_proxy

H = b"Host: x\r\n"
PROBES: dict[str, bytes] = {
    "bad-chunk-size": b"POST /p HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "cl-and-te": (b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "oversized-header": b"GET /p HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "invalid-method": b"G@T /p HTTP/1.1\r\n" + H + b"\r\n",
    "bad-version": b"GET /p HTTP/9.9\r\n" + H + b"\r\n",
    "nul-in-header": b"GET /p HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "space-before-colon": b"GET /p HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n",
    "tls-on-plain-port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
}


@pytest.fixture
async def sample(sample_servers: StartServer) -> str:
    return (await sample_servers("v1")).url


@contextlib.asynccontextmanager
async def proxy_with(tmp_path: Path, backend: str, **limits: float
                     ) -> AsyncIterator[ProxyProcess]:
    cfg = proxy_config({"v1": [backend]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
         "split": {"weights": {"a": 1}}}], limits=limits)
    async with running_proxy(tmp_path, cfg) as p:
        yield p


async def exchange(url: str, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` (``pause`` seconds apart: the client's own pacing), read to EOF."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(15):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def status_of(data: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert m, data[:200]
    return int(m.group(1))


def warned(p: ProxyProcess) -> list[str]:
    return [x for x in p.log if "WARNING splitway.http: malformed request" in x]


async def until(p: ProxyProcess, pred: str, count: int) -> None:
    async with asyncio.timeout(10):
        while sum(pred in x for x in p.log) < count:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("listener", ["data", "admin"])
async def test_each_malformed_request_is_a_400_and_one_warning_line(
    tmp_path: Path, sample: str, listener: str
) -> None:
    async with proxy_with(tmp_path, sample) as p:
        url = p.data_url if listener == "data" else p.admin_url
        for name, probe in PROBES.items():
            data = await exchange(url, probe)
            assert status_of(data) == 400, (name, data[:300])
            body = json.loads(data.partition(b"\r\n\r\n")[2])
            assert body["error"] == "bad_request" and body["detail"].startswith(
                "malformed request: "), (name, body)
            assert "\n" not in body["detail"] and "aaaa" not in body["detail"], body
        await until(p, "malformed request from ", len(PROBES))
        lines = warned(p)
    assert len(lines) == len(PROBES), lines
    assert all(re.search(r"malformed request from 127\.0\.0\.1: .+ \(400\)$", x) for x in lines)
    assert not [x for x in p.log if "Traceback" in x or " ERROR " in x], p.log


async def test_a_bad_chunk_after_the_headers_is_a_prompt_400(
    tmp_path: Path, sample: str
) -> None:
    """The headers are accepted and the request forwarded; the bad chunk that follows fails
    the body at once (before: the request waited out the upstream timeout, then 504)."""
    async with proxy_with(tmp_path, sample) as p:
        head = b"POST /_sample/upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        loop = asyncio.get_running_loop()
        start = loop.time()
        data = await exchange(p.data_url, head + b"5\r\nhello\r\n", b"zz\r\n0\r\n\r\n",
                              pause=0.3)
        took = loop.time() - start
        assert status_of(data) == 400, data[:300]
        assert data.count(b"HTTP/1.") == 1, data  # one answer, not a second 400 after it
        assert took < 4, took  # the backends' timeout_s is 5
        await until(p, "malformed request body from ", 1)

        # the same after an answer that did not read the body (the admin API's 405): the
        # unread body is drained quietly, the connection closes
        head = (b"PUT /api/v1/reload HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n")
        data = await exchange(p.admin_url, head, b"zz\r\n0\r\n\r\n", pause=0.3)
        assert status_of(data) == 405 and data.count(b"HTTP/1.") == 1, data
        await until(p, "malformed request body from ", 2)
    assert not [x for x in p.log if "Traceback" in x or " ERROR " in x], p.log


async def test_warnings_are_rate_limited_with_a_count_of_the_rest(
    tmp_path: Path, sample: str
) -> None:
    async with proxy_with(tmp_path, sample, malformed_log_per_s=2) as p:
        sent = 12
        await asyncio.gather(*(exchange(p.data_url, PROBES["bad-version"])
                               for _ in range(sent)))
        suppressed = re.compile(r"suppressed (\d+) more such warnings \(over 2 a second\)")

        def accounted() -> int:
            return len(warned(p)) + sum(int(m.group(1)) for x in p.log
                                        if (m := suppressed.search(x)))

        async with asyncio.timeout(10):  # the summary comes once the second is over
            while accounted() < sent:
                await asyncio.sleep(0.05)
        assert accounted() == sent
        assert 2 <= len(warned(p)) < sent
    assert not [x for x in p.log if "Traceback" in x], p.log


async def test_compressed_bodies_pass_through_untouched(tmp_path: Path, sample: str) -> None:
    """Content-Encoding is the backend's business: the body is forwarded as sent (before,
    the proxy inflated a gzip body and sent it on still labelled gzip: the backend failed;
    an invalid one was a traceback in the proxy)."""
    raw = b"hello world " * 1000
    zipped = gzip.compress(raw)
    async with proxy_with(tmp_path, sample) as p:
        head = (b"POST /_sample/upload HTTP/1.1\r\n" + H + b"Content-Encoding: gzip\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n")
        data = await exchange(p.data_url, head % len(zipped) + zipped)
        assert status_of(data) == 200, data
        # the sample backend inflates what it receives: it got the gzip stream intact
        got = json.loads(data.partition(b"\r\n\r\n")[2])
        assert got == {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}

        data = await exchange(p.data_url, head % 5 + b"xxxxx")  # not gzip: the backend says
        assert status_of(data) in (400, 500), data
    assert not [x for x in p.log if "Traceback" in x or " ERROR " in x], p.log
