"""The state store goes away and comes back, through the real process.

PostgreSQL: the proxy reaches the database through a loopback forwarder the test cuts
(every connection reset, new ones refused) and restores, so the shared server is never
stopped. SQLite: another process holds the database's write lock past the proxy's
``busy_timeout`` (an operator's ``sqlite3`` shell left inside a transaction), which is how
a SQLite store becomes unusable while the file is still there.

Either way, while the store is away: requests keep answering 200 from the last route
table, admin writes answer 503 ``store_unavailable`` with ``Retry-After``, ``/readyz``
answers 503 naming the store, and a running canary neither advances nor rolls back — even
when the outage outlasts ``progress_deadline_s`` while the canary has too little traffic
to be judged (before the fix, the first tick after the store came back rolled it back for
"not enough data", charging the outage to the candidate). Once the store is back the
process recovers by itself: ready again, writes work, and the rollout walks on from its
persisted step to success.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import pytest

from control.store import open_store
from tests.conftest import StartServer
from tests.e2e.rollout_support import poll, steady_load
from tests.e2e.test_rollout import AUTH, FAST, api, rollout_cfg, tokens_free
from tests.harness import ProxyProcess, pg_schema, running_proxy
from tests.security.tcp_cut import TcpCut, tcp_cut

PG_URL = os.environ.get("SPLITWAY_TEST_POSTGRES_URL")
DEADLINE_S = 5.0  # the policy's progress_deadline_s; every outage here outlasts it
UNAVAILABLE_FOR = re.compile(r"state store unavailable for (\d+) s")
PIN_STABLE = {"x-splitway-variant": "stable"}


class Outage(Protocol):
    state_url: str

    async def cut(self) -> None: ...

    async def restore(self) -> None: ...


@dataclass
class PostgresOutage:
    """The proxy's PostgreSQL connection runs through a forwarder the test controls."""

    fwd: TcpCut
    state_url: str

    async def cut(self) -> None:
        self.fwd.cut()

    async def restore(self) -> None:
        self.fwd.restore()


@dataclass
class SqliteOutage:
    """Another connection holds the write lock; the proxy gives up after 300 ms."""

    path: Path
    state_url: str
    holder: sqlite3.Connection | None = None

    def _lock(self) -> None:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                               check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        self.holder = conn

    def _unlock(self) -> None:
        if self.holder is not None:
            self.holder.execute("ROLLBACK")
            self.holder.close()
            self.holder = None

    async def cut(self) -> None:
        await asyncio.to_thread(self._lock)

    async def restore(self) -> None:
        await asyncio.to_thread(self._unlock)


@pytest.fixture
async def pg_outage() -> AsyncIterator[PostgresOutage]:
    if not PG_URL:
        pytest.skip("SPLITWAY_TEST_POSTGRES_URL is not set")
    parts = urlsplit(PG_URL)
    with pg_schema(PG_URL, "sw_outage") as schema:
        async with tcp_cut(parts.hostname or "127.0.0.1", parts.port or 5432) as fwd:
            user = f"{parts.username}@" if parts.username else ""
            url = (f"{parts.scheme}://{user}127.0.0.1:{fwd.port}{parts.path}"
                   f"?options=-csearch_path%3D{schema}")
            yield PostgresOutage(fwd, url)


@pytest.fixture
async def sqlite_outage(tmp_path: Path) -> AsyncIterator[SqliteOutage]:
    path = tmp_path / "state.db"
    outage = SqliteOutage(path, f"sqlite:///{path}?busy_timeout_ms=300")
    try:
        yield outage
    finally:
        await outage.restore()


async def readyz(http: aiohttp.ClientSession, p: ProxyProcess) -> tuple[int, Any]:
    async with http.get(p.admin_url + "/readyz") as r:
        return r.status, await r.json()


def away_for(doc: dict[str, Any]) -> int:
    """How long /readyz says the store has been away (-1: it does not say so)."""
    found = [UNAVAILABLE_FOR.search(p) for p in doc["problems"]]
    return max((int(m.group(1)) for m in found if m), default=-1)


async def route_rollout(http: aiohttp.ClientSession, p: ProxyProcess) -> tuple[Any, Any]:
    """What this proxy serves and shows (held in memory, readable without the store)."""
    status, doc = await api(http, p, "GET", "/api/v1/routes/r")
    assert status == 200, doc
    return doc["weights"], {k: doc["rollout"][k] for k in ("id", "state", "step")}


async def experiment_requests(http: aiohttp.ClientSession, p: ProxyProcess) -> int:
    status, doc = await api(http, p, "GET", "/api/v1/experiments/ab")
    assert status == 200, doc
    return sum(int(v["requests"]) for v in doc["variants"].values())


