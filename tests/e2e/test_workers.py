"""``--workers N``: processes sharing one port; weights set on one reach the others."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.e2e.test_forwarding import dead_port
from tests.harness import ProxyProcess, proxy_config, write_config


async def test_two_workers_share_a_port_and_weights(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    port, admin = dead_port(), dead_port()
    cfg = proxy_config({"v1": [v1.url], "v2": [v2.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": {"stable": 100, "canary": 0}}}],
        listen=f"127.0.0.1:{port}")
    cfg["admin"] = {"listen": f"127.0.0.1:{admin}"}
    p = await ProxyProcess.start(write_config(tmp_path, cfg), "--workers", "2")
    try:
        data = f"http://127.0.0.1:{port}"
        variants: Counter[str] = Counter()
        for admin_port in (admin, admin + 1):  # each worker's own admin API
            async with asyncio.timeout(45):
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{admin_port}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
        # The state store carries weights between workers (no tokens: write via store).
        from control.store import open_store

        async with open_store(cfg["state"]) as store:
            await store.set_route_weights("r", {"stable": 0, "canary": 100}, "test")
        for admin_port in (admin, admin + 1):  # each worker picks it up within its sync
            async with asyncio.timeout(45):
                while True:
                    async with http.get(f"http://127.0.0.1:{admin_port}/api/v1/routes") as r:
                        if (await r.json())["routes"][0]["weights"]["canary"] == 100:
                            break
                    await asyncio.sleep(0.1)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(40):  # new connections land on both workers
                async with s.get(data + "/p") as r:
                    assert r.status == 200
                    variants[r.headers["x-splitway-variant"]] += 1
        assert variants == {"canary": 40}
        p.signal(signal.SIGTERM)
        assert await asyncio.wait_for(p.proc.wait(), 15) == 0
    finally:
        await p.kill()


async def test_workers_exit_when_the_supervisor_is_killed(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1 = await sample_servers("v1")
    port, admin = dead_port(), dead_port()
    cfg = proxy_config({"v1": [v1.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "v1"},
         "split": {"weights": {"stable": 100}}}], listen=f"127.0.0.1:{port}")
    cfg["admin"] = {"listen": f"127.0.0.1:{admin}"}
    p = await ProxyProcess.start(write_config(tmp_path, cfg), "--workers", "2")
    try:
        for admin_port in (admin, admin + 1):
            await _until_up(http, f"http://127.0.0.1:{admin_port}/healthz", p)
        p.proc.kill()  # SIGKILL: the supervisor cannot forward anything
        await p.proc.wait()
        # Each worker got SIGTERM from the kernel (parent-death signal) and drains away.
        for admin_port in (admin, admin + 1):
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{admin_port}/healthz"):
                            pass
                    except aiohttp.ClientConnectionError:
                        break
                    await asyncio.sleep(0.1)
    finally:
        await p.kill()


async def _until_up(http: aiohttp.ClientSession, url: str, p: ProxyProcess) -> None:
    # A liveness wait, not a speed check: two workers importing the stack on a loaded
    # two-core machine can take many seconds.
    try:
        async with asyncio.timeout(45):
            while True:
                try:
                    async with http.get(url) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{url} never answered; proxy log:\n" + "\n".join(p.log)) from None
