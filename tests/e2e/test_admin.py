"""Admin API: tokens and roles, weights persisted in the state store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import StartServer
from tests.harness import proxy_config, running_proxy

TOKENS = {"op-token": ("olga", ["operator"]), "view-token": ("vic", ["viewer"]),
          "admin-token": ("ada", ["admin"])}


def with_tokens(tmp_path: Path, cfg: dict[str, object]) -> dict[str, object]:
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": u, "roles": r}
               for t, (u, r) in TOKENS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    return cfg


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_roles_and_persisted_weights(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = with_tokens(tmp_path, proxy_config({"v1": [v1.url], "v2": [v2.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": {"stable": 100, "canary": 0}}}]))
    url = "/api/v1/routes/r/weights"
    body = {"weights": {"stable": 0, "canary": 100}}
    async with running_proxy(tmp_path, cfg) as p:
        async with http.get(p.admin_url + "/api/v1/routes") as r:
            assert r.status == 401
            assert (await r.json())["error"] == "unauthorized"
        async with http.get(p.admin_url + "/api/v1/routes", headers=bearer("wrong")) as r:
            assert r.status == 401
        async with http.put(p.admin_url + url, json=body, headers=bearer("view-token")) as r:
            assert r.status == 403
        async with http.put(p.admin_url + url, json={"weights": {"ghost": 1}},
                            headers=bearer("op-token")) as r:
            assert r.status == 422
            assert (await r.json())["field"] == "weights.ghost"
        async with http.put(p.admin_url + url, data=b"{not json",
                            headers=bearer("op-token")) as r:
            assert r.status == 400
        async with http.put(p.admin_url + url, json=body, headers=bearer("op-token")) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["weights"] == {"stable": 0.0, "canary": 100.0}
        async with http.get(p.data_url + "/p") as r:
            assert r.headers["x-splitway-variant"] == "canary"
        async with http.get(p.admin_url + "/api/v1/routes", headers=bearer("view-token")) as r:
            routes = (await r.json())["routes"]
            assert routes[0]["weights_source"] == "api"
        async with http.get(p.admin_url + "/healthz") as r:
            assert r.status == 200
        async with http.get(p.admin_url + "/readyz") as r:
            assert r.status == 200
    # A restart keeps the weights set through the API.
    async with running_proxy(tmp_path, cfg) as p:
        for _ in range(10):
            async with http.get(p.data_url + "/p") as r:
                assert r.headers["x-splitway-variant"] == "canary"
