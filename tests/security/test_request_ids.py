"""A client's ``x-request-id``: kept only when short and plain, and never a way to choose
which variant an experiment's outcome event is credited to. Through the real process.

Before the fix any id was kept, whatever its length (8,000-byte ids, 20,000 requests: +153
MB RSS on an experiment route, held for an hour in the request-id -> variant map), and in
that map the *last* request with an id won: a client resent ``x-request-id: shared`` until
it landed on the variant it wanted, and an event for ``request_id: shared`` was credited to
that variant.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.e2e.test_experiment import experiment_cfg
from tests.e2e.test_rollout import AUTH, api
from tests.harness import ProxyProcess, proxy_config, running_proxy
from tests.security.raw_backend import raw_backend

MADE = re.compile(r"[0-9a-f]{32}")  # an id the proxy made
EVENTS = "/api/v1/experiments/ab/events"


UNFIT = [
    "x" * 129,  # one character over the limit
    "x" * 8000,
    "has space",
    "a/b",
    "quote\"d",
    "caf\u00e9",
    "",
]


async def test_an_unfit_request_id_is_replaced_by_one_the_proxy_makes(tmp_path: Path) -> None:
    async with raw_backend(name="model") as model:
        cfg = proxy_config({"model": [model.url]}, [
            {"name": "r", "match": {"path_prefix": "/p"}, "variants": {"a": "model"},
             "split": {"weights": {"a": 1}}}])
        async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession() as http:
            for given in UNFIT:
                headers = {"x-request-id": given}
                async with http.post(p.data_url + "/p", json={}, headers=headers) as r:
                    assert r.status == 200
                    echoed = r.headers["x-request-id"]
                assert MADE.fullmatch(echoed), (given[:20], echoed)
                # the backend gets the very id the client is told, and only that one
                assert [v for h, v in model.seen[-1].headers if h.lower() == "x-request-id"
                        ] == [echoed]
                async with http.get(p.data_url + "/nowhere", headers=headers) as r:
                    assert r.status == 404
                    refused, in_body = r.headers["x-request-id"], (await r.json())["request_id"]
                assert MADE.fullmatch(refused) and refused == in_body


async def test_a_short_plain_request_id_is_kept(tmp_path: Path) -> None:
    kept = ["req-1", "A.b_c:d-E.0123456789", "x" * 128]
    async with raw_backend(name="model") as model:
        cfg = proxy_config({"model": [model.url]}, [
            {"name": "r", "match": {"path_prefix": "/p"}, "variants": {"a": "model"},
             "split": {"weights": {"a": 1}}}])
        async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession() as http:
            echoed = []
            for rid in kept:
                async with http.post(p.data_url + "/p", json={},
                                     headers={"x-request-id": rid}) as r:
                    echoed.append(r.headers["x-request-id"])
    assert echoed == kept
    assert [s.header("x-request-id") for s in model.seen] == kept


async def served_by(http: aiohttp.ClientSession, p: ProxyProcess, rid: str, user: str) -> str:
    async with http.post(p.data_url + "/p", json={},
                         headers={"x-request-id": rid, "x-user": user}) as r:
        assert r.status == 200 and r.headers["x-request-id"] == rid
        return r.headers["x-splitway-variant"]


async def test_an_id_served_by_two_variants_credits_neither(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    """Users are sticky (a hash split on ``x-user``), so the test knows which variant each
    request lands on: ``shared`` is sent by users until it has been served by both."""
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = experiment_cfg(v1.url, v2.url, tmp_path, strategy="hash", hash_on="header:x-user")
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        # The client's way: resend one id until it lands where the client wants it.
        seen: list[str] = []
        for i in range(200):
            seen.append(await served_by(http, p, "shared", f"user-{i}"))
            if len(set(seen)) == 2:
                break
        assert set(seen) == {"control", "treat"}
        status, doc = await api(http, p, "POST", EVENTS,
                                {"request_id": "shared", "metric": "purchase", "value": 1})
        assert status == 409, doc
        assert doc["error"] == "conflict" and doc["field"] == "request_id", doc
        assert "more than one variant" in doc["detail"]
        # A retry of one id on the same variant is fine: credited to that variant.
        first = await served_by(http, p, "retried", "user-0")
        for _ in range(3):
            assert await served_by(http, p, "retried", "user-0") == first
        status, doc = await api(http, p, "POST", EVENTS,
                                {"request_id": "retried", "metric": "purchase", "value": 1})
        assert status == 202 and doc["variant"] == first, doc
        # An id the proxy made is as good as a client's.
        async with http.post(p.data_url + "/p", json={}, headers={"x-user": "u"}) as r:
            made, variant = r.headers["x-request-id"], r.headers["x-splitway-variant"]
        status, doc = await api(http, p, "POST", EVENTS,
                                {"request_id": made, "metric": "purchase", "value": 1})
        assert status == 202 and doc["variant"] == variant, doc
        status, doc = await api(http, p, "POST", EVENTS,
                                {"request_id": "never-sent", "metric": "purchase", "value": 1})
        assert status == 404 and doc["field"] == "request_id", doc
        _, rep = await api(http, p, "GET", "/api/v1/experiments/ab")
    purchases = {v: rep["variants"][v]["metrics"].get("purchase", {}).get("n", 0)
                 for v in ("control", "treat")}
    assert sum(purchases.values()) == 2  # "retried" and the made one; "shared" never
