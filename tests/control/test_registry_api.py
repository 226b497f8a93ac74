"""The registry and promotion admin API on a real ``splitway run``: traversal and
injection attempts refused with 422 before the store, roles (401/403), JSON errors naming
the field, artifacts, gate, and documents matching their declared response models."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from yarl import URL

from control.api.promotions import PromotionOut, PromotionsOut
from control.api.registry import (
    CompareOut,
    GateOut,
    LatestOut,
    ModelsOut,
    VersionOut,
    VersionsOut,
)
from tests.harness import ProxyProcess, proxy_config, running_proxy

TOKENS = {"op": ("olga", ["operator"]), "view": ("vic", ["viewer"]),
          "bob": ("bob", ["approver", "viewer"]), "carol": ("carol", ["approver"])}
BAD_NAMES = ["..%2Fetc", "a%2Fb", "A", "x%3Bdrop%20table", "%2e%2e", "..", "%252e%252e",
             "a" * 65, "%00", "-x"]
BAD_VERSIONS = ["1.0", "01.0.0", "1.0.0-", "1.0.0%3Brm", "..", "1.0.0%2F..", "v1.0.0"]


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": u, "roles": r}
               for t, (u, r) in TOKENS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    cfg = proxy_config({"sentiment-v1": ["http://127.0.0.1:9"]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "sentiment-v1"},
         "split": {"weights": {"stable": 100}}}],
        approvals={"staging": {"required": 1}, "production": {"required": 1}})
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    async with running_proxy(tmp_path, cfg) as p:
        yield p


async def call(http: aiohttp.ClientSession, p: ProxyProcess, method: str, path: str,
               token: str | None = "op", expect: int = 200, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = URL(p.admin_url + path, encoded=True)  # keep %2F, .. and friends as sent
    async with http.request(method, url, headers=headers, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        assert r.status == expect, (method, path, r.status, body)
        return body


async def test_bad_names_and_versions_are_422(
    proxy: ProxyProcess, http: aiohttp.ClientSession
) -> None:
    reg = {"version": "1.0.0", "backend": "sentiment-v1"}
    for name in BAD_NAMES:
        for method, path, body in (
            ("GET", f"/api/v1/models/{name}/versions", None),
            ("POST", f"/api/v1/models/{name}/versions", reg),
            ("GET", f"/api/v1/models/{name}/versions/1.0.0", None),
            ("GET", f"/api/v1/models/{name}/latest", None),
            ("POST", f"/api/v1/models/{name}/versions/1.0.0/promotions",
             {"stage": "staging", "justification": "x"}),
        ):
            err = await call(http, proxy, method, path, expect=422, json=body)
            assert err["error"] == "invalid" and err["field"] == "model", (name, path)
    for version in BAD_VERSIONS:
        err = await call(http, proxy, "GET", f"/api/v1/models/m/versions/{version}",
                         expect=422)
        assert err["field"] == "version", version
        err = await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=422,
                         json={**reg, "version": version.replace("%3B", ";")})
        assert err["field"] == "version", version
    err = await call(http, proxy, "GET", "/api/v1/models/m/compare?a=1.0.0&b=..%2F1",
                     expect=422)
    assert err["field"] == "b"
    for bad, field in ((["lineage", "parent"], "lineage.parent"), (["backend"], "backend")):
        body: dict[str, Any] = {**reg, "lineage": {}}
        target = body["lineage"] if bad[0] == "lineage" else body
        target[bad[-1]] = "../../etc/passwd"
        err = await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=422,
                         json=body)
        assert err["field"] == field
    err = await call(http, proxy, "GET", "/api/v1/promotions/prm-..%2F..", expect=422)
    assert err["field"] == "id"
    err = await call(http, proxy, "GET", "/api/v1/artifacts/..%2F..", expect=422)
    assert err["field"] == "sha256"
    models = await call(http, proxy, "GET", "/api/v1/models", token="view")
    assert models == {"models": []}  # nothing was written


async def test_roles_and_errors(proxy: ProxyProcess, http: aiohttp.ClientSession) -> None:
    body = {"version": "1.0.0", "backend": "sentiment-v1"}
    await call(http, proxy, "GET", "/api/v1/models", token=None, expect=401)
    await call(http, proxy, "GET", "/api/v1/models", token="nope", expect=401)
    await call(http, proxy, "GET", "/api/v1/models", token="carol", expect=403)  # no viewer
    await call(http, proxy, "POST", "/api/v1/models/m/versions", token="view", expect=403,
               json=body)
    await call(http, proxy, "POST", "/api/v1/models/m/versions", token="bob", expect=403,
               json=body)
    err = await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=422,
                     json={**body, "colour": "red"})
    assert err["field"] == "colour"
    err = await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=422,
                     json={**body, "metrics": {"acc": "high"}})
    assert err["field"] == "metrics.acc"
    err = await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=400,
                     data=b'{"version": "1.0.0", "backend": "b", "metrics": {"acc": NaN}}')
    assert err["field"] == "body" and "NaN" in err["detail"]  # not JSON at all
    await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=400, data=b"{nope")
    await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=201, json=body)
    err = await call(http, proxy, "POST", "/api/v1/models/m/versions", expect=409, json=body)
    assert err["error"] == "conflict"
    await call(http, proxy, "GET", "/api/v1/models/nope/versions", token="view", expect=404)
    await call(http, proxy, "GET", "/api/v1/models/m/versions/2.0.0", token="view",
               expect=404)
    pr = await call(http, proxy, "POST", "/api/v1/models/m/versions/1.0.0/promotions",
                    expect=201, json={"stage": "staging", "justification": "ok"})
    pid = pr["id"]
    await call(http, proxy, "POST", f"/api/v1/promotions/{pid}/approve", token="view",
               expect=403)
    await call(http, proxy, "POST", f"/api/v1/promotions/{pid}/cancel", token="bob",
               expect=403)  # not an operator
    await call(http, proxy, "POST", f"/api/v1/promotions/{pid}/comment", token=None,
               expect=401, json={"comment": "hi"})
    doc = await call(http, proxy, "POST", f"/api/v1/promotions/{pid}/comment", token="carol",
                     json={"comment": "approver-only users may comment"})
    assert doc["comments"][0]["author"] == "carol"
    doc = await call(http, proxy, "POST", f"/api/v1/promotions/{pid}/approve", token="carol")
    assert doc["state"] == "approved"  # staging needs 1 here (config approvals:)
    await call(http, proxy, "POST", f"/api/v1/promotions/{pid}/approve", token="bob",
               expect=409)
    PromotionOut.model_validate(doc)


async def test_registry_reads_artifacts_and_gate(
    proxy: ProxyProcess, http: aiohttp.ClientSession
) -> None:
    blob = b"\x00model-bytes\xff" * 10_000
    up = await call(http, proxy, "POST", "/api/v1/artifacts", expect=201, data=blob)
    assert up == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
                  "created": True}
    again = await call(http, proxy, "POST", "/api/v1/artifacts", expect=200, data=blob)
    assert again["created"] is False
    await call(http, proxy, "POST", "/api/v1/artifacts", token="view", expect=403, data=b"x")
    assert await call(http, proxy, "GET", f"/api/v1/artifacts/{up['sha256']}",
                      token="view") == blob
    for v, metrics, tags in (("1.9.0", {"acc": 0.8}, ["gpu"]), ("1.10.0", {"acc": 0.9}, []),
                             ("1.9.0-rc.1", {"acc": 0.7}, ["gpu"])):
        doc = await call(http, proxy, "POST", "/api/v1/models/sentiment/versions", expect=201,
                         json={"version": v, "backend": "sentiment-v1", "metrics": metrics,
                               "tags": tags, "artifact": {"sha256": up["sha256"]},
                               "lineage": {"commit": "abcdef1"}})
        VersionOut.model_validate(doc)
    assert doc["artifact"] == {"sha256": up["sha256"], "size": len(blob)}
    listed = await call(http, proxy, "GET", "/api/v1/models/sentiment/versions", token="view")
    VersionsOut.model_validate(listed)
    assert [v["version"] for v in listed["versions"]] == ["1.10.0", "1.9.0", "1.9.0-rc.1"]
    gpu = await call(http, proxy, "GET", "/api/v1/models/sentiment/versions?tag=gpu",
                     token="view")
    assert [v["version"] for v in gpu["versions"]] == ["1.9.0", "1.9.0-rc.1"]
    err = await call(http, proxy, "GET", "/api/v1/models/sentiment/versions?stage=live",
                     token="view", expect=422)
    assert err["field"] == "stage"
    cmp = await call(http, proxy, "GET", "/api/v1/models/sentiment/compare?a=1.9.0&b=1.10.0",
                     token="view")
    CompareOut.model_validate(cmp)
    assert cmp["metrics"]["acc"]["diff"] == pytest.approx(0.1)
    models = await call(http, proxy, "GET", "/api/v1/models", token="view")
    ModelsOut.model_validate(models)
    assert models["models"][0]["latest"] == "1.10.0"

    gate_url = "/api/v1/models/sentiment/versions/1.10.0/gate"
    gate = await call(http, proxy, "GET", gate_url, token="view")
    GateOut.model_validate(gate)
    assert gate["allowed"] is False and gate["stage"] == "development"
    pr = await call(http, proxy, "POST", "/api/v1/models/sentiment/versions/1.10.0/promotions",
                    expect=201, json={"stage": "staging", "justification": "eval ok"})
    await call(http, proxy, "POST", f"/api/v1/promotions/{pr['id']}/approve", token="bob",
               json={"comment": "ok"})
    pr2 = await call(http, proxy, "POST",
                     "/api/v1/models/sentiment/versions/1.10.0/promotions", expect=201,
                     json={"stage": "production", "justification": "canary clean"})
    await call(http, proxy, "POST", f"/api/v1/promotions/{pr2['id']}/approve", token="bob")
    gate = await call(http, proxy, "GET", gate_url, token="view")
    assert gate["allowed"] is True and gate["promotion_id"] == pr2["id"]
    gate = await call(http, proxy, "GET", gate_url + "?stage=archived", token="view",
                      expect=422)
    latest = await call(http, proxy, "GET", "/api/v1/models/sentiment/latest", token="view")
    LatestOut.model_validate(latest)
    assert latest["latest"]["production"]["version"] == "1.10.0"
    assert latest["latest"]["development"]["version"] == "1.9.0"
    one = await call(http, proxy, "GET", "/api/v1/models/sentiment/latest?stage=staging",
                     token="view")
    assert one == {"model": "sentiment", "latest": {"staging": None}}
    listed = await call(http, proxy, "GET", "/api/v1/promotions?state=approved&model=sentiment",
                        token="view")
    PromotionsOut.model_validate(listed)
    assert [p["id"] for p in listed["promotions"]] == [pr2["id"], pr["id"]]
    err = await call(http, proxy, "GET", "/api/v1/promotions?state=done", token="view",
                     expect=422)
    assert err["field"] == "state"


async def test_without_tokens_reads_work_and_writes_are_refused(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cfg = proxy_config({"b": ["http://127.0.0.1:9"]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"s": "b"},
         "split": {"weights": {"s": 100}}}])
    async with running_proxy(tmp_path, cfg) as p:
        assert await call(http, p, "GET", "/api/v1/models", token=None) == {"models": []}
        err = await call(http, p, "POST", "/api/v1/models/m/versions", token=None,
                         expect=403, json={"version": "1.0.0", "backend": "b"})
        assert err["error"] == "read_only"
        await call(http, p, "POST", "/api/v1/artifacts", token=None, expect=403, data=b"x")
