"""Experiments over real proxied traffic: significance, late events, lifecycle, CLI."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp

from control.store import open_store
from tests.conftest import StartServer
from tests.e2e.test_cli import splitway
from tests.e2e.test_rollout import AUTH, api, tokens_free
from tests.harness import proxy_config, running_proxy


def experiment_cfg(v1: str, v2: str, tmp_path: Path, **split: Any) -> dict[str, Any]:
    cfg = proxy_config({"v1": [v1], "v2": [v2]}, [
        {"name": "r", "match": {"path_prefix": "/"},
         "variants": {"control": "v1", "treat": "v2"},
         "split": {"strategy": "random", "weights": {"control": 50, "treat": 50},
                   "allow_pin": True, **split},
         "experiment": {"name": "ab", "control": "control",
                        "success": {"status_below": 500}}}])
    return tokens_free(cfg, tmp_path)


async def blast(url: str, n: int, headers_for: Any = None, concurrency: int = 16,
                ) -> list[tuple[str, str]]:
    """n requests; returns (variant, request id) of each."""
    out: list[tuple[str, str]] = []
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:
        async def one(i: int) -> None:
            async with sem, http.post(url, json={}, headers=headers_for(i) if headers_for
                                      else None) as r:
                await r.read()
                out.append((r.headers["x-splitway-variant"], r.headers["x-request-id"]))

        await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def test_better_variant_is_significant_in_the_right_direction(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1 = await sample_servers("v1", error_rate=0.10, seed=11)
    v2 = await sample_servers("v2", error_rate=0.05, seed=12)
    cfg = experiment_cfg(v1.url, v2.url, tmp_path)
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        await blast(p.data_url + "/p", 6000)
        for _ in range(20):  # pinned requests are not part of the experiment
            async with http.get(p.data_url + "/p", headers={"x-splitway-variant": "treat"}) as r:
                await r.read()
        status, rep = await api(http, p, "GET", "/api/v1/experiments/ab")
        assert status == 200, rep
        code, out, err = await splitway("experiment", "report", "ab", "--plot",
                                        str(tmp_path / "ab.svg"),
                                        env={"SPLITWAY_ADMIN_URL": p.admin_url,
                                             "SPLITWAY_TOKEN": "t"})
    control, treat = rep["variants"]["control"], rep["variants"]["treat"]
    assert control["requests"] + treat["requests"] == 6000
    assert 0.87 < control["rate"] < 0.93 and 0.92 < treat["rate"] < 0.98
    c = rep["comparisons"]["treat"]
    assert c["diff"] > 0 and c["ci95"][0] > 0 and c["p_value"] < 0.001
    assert c["sequential_p_value"] < 0.05 and c["verdict"] == "treatment better"
    assert c["ci99"][0] <= c["ci95"][0] and c["ci99"][1] >= c["ci95"][1]
    assert rep["srm"]["flagged"] is False
    assert code == 0, err
    assert "treat vs control" in out and "treatment better" in out
    svg = ET.parse(tmp_path / "ab.svg").getroot()
    assert svg.tag.endswith("svg")


async def test_late_events_join_the_variant_that_served(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = experiment_cfg(v1.url, v2.url, tmp_path, strategy="hash", hash_on="header:x-user")
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        served = await blast(p.data_url + "/p", 200, lambda i: {"x-user": f"user-{i}"})
        by_user = {}
        for i in range(200):  # each user is sticky: ask once more to learn its variant
            async with http.get(p.data_url + "/p", headers={"x-user": f"user-{i}"}) as r:
                by_user[f"user-{i}"] = r.headers["x-splitway-variant"]
        for user, variant in list(by_user.items())[:50]:
            status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/events",
                                    {"unit": user, "metric": "purchase", "value": 10.0})
            assert status == 202 and doc["variant"] == variant
        variant, rid = served[0]
        status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/events",
                                {"request_id": rid, "metric": "rating", "value": 4})
        assert status == 202 and doc["variant"] == variant
        for bad, field in (({"unit": "u", "metric": "m", "value": "x"}, "value"),
                           ({"metric": "m", "value": 1}, "unit"),
                           ({"request_id": "nope", "metric": "m", "value": 1}, None)):
            status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/events", bad)
            assert status in (404, 422), doc
            assert field is None or doc["field"] == field
        _, rep = await api(http, p, "GET", "/api/v1/experiments/ab")
    purchases = {v: rep["variants"][v]["metrics"].get("purchase", {}).get("n", 0)
                 for v in ("control", "treat")}
    expected = {v: sum(1 for u in list(by_user)[:50] if by_user[u] == v)
                for v in ("control", "treat")}
    assert purchases == expected
    assert rep["variants"][variant]["metrics"]["rating"]["n"] == 1


async def test_lifecycle_persists_and_stops_counting(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = experiment_cfg(v1.url, v2.url, tmp_path)
    async with running_proxy(tmp_path, cfg) as p:
        await blast(p.data_url + "/p", 100)
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        await blast(p.data_url + "/p", 50)
        _, rep = await api(http, p, "GET", "/api/v1/experiments/ab")
        assert sum(v["requests"] for v in rep["variants"].values()) == 150  # across a restart
        status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/stop", {})
        assert status == 200 and doc["state"] == "stopped"
        await blast(p.data_url + "/p", 30)
        _, rep = await api(http, p, "GET", "/api/v1/experiments/ab")
        assert sum(v["requests"] for v in rep["variants"].values()) == 150  # not counted
        status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/conclude",
                                {"winner": "ghost"})
        assert status == 422 and doc["field"] == "winner"
        status, doc = await api(http, p, "POST", "/api/v1/experiments/ab/conclude",
                                {"winner": "treat"})
        assert status == 200 and doc["state"] == "concluded" and doc["decided_by"] == "ops"
    async with open_store(cfg["state"]) as store:
        types = [e.type for e in await store.audit.query(type="experiment.")]
    assert types == ["experiment.created", "experiment.started", "experiment.stopped",
                     "experiment.concluded"]


async def test_plan_prints_the_sample_size() -> None:
    code, out, _ = await splitway("experiment", "plan", "--baseline", "0.05", "--mde", "0.01")
    assert code == 0 and out.startswith("8143 units per arm")
    code, _, err = await splitway("experiment", "plan", "--baseline", "1.5", "--mde", "0.01")
    assert code == 2 and "Traceback" not in err


async def test_conclude_with_rollout_starts_a_rollout_of_the_winner(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = experiment_cfg(v1.url, v2.url, tmp_path)
    cfg["routes"][0]["rollout"] = {"baseline": "control", "candidate": "treat",
                                   "step_interval_s": 3600}
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        await blast(p.data_url + "/p", 40)
        env = {"SPLITWAY_ADMIN_URL": p.admin_url, "SPLITWAY_TOKEN": "t"}
        code, out, err = await splitway("experiment", "conclude", "ab", "--winner", "treat",
                                        "--rollout", env=env)
        assert code == 0, err
        assert "winner treat" in out and "rollout" in out
        _, doc = await api(http, p, "GET", "/api/v1/routes/r/rollout")
        assert doc["candidate"] == "treat" and doc["state"] == "progressing"
        code, _, err = await splitway("experiment", "conclude", "ab", "--winner", "treat",
                                      env=env)
        assert code == 1 and "already concluded" in err
