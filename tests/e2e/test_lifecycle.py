"""Reload (SIGHUP and API) under load, refused broken configs, SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import StartServer
from tests.harness import ProxyProcess, proxy_config, running_proxy, write_config


def two_variants(v1: str, v2: str, weights: dict[str, int]) -> dict[str, object]:
    return proxy_config({"v1": [v1], "v2": [v2]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": weights}}])


async def _count(http: aiohttp.ClientSession, url: str, n: int) -> Counter[str]:
    got: Counter[str] = Counter()
    for _ in range(n):
        async with http.get(url) as r:
            assert r.status == 200
            await r.read()
            got[r.headers["x-splitway-variant"]] += 1
    return got


async def _wait_for(predicate: object, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_sighup_reload_under_load(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = two_variants(v1.url, v2.url, {"stable": 100, "canary": 0})
    async with running_proxy(tmp_path, cfg) as p:
        async with http.get(p.data_url + "/_sample/sse?n=3&gated=1") as stream:
            first = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
            assert b'"event": 0' in first
            # New weights on disk, then SIGHUP while the stream is open.
            cfg["routes"][0]["split"]["weights"] = {"stable": 0, "canary": 100}
            write_config(tmp_path, cfg)
            p.signal(signal.SIGHUP)

            async def switched() -> bool:
                async with http.get(p.data_url + "/p") as r:
                    await r.read()
                    return r.headers["x-splitway-variant"] == "canary"

            await _wait_for(switched)
            assert (await _count(http, p.data_url + "/p", 20)) == {"canary": 20}
            v1.release(2)
            rest = await asyncio.wait_for(stream.read(), 5)
            assert b'"event": 1' in rest and b'"event": 2' in rest

        # A broken file is refused; the old config keeps serving.
        p.config_path.write_text("version: 1\nroutes: [\n")
        p.signal(signal.SIGHUP)

        async def refused() -> bool:
            return any("reload refused" in line for line in p.log)

        await _wait_for(refused)
        assert (await _count(http, p.data_url + "/p", 10)) == {"canary": 10}
        assert p.proc.returncode is None


async def test_api_reload_refuses_invalid_config(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = two_variants(v1.url, v2.url, {"stable": 1, "canary": 0})
    async with running_proxy(tmp_path, cfg) as p:
        bad = yaml.safe_load(p.config_path.read_text())
        bad["routes"][0]["split"]["weights"] = {"stable": 1, "ghost": 1}
        p.config_path.write_text(yaml.safe_dump(bad))
        async with http.post(p.admin_url + "/api/v1/reload") as r:
            # Without tokens_file the admin API refuses every write.
            assert r.status == 403
        assert (await _count(http, p.data_url + "/p", 5)) == {"stable": 5}


async def test_sigterm_drains_in_flight_requests(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    slow = await sample_servers("slow", latency_ms=1500)
    cfg = proxy_config({"v1": [slow.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
         "split": {"weights": {"a": 1}}}])
    p = await ProxyProcess.start(write_config(tmp_path, cfg))
    try:
        async def call() -> int:
            async with http.get(p.data_url + "/p") as r:
                await r.read()
                return r.status

        calls = [asyncio.ensure_future(call()) for _ in range(5)]
        await _wait_for(lambda: asyncio.sleep(0, slow.in_flight == 5))
        p.signal(signal.SIGTERM)
        assert await asyncio.gather(*calls) == [200] * 5
        assert await asyncio.wait_for(p.proc.wait(), 10) == 0
    finally:
        await p.kill()