async def outage_scenario(tmp_path: Path, sample_servers: StartServer,
                          outage: Outage) -> None:
    v1, v2 = await sample_servers("v1", latency_ms=2), await sample_servers("v2", latency_ms=2)
    # Latency is not what this test judges: a loaded machine must not fail the canary. A
    # 20 % error limit: a few dozen clean requests show the canary under it (at 1 %, ~700).
    cfg = tokens_free(rollout_cfg(v1.url, v2.url, steps=[10, 50, 100], step_interval_s=0.5,
                                  progress_deadline_s=DEADLINE_S,
                                  analysis={**FAST, "max_latency_ratio": 20,
                                            "max_error_rate": 0.2}), tmp_path)
    # A second route, without a rollout, takes the weight writes and runs an experiment.
    cfg["routes"].insert(0, {"name": "w", "match": {"path_prefix": "/w"},
                             "variants": {"stable": "v1", "canary": "v2"},
                             "split": {"strategy": "random",
                                       "weights": {"stable": 50, "canary": 50}},
                             "experiment": {"name": "ab", "control": "stable",
                                            "success": {"status_below": 500}}})
    cfg["state"] = outage.state_url
    async with running_proxy(tmp_path, cfg) as p, \
            aiohttp.ClientSession(headers=AUTH) as http:
        # The canary starves (every request pinned to stable), so its step holds.
        async with steady_load(p.data_url + "/p", 4, headers=lambda i: PIN_STABLE) as held:
            status, doc = await api(http, p, "POST", "/api/v1/routes/r/rollouts", {})
            assert status == 201, doc
            await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
                       lambda sd: any(a["decision"] == "hold" for a in sd[1]["analyses"]), 10)
            weights, rollout = await route_rollout(http, p)
            assert rollout["state"] == "progressing" and rollout["step"] == 0
            counted = await experiment_requests(http, p)

            await outage.cut()
            _, ready = await poll(lambda: readyz(http, p), lambda sd: sd[0] == 503, 15)
            assert any("state store" in problem for problem in ready["problems"]), ready
            served = held.statuses[200]

            async with http.put(p.admin_url + "/api/v1/routes/w/weights",
                                json={"weights": {"stable": 50, "canary": 50}}) as r:
                body = await r.json()
                assert r.status == 503, body
                assert body["error"] == "store_unavailable"
                assert int(r.headers["Retry-After"]) > 0
            status, doc = await api(http, p, "POST", "/api/v1/routes/r/rollout/pause", {})
            assert status == 503 and doc["error"] == "store_unavailable", doc
            # The experiment keeps counting in memory; deciding it waits for the store.
            for _ in range(40):
                async with http.post(p.data_url + "/w", json={}) as r:
                    assert r.status == 200
            status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/stop", {})
            assert status == 503 and doc["error"] == "store_unavailable", doc

            # Away for longer than the progress deadline: nothing moves meanwhile.
            await poll(lambda: readyz(http, p), lambda sd: away_for(sd[1]) > DEADLINE_S, 30)
            assert await route_rollout(http, p) == (weights, rollout)
            assert held.statuses[200] > served, "requests kept being served"
            assert set(held.statuses) == {200}, held.statuses

            await outage.restore()
            restored = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
            await poll(lambda: readyz(http, p), lambda sd: sd[0] == 200, 15)
            # Judged again after the outage, still starved: it holds, not rolled back.
            _, after = await poll(
                lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
                lambda sd: sd[1]["state"] != "progressing"
                or any(a["at"] >= restored for a in sd[1]["analyses"]), 15)
            assert after["state"] == "progressing" and after["step"] == 0, after
        # The rollout goes on from its persisted step once traffic reaches the canary.
        async with steady_load(p.data_url + "/p", 4) as load:
            final = await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
                               lambda sd: sd[1]["state"] != "progressing", 60)
        assert final[1]["state"] == "succeeded", (final[1]["reason"], final[1]["analyses"][-3:])
        assert set(load.statuses) == {200}, load.statuses
        assert await experiment_requests(http, p) >= counted + 40
        status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/stop", {})
        assert status == 200 and doc["state"] == "stopped", doc
        # Writes work again.
        async with http.put(p.admin_url + "/api/v1/routes/w/weights",
                            json={"weights": {"stable": 50, "canary": 50}}) as r:
            assert r.status == 200, await r.text()
    async with open_store(outage.state_url) as store:
        types = [e.type for e in await store.audit.query(type="rollout.", limit=100)]
    assert "rollout.rolled_back" not in types and "rollout.succeeded" in types, types


async def test_postgres_outage_freezes_then_recovers(
    tmp_path: Path, sample_servers: StartServer, pg_outage: PostgresOutage
) -> None:
    await outage_scenario(tmp_path, sample_servers, pg_outage)


async def test_sqlite_locked_freezes_then_recovers(
    tmp_path: Path, sample_servers: StartServer, sqlite_outage: SqliteOutage
) -> None:
    await outage_scenario(tmp_path, sample_servers, sqlite_outage)
