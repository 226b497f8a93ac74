"""Two proxies sharing PostgreSQL: one leads the rollout; kill -9 it and the other takes over."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.store import open_store
from tests.conftest import StartServer
from tests.e2e.rollout_support import poll, steady_load
from tests.e2e.test_rollout import AUTH, api, rollout_cfg, tokens_free
from tests.harness import ProxyProcess, in_schema, pg_schema, write_config

PG_URL = os.environ.get("SPLITWAY_TEST_POSTGRES_URL")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="SPLITWAY_TEST_POSTGRES_URL is not set")]


@pytest.fixture
def pg_state_url() -> Iterator[str]:
    """A fresh schema; the state URL selects it through libpq's search_path option."""
    assert PG_URL is not None
    with pg_schema(PG_URL, "sw_fleet") as schema:
        yield in_schema(PG_URL, schema)


async def leader_pid(url: str) -> int | None:
    async with open_store(url) as store:
        lease = await store.kv_get("leases", "rollouts")
    return int(lease["holder"].split(":")[1]) if lease else None


async def test_one_leader_and_takeover_after_kill_9(
    tmp_path: Path, sample_servers: StartServer, pg_state_url: str
) -> None:
    v1, v2 = await sample_servers("v1", latency_ms=1), await sample_servers("v2", latency_ms=1)
    procs: list[ProxyProcess] = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        cfg: dict[str, Any] = tokens_free(rollout_cfg(v1.url, v2.url, step_interval_s=1.0,
                                                      analysis={"min_requests": 20,
                                                                "latency_quantile": 0.5,
                                                                "max_latency_ratio": 3}), d)
        cfg["state"] = pg_state_url
        procs.append(await ProxyProcess.start(write_config(d, cfg)))
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http, \
                steady_load(procs[0].data_url + "/p", 4), \
                steady_load(procs[1].data_url + "/p", 4):
            status, doc = await api(http, procs[1], "POST", "/api/v1/routes/r/rollouts", {})
            assert status == 201, doc
            pid = await poll(lambda: leader_pid(pg_state_url), lambda x: x is not None, 10)
            leader = next(p for p in procs if p.proc.pid == pid)
            other = next(p for p in procs if p is not leader)
            # Both proxies serve the rollout's weights (the follower through the store).
            _, routes = await api(http, other, "GET", "/api/v1/routes/r")
            await poll(lambda: api(http, other, "GET", "/api/v1/routes/r"),
                       lambda sd: sd[1]["weights"]["canary"] >= 5, 5)
            _, first = await poll(lambda: api(http, other, "GET", "/api/v1/routes/r/rollout"),
                                  lambda sd: sd[1]["step"] >= 1, 30)
            leader.signal(signal.SIGKILL)
            await leader.proc.wait()
            new_pid = await poll(lambda: leader_pid(pg_state_url),
                                 lambda x: x == other.proc.pid, 10)
            assert new_pid == other.proc.pid
            _, final = await poll(lambda: api(http, other, "GET", "/api/v1/routes/r/rollout"),
                                  lambda sd: sd[1]["state"] != "progressing", 60)
        assert final["state"] == "succeeded", final
        assert final["id"] == first["id"] and routes["name"] == "r"
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                await p.kill()
