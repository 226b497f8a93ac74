"""Endpoint balancing, passive ejection and retry of refused connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.e2e.test_forwarding import dead_port
from tests.harness import proxy_config, running_proxy


def backend_route(endpoints: list[str]) -> dict[str, object]:
    cfg = proxy_config({"b": endpoints}, [{"name": "m", "match": {"path_prefix": "/"},
                                           "variants": {"a": "b"},
                                           "split": {"weights": {"a": 1}}}])
    cfg["backends"]["b"]["outlier_detection"] = {"consecutive_failures": 5,
                                                 "base_ejection_s": 1.5}
    return cfg


async def test_failing_endpoint_is_ejected_then_returns(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    good = await sample_servers("good")
    bad = await sample_servers("bad", error_rate=1.0)
    async with running_proxy(tmp_path, backend_route([good.url, bad.url])) as p:
        statuses = []
        for _ in range(60):  # sequential: each failure is seen before the next choice
            async with http.get(p.data_url + "/p") as r:
                statuses.append(r.status)
        assert len(bad.seen) == 5, "the failing endpoint kept getting traffic"
        assert statuses.count(500) == 5
        await asyncio.sleep(1.7)  # base_ejection_s x 1
        before = len(bad.seen)
        for _ in range(30):
            async with http.get(p.data_url + "/p") as r:
                await r.read()
        assert len(bad.seen) > before, "the ejected endpoint never came back"


async def test_refused_connection_is_retried_on_another_endpoint(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    good = await sample_servers("good")
    cfg = backend_route([f"http://127.0.0.1:{dead_port()}", good.url])
    async with running_proxy(tmp_path, cfg) as p:
        for _ in range(40):
            async with http.post(p.data_url + "/p", data=b"payload") as r:
                assert r.status == 200
        assert len(good.seen) == 40
        assert all(s.body_len == 7 for s in good.seen)
        async with http.get(p.admin_url + "/metrics") as r:
            text = await r.text()
        # Retried attempts are visible to operators, never to clients.
        assert 'splitway_upstream_errors_total{reason="connect",route="m",variant="a"}' in text


async def test_active_health_check_takes_endpoint_out_and_back(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    a = await sample_servers("a")
    b = await sample_servers("b")
    cfg = backend_route([a.url, b.url])
    cfg["backends"]["b"]["health_check"] = {"path": "/v2/health/ready", "interval_s": 0.1,
                                            "unhealthy_threshold": 1, "healthy_threshold": 1}
    async with running_proxy(tmp_path, cfg) as p:
        b.ready = False
        # Wait on the condition, not on the clock: until 20 requests in a row avoid b
        # (the checker runs every 0.1 s, later on a loaded machine).
        async with asyncio.timeout(30):
            while True:
                a_before, b_before = len(a.seen), len(b.seen)
                for _ in range(20):
                    async with http.get(p.data_url + "/p") as r:
                        assert r.status == 200
                if len(b.seen) == b_before and len(a.seen) == a_before + 20:
                    break
        b.ready = True
        async with asyncio.timeout(30):  # ... and until b takes traffic again
            while len(b.seen) == b_before:
                async with http.get(p.data_url + "/p") as r:
                    await r.read()
