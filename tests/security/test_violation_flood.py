"""A bad-token flood is counted, not written request by request, through the real process.

Before the fix every bad-token request appended its own ``security.violation`` inside the
request (3,000 requests, 3,000 events, an operator's write queued behind them on the audit
lock). Now the refusal is answered at once and counted; one event per source, kind and
user goes out at most every ``admin.violation_interval_s``, with ``details.count``, and
what is still counted at shutdown is written then — the counts add up exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from control.store import open_store
from tests.harness import ProxyProcess, proxy_config, running_proxy

OP = {"Authorization": "Bearer op-token"}
BAD = {"Authorization": "Bearer stolen-or-guessed"}


def config(tmp_path: Path, interval_s: float) -> dict[str, Any]:
    entries = [{"sha256": hashlib.sha256(b"op-token").hexdigest(), "user": "olga",
                "roles": ["operator"]}]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    return proxy_config(
        {"v1": ["http://127.0.0.1:9"], "v2": ["http://127.0.0.1:9"]},
        [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1", "b": "v2"},
          "split": {"weights": {"a": 1, "b": 0}}}],
        admin={"tokens_file": "tokens.yaml", "violation_interval_s": interval_s})


async def flood(http: aiohttp.ClientSession, p: ProxyProcess, n: int,
                concurrency: int = 32) -> None:
    paths = ["/api/v1/routes", "/api/v1/audit", "/api/v1/routes/r"]
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            async with http.get(p.admin_url + paths[i % 3], headers=BAD) as r:
                assert r.status == 401
                assert (await r.json())["error"] == "unauthorized"

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def stored_events(tmp_path: Path) -> list[Any]:
    async with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert (await store.audit.verify()).ok
        return list(await store.audit.query(limit=10_000))


async def test_3000_bad_tokens_become_a_handful_of_events_with_exact_counts(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    interval = 1.0
    started = time.monotonic()
    async with running_proxy(tmp_path, config(tmp_path, interval)) as p:
        writes = 0

        async def operator() -> None:
            nonlocal writes
            for i in range(20):  # an operator keeps working during the flood
                async with http.put(p.admin_url + "/api/v1/routes/r/weights", headers=OP,
                                    json={"weights": {"a": 100 - i, "b": i}}) as r:
                    assert r.status == 200, await r.text()
                    writes += 1

        await asyncio.gather(flood(http, p, 3000), operator())
    elapsed = time.monotonic() - started
    events = await stored_events(tmp_path)
    violations = [e for e in events if str(e.type) == "security.violation"]
    assert sum(e.details["count"] for e in violations) == 3000
    # at most one event per key and interval, plus the one written at shutdown
    assert 1 <= len(violations) <= elapsed / interval + 2, (len(violations), elapsed)
    assert {(e.actor, e.severity, e.details["source"], e.details["kind"])
            for e in violations} == {("anonymous", "warning", "127.0.0.1", "bad_token")}
    assert all(e.details["first"] <= e.details["last"] for e in violations)
    seen = {r for e in violations for r in e.details["requests"]}
    assert seen == {"GET /api/v1/routes", "GET /api/v1/audit", "GET /api/v1/routes/r"}
    # the operator's 20 writes were each audited, next to a handful of violations, not 3,000
    assert [str(e.type) for e in events].count("weights.changed") == writes == 20


async def test_what_is_still_counted_is_written_at_shutdown(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_proxy(tmp_path, config(tmp_path, 3600)) as p:
        await flood(http, p, 1)
        async with asyncio.timeout(10):  # the first refusal is written at once ...
            while not await violations_seen(http, p):
                await asyncio.sleep(0.05)
        await flood(http, p, 199)  # ... the others wait for the hour, or the shutdown
    violations = [e for e in await stored_events(tmp_path)
                  if str(e.type) == "security.violation"]
    assert [e.details["count"] for e in violations] == [1, 199]


async def violations_seen(http: aiohttp.ClientSession, p: ProxyProcess) -> int:
    async with http.get(p.admin_url + "/api/v1/audit", headers=OP,
                        params={"type": "security.violation"}) as r:
        return len((await r.json())["events"])


async def test_a_crowd_of_sources_overflows_into_one_key_that_counts_them(
    tmp_path: Path,
) -> None:
    """130 loopback addresses, one bad token each: 100 get keys of their own, the other 30
    share the overflow key, whose events name at most 10 of them and count them all."""
    sources = [f"127.0.{i // 200}.{i % 200 + 2}" for i in range(130)]
    async with running_proxy(tmp_path, config(tmp_path, 3600)) as p:
        for source in sources:
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=connector) as http, \
                    http.get(p.admin_url + "/api/v1/routes", headers=BAD) as r:
                assert r.status == 401
    violations = [e for e in await stored_events(tmp_path)
                  if str(e.type) == "security.violation"]
    assert sum(e.details["count"] for e in violations) == 130
    own = [e for e in violations if e.details["source"] != "*"]
    overflow = [e for e in violations if e.details["source"] == "*"]
    assert len({e.details["source"] for e in own}) == 100
    assert sum(e.details["distinct_sources"] for e in overflow) == 30
    assert not any(e.details["distinct_sources_capped"] for e in overflow)
    for e in overflow:  # up to 10 named, all counted
        assert len(e.details["sources"]) == min(10, e.details["distinct_sources"]), e.details
        assert set(e.details["sources"]) <= set(sources[100:])
