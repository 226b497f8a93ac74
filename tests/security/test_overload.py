"""Per-route concurrency limit: over ``max_concurrency`` the proxy answers 503 with
``Retry-After`` at once — no queue — and the refusal is charged to no variant.

Before the fix there was no limit: a burst queued without bound at the backend.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.e2e.rollout_support import poll
from tests.e2e.test_rollout import AUTH
from tests.harness import proxy_config, running_proxy
from tests.security.raw_backend import raw_backend
from tests.security.test_client_errors import canary_cfg, judged, metric, start_canary


async def test_over_the_limit_is_503_with_retry_after_at_once(tmp_path: Path) -> None:
    async with raw_backend(name="model", hold=True) as model:
        cfg = proxy_config({"model": [model.url]}, [
            {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "model"},
             "split": {"weights": {"a": 1}}, "max_concurrency": 2}])
        async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession() as http:
            async def call() -> int:
                async with http.post(p.data_url + "/p", json={}) as r:
                    await r.read()
                    return r.status

            held = [asyncio.ensure_future(call()) for _ in range(2)]
            await poll(lambda: asyncio.sleep(0, model.in_flight), lambda n: n == 2)
            started = time.monotonic()
            async with http.post(p.data_url + "/p", json={}) as r:
                refused_status, retry_after = r.status, r.headers.get("Retry-After")
                body = await r.json()
            refused_in = time.monotonic() - started
            assert len(model.seen) == 2  # never reached the backend, never queued
            model.release(2)
            assert await asyncio.gather(*held) == [200, 200]
            model.release(1)
            assert await call() == 200  # room again once the others finished
            overloaded = await metric(http, p, r'splitway_overloaded_requests_total\{route="r"\}')
            server_errors = await metric(http, p, r'splitway_requests_total\{code="5xx"[^}]*\}')
    assert refused_status == 503 and retry_after == "1"
    assert refused_in < 1.0
    assert body["error"] == "overloaded" and body["route"] == "r" and body["variant"] is None
    assert overloaded == 1
    assert server_errors == 0  # no variant answered it: not in any variant's 5xx


async def test_refusals_are_not_charged_to_the_canary(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1 = await sample_servers("v1", latency_ms=150)
    v2 = await sample_servers("v2", latency_ms=150)
    cfg = canary_cfg(v1.url, v2.url, tmp_path, max_concurrency=4)
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        await start_canary(http, p)
        statuses: list[int] = []

        async def one(i: int) -> None:
            async with http.post(p.data_url + f"/p?{i}", json={}) as r:
                await r.read()
                statuses.append(r.status)

        for _ in range(3):  # bursts of 40: 4 served at a time, the rest refused
            await asyncio.gather(*(one(i) for i in range(40)))
        served = statuses.count(200)
        doc = await judged(http, p, served)
        overloaded = await metric(http, p, r'splitway_overloaded_requests_total\{route="r"\}')
    assert set(statuses) == {200, 503} and statuses.count(503) >= 90, statuses
    assert overloaded == statuses.count(503)
    assert doc["state"] == "progressing", doc["reason"]
    last = doc["analyses"][-1]
    assert last["baseline"]["requests"] + last["candidate"]["requests"] == served
    assert last["candidate"]["errors"] == 0 and last["baseline"]["errors"] == 0
