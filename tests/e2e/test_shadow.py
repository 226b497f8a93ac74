"""Shadow traffic end to end: the mirror never delays, alters or fails the client."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from pathlib import Path
from typing import Any

import aiohttp

from control.store import open_store
from tests.conftest import StartServer
from tests.e2e.test_cli import splitway
from tests.e2e.test_forwarding import dead_port
from tests.harness import ProxyProcess, proxy_config, running_proxy


def shadow_cfg(primary: str, shadow: str, **shadow_opts: Any) -> dict[str, Any]:
    cfg = proxy_config({"live": [primary], "next": [shadow]}, [
        {"name": "m", "match": {"path_prefix": "/"}, "variants": {"stable": "live"},
         "split": {"weights": {"stable": 1}},
         "shadow": {"backend": "next", **shadow_opts}}])
    return cfg


async def report(http: aiohttp.ClientSession, p: ProxyProcess) -> dict[str, Any]:
    async with http.get(p.admin_url + "/api/v1/routes/m/shadow") as r:
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]


async def settle(http: aiohttp.ClientSession, p: ProxyProcess, done: object) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            rep = await report(http, p)
            if done(rep):  # type: ignore[operator]
                return rep
            await asyncio.sleep(0.1)


async def test_slow_shadow_never_delays_and_is_capped(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    live = await sample_servers("live")
    slow = await sample_servers("next", latency_ms=1500)
    cfg = shadow_cfg(live.url, slow.url, max_in_flight=4, timeout_s=5)
    async with running_proxy(tmp_path, cfg) as p:
        async def call() -> None:
            async with http.post(p.data_url + "/predict", json={"x": 1}) as r:
                assert r.status == 200
                assert (await r.json())["model"] == "live"

        await asyncio.gather(*(call() for _ in range(30)))
        # Every primary answer is back while no shadow answer has arrived yet.
        early = await report(http, p)
        assert early["compared"] == 0 and early["in_flight"] > 0
        rep = await settle(http, p, lambda r: r["in_flight"] == 0)
    assert slow.peak_in_flight <= 4
    assert rep["dropped"] > 0
    assert rep["sent"] + rep["dropped"] == 30
    assert rep["sent"] == len(slow.seen)


async def test_refusing_shadow_causes_no_client_error(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    live = await sample_servers("live")
    cfg = shadow_cfg(live.url, f"http://127.0.0.1:{dead_port()}")
    async with running_proxy(tmp_path, cfg) as p:
        for _ in range(20):
            async with http.get(p.data_url + "/predict") as r:
                assert r.status == 200
        rep = await settle(http, p, lambda r: r["errors"] == 20)
        async with http.get(p.admin_url + "/metrics") as r:
            text = await r.text()
    assert rep["compared"] == 0
    assert 'splitway_shadow_requests_total{outcome="error",route="m"} 20.0' in text
    async with open_store(cfg["state"]) as store:
        events = await store.audit.query(type="shadow.")
    assert [(e.type, e.resource, e.details["backend"]) for e in events] == [
        ("shadow.started", "route/m", "next")]


async def test_shadow_report_cli(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    live = await sample_servers("live")
    nxt = await sample_servers("next", differ_rate=1.0, differ_by=1.0)
    async with running_proxy(tmp_path, shadow_cfg(live.url, nxt.url)) as p:
        for _ in range(10):
            async with http.get(p.data_url + "/p") as r:
                await r.read()
        await settle(http, p, lambda r: r["compared"] == 10)
        code, out, err = await splitway("shadow", "report", "m",
                                        env={"SPLITWAY_ADMIN_URL": p.admin_url})
        assert code == 0, err
        assert "mismatched 10" in out and "mismatch rate 100.00%" in out
        code, _, err = await splitway("shadow", "report", "nope",
                                      env={"SPLITWAY_ADMIN_URL": p.admin_url})
        assert code == 1 and "nope" in err


async def test_shadow_gets_identical_bodies_and_sampling(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    live, nxt = await sample_servers("live"), await sample_servers("next")
    async with running_proxy(tmp_path, shadow_cfg(live.url, nxt.url)) as p:
        for i in range(50):
            body = os.urandom(1000 + i)
            async with http.post(p.data_url + f"/p?i={i}", data=body) as r:
                assert r.status == 200
        await settle(http, p, lambda r: r["sent"] == 50 and r["in_flight"] == 0)
    primary = {s.headers["x-request-id"]: s for s in live.seen}
    assert len(nxt.seen) == 50
    for s in nxt.seen:
        twin = primary[s.headers["x-request-id"]]
        assert s.body_sha256 == twin.body_sha256 and s.path_qs == twin.path_qs
        assert s.headers["x-splitway-shadow"] == "1"
        assert "x-splitway-shadow" not in twin.headers

    live2, nxt2 = await sample_servers("live"), await sample_servers("next")
    (tmp_path / "b").mkdir()
    n = 1000
    async with running_proxy(tmp_path / "b", shadow_cfg(live2.url, nxt2.url, percent=30)) as p:
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem, http.get(p.data_url + "/p") as r:
                await r.read()

        await asyncio.gather(*(one() for _ in range(n)))
        rep = await settle(http, p, lambda r: r["in_flight"] == 0)
    assert abs(len(nxt2.seen) - 0.3 * n) <= 4 * math.sqrt(n * 0.3 * 0.7)
    assert rep["sent"] == len(nxt2.seen)


async def test_mismatch_rate_follows_tolerance(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    for rel_tol, expect_low, expect_high in ((1e-3, 0.14, 0.26), (0.1, 0.0, 0.0)):
        live = await sample_servers("live")
        nxt = await sample_servers("next", differ_rate=0.2, differ_by=0.01, seed=42)
        d = tmp_path / str(rel_tol)
        d.mkdir()
        cfg = shadow_cfg(live.url, nxt.url,
                         compare={"json_path": "predictions", "rel_tol": rel_tol})
        async with running_proxy(d, cfg) as p:
            for _ in range(400):
                async with http.post(p.data_url + "/p", json={}) as r:
                    await r.read()
            rep = await settle(http, p, lambda r: r["compared"] == 400)
        rate = rep["mismatch_rate"]
        assert expect_low <= rate <= expect_high, rep
        assert len(rep["recent_mismatches"]) == min(rep["mismatched"], 20)
        lo, hi = rep["mismatch_rate_ci95"]
        assert lo <= rate <= hi
        if rate:
            assert "predictions[0]" in rep["recent_mismatches"][0]["detail"]
        assert rep["latency_ms"]["shadow"]["p50"] > 0
        assert 0 < rep["shadow_ttfb_ms"]["p50"] <= rep["latency_ms"]["shadow"]["p99"]
        assert rep["paired_latency_ms"]["n"] == 400


async def test_shadow_that_never_answers_keeps_memory_bounded(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    live = await sample_servers("live")
    black_hole = await sample_servers("next", latency_ms=3_600_000)
    cfg = shadow_cfg(live.url, black_hole.url, max_in_flight=64, timeout_s=3600)
    async with running_proxy(tmp_path, cfg) as p:
        sem = asyncio.Semaphore(32)
        payload = hashlib.sha256(b"x").hexdigest().encode() * 30  # ~2 KB bodies

        async def one() -> None:
            async with sem, http.post(p.data_url + "/p", data=payload) as r:
                assert r.status == 200
                await r.read()

        await asyncio.gather(*(one() for _ in range(2000)))
        after_warmup = p.rss_peak_kib()
        await asyncio.gather(*(one() for _ in range(18_000)))
        grown_mib = (p.rss_peak_kib() - after_warmup) / 1024
        rep = await report(http, p)
    assert rep["in_flight"] == 64
    assert rep["dropped"] == 20_000 - 64
    assert black_hole.peak_in_flight == 64
    assert grown_mib < 30, f"proxy memory grew {grown_mib:.1f} MiB over 18,000 requests"
