"""Forwarding through the real splitway process: headers, errors, streaming, cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.harness import proxy_config, running_proxy


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def one_route(url: str, **route: object) -> dict[str, object]:
    r: dict[str, object] = {"name": "m", "match": {"path_prefix": "/"},
                            "variants": {"stable": "b1"}, "split": {"weights": {"stable": 1}}}
    r.update(route)
    return proxy_config({"b1": [url]}, [r])


async def test_forwards_request_and_names_variant(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    backend = await sample_servers("v1")
    async with running_proxy(tmp_path, one_route(backend.url)) as p:
        async with http.post(
            p.data_url + "/v1/models/m:predict?x=1", json={"instances": [1]},
            headers={"x-request-id": "req-1", "Connection": "keep-alive, x-private",
                     "x-private": "secret", "x-user": "u"},
        ) as r:
            assert r.status == 200
            assert (await r.json())["model"] == "v1"
            assert r.headers["x-splitway-variant"] == "stable"
            assert r.headers["x-request-id"] == "req-1"
        seen = backend.seen[-1]
        assert seen.path_qs == "/v1/models/m:predict?x=1"
        assert seen.headers["x-request-id"] == "req-1"
        assert seen.headers["x-user"] == "u"
        assert "x-private" not in {k.lower() for k in seen.headers}
        assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
        assert seen.headers["X-Forwarded-Proto"] == "http"
        assert seen.headers["X-Forwarded-Host"] == p.data_url.removeprefix("http://")
        async with http.get(p.data_url + "/x", headers={"x-forwarded-for": "10.1.1.1"}) as r:
            made_id = r.headers["x-request-id"]
            assert len(made_id) >= 16
        assert backend.seen[-1].headers["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
        assert backend.seen[-1].headers["x-request-id"] == made_id


async def _error(http: aiohttp.ClientSession, method: str, url: str, status: int,
                 kind: str, **kw: object) -> dict[str, object]:
    async with http.request(method, url, **kw) as r:  # type: ignore[arg-type]
        assert r.status == status, await r.text()
        body = await r.json()
    assert body["error"] == kind
    assert body["request_id"] == r.headers["x-request-id"]
    assert {"error", "detail", "route", "variant", "request_id"} <= set(body)
    return body


async def test_errors_are_json(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    fast = await sample_servers("fast")
    slow = await sample_servers("slow", latency_ms=3000)
    cfg = proxy_config(
        {"fast": [fast.url], "dead": [f"http://127.0.0.1:{dead_port()}"], "slow": [slow.url]},
        [
            {"name": "dead", "match": {"path_prefix": "/dead"}, "variants": {"a": "dead"},
             "split": {"weights": {"a": 1}}},
            {"name": "slow", "match": {"path_prefix": "/slow"}, "variants": {"a": "slow"},
             "split": {"weights": {"a": 1}}},
            {"name": "small", "match": {"path_prefix": "/small"}, "variants": {"a": "fast"},
             "split": {"weights": {"a": 1}, "allow_pin": True}, "max_body_bytes": 1000},
        ],
    )
    cfg["backends"]["slow"]["timeout_s"] = 0.5
    async with running_proxy(tmp_path, cfg) as p:
        body = await _error(http, "GET", p.data_url + "/dead", 502, "upstream_connect")
        assert body["route"] == "dead" and body["variant"] == "a"
        await _error(http, "GET", p.data_url + "/slow", 504, "upstream_timeout")
        await _error(http, "GET", p.data_url + "/nothing-here", 404, "no_route")
        await _error(http, "POST", p.data_url + "/small", 413, "body_too_large", data=b"x" * 5000)

        async def chunked() -> object:
            for _ in range(10):
                yield b"y" * 500

        await _error(http, "POST", p.data_url + "/small", 413, "body_too_large", data=chunked())
        body = await _error(http, "GET", p.data_url + "/small", 400, "bad_pin",
                            headers={"x-splitway-variant": "nope"})
        assert "nope" in str(body["detail"])
        async with http.get(p.data_url + "/small", headers={"x-splitway-variant": "a"}) as r:
            assert r.status == 200


async def test_sse_reaches_client_event_by_event(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    backend = await sample_servers("v1")
    async with running_proxy(tmp_path, one_route(backend.url)) as p:
        async with http.get(p.data_url + "/_sample/sse?n=3&gated=1") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for i in range(3):
                # Event i arrives while the backend is still held before event i+1.
                line = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
                assert f'"event": {i}'.encode() in line
                backend.release()
            assert await r.read() == b""


async def test_client_disconnect_cancels_upstream(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    backend = await sample_servers("v1")
    async with running_proxy(tmp_path, one_route(backend.url)) as p:
        async with aiohttp.ClientSession() as session:
            task = asyncio.ensure_future(session.get(p.data_url + "/_sample/hang"))
            for _ in range(100):
                if backend.in_flight:
                    break
                await asyncio.sleep(0.05)
            assert backend.in_flight == 1
            task.cancel()
        for _ in range(100):
            if backend.cancelled:
                break
            await asyncio.sleep(0.05)
        assert backend.cancelled == 1
        assert backend.in_flight == 0


async def test_large_upload_and_download_stream_in_bounded_memory(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    backend = await sample_servers("v1")
    size = 200 * 1024 * 1024
    async with running_proxy(tmp_path, one_route(backend.url)) as p:
        async with http.get(p.data_url + "/healthz-warmup") as r:
            await r.read()
        from tests.harness import ProxyProcess  # noqa: F401  (type only)

        base = p.rss_peak_kib()
        block = bytes(range(256)) * 4096  # 1 MiB
        digest = hashlib.sha256()

        async def upload() -> object:
            for _ in range(size // len(block)):
                digest.update(block)
                yield block

        async with http.post(p.data_url + "/_sample/upload", data=upload()) as r:
            got = await r.json()
        assert got == {"bytes": size, "sha256": digest.hexdigest()}

        received = 0
        async with http.get(p.data_url + f"/_sample/download?bytes={size}") as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 20):
                received += len(chunk)
        assert received == size
        grown_mib = (p.rss_peak_kib() - base) / 1024
        assert grown_mib < 64, f"proxy peak memory grew by {grown_mib:.0f} MiB for 200 MiB bodies"
