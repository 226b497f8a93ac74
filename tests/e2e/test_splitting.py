"""Traffic shares, stickiness and cross-process determinism through the real proxy."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.harness import proxy_config, running_proxy


def split_route(strategy: str, weights: dict[str, int], **split: object) -> dict[str, object]:
    return {"name": "sentiment", "match": {"path_prefix": "/"},
            "variants": {"stable": "v1", "canary": "v2"},
            "split": {"strategy": strategy, "weights": weights, **split}}


async def _variants(http: aiohttp.ClientSession, url: str, n: int,
                    headers_for: object = None, concurrency: int = 32) -> list[str]:
    out: list[str] = [""] * n
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        headers = headers_for(i) if callable(headers_for) else None
        async with sem, http.get(url, headers=headers) as r:
            assert r.status == 200
            await r.read()
            out[i] = r.headers["x-splitway-variant"]

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


def within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


async def test_random_split_93_7(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = proxy_config({"v1": [v1.url], "v2": [v2.url]},
                       [split_route("random", {"stable": 93, "canary": 7})])
    async with running_proxy(tmp_path, cfg) as p:
        got = Counter(await _variants(http, p.data_url + "/predict", 20_000))
    assert within_4_sigma(got["canary"], 20_000, 0.07), got
    assert len(v2.seen) == got["canary"]


async def test_hash_split_is_sticky_and_same_in_two_processes(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = proxy_config({"v1": [v1.url], "v2": [v2.url]},
                       [split_route("hash", {"stable": 80, "canary": 20},
                                    hash_on="header:x-user-id")])
    n = 5000

    def key(i: int) -> dict[str, str]:
        return {"x-user-id": f"user-{i % n}"}

    (tmp_path / "a").mkdir()
    async with running_proxy(tmp_path / "a", cfg) as p1:
        first = await _variants(http, p1.data_url + "/p", 2 * n, key)
    assert first[:n] == first[n:], "a key saw two variants"
    assert within_4_sigma(first[:n].count("canary"), n, 0.2)
    (tmp_path / "b").mkdir()
    async with running_proxy(tmp_path / "b", cfg) as p2:
        second = await _variants(http, p2.data_url + "/p", n, key)
    assert second == first[:n], "two proxy processes disagree on a key"


async def test_missing_hash_key_falls_back_to_random_and_is_counted(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = proxy_config({"v1": [v1.url], "v2": [v2.url]},
                       [split_route("hash", {"stable": 50, "canary": 50},
                                    hash_on="cookie:uid")])
    async with running_proxy(tmp_path, cfg) as p:
        got = Counter(await _variants(http, p.data_url + "/p", 400))
        async with http.get(p.admin_url + "/metrics") as r:
            text = await r.text()
    assert got["stable"] > 100 and got["canary"] > 100
    assert 'splitway_hash_fallbacks_total{route="sentiment"} 400.0' in text
