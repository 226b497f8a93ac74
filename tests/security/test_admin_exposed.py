"""An admin listener that is not loopback needs a tokens file, through the real process.

Before the fix, ``admin.listen: 0.0.0.0:PORT`` without ``admin.tokens_file`` started
silently and served the audit log, exports, the compliance report and artifacts to anyone
who could reach the port. Now it logs one warning at start-up and refuses every ``/api/v1``
call with a 403 that says to configure a tokens file, while the probes and scraping
(``/healthz``, ``/readyz``, ``/metrics``) and ``/api/openapi.json`` stay open. On loopback
without tokens, reads stay open and writes refused, as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import StartServer
from tests.harness import proxy_config, running_proxy

WARNING = "is not loopback and has no admin.tokens_file"
CLOSED = ["/api/v1/routes", "/api/v1/audit", "/api/v1/audit/export",
          "/api/v1/audit/verify", "/api/v1/reports/compliance", "/api/v1/models",
          "/api/v1/artifacts/" + "0" * 64]
OPEN = ["/healthz", "/readyz", "/metrics", "/api/openapi.json"]


def config(backend: str, listen: str, tokens: bool = False) -> dict[str, object]:
    admin: dict[str, object] = {"listen": listen}
    if tokens:
        admin["tokens_file"] = "tokens.yaml"
    return proxy_config({"v1": [backend]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
         "split": {"weights": {"a": 1}}}], admin=admin)


def via_loopback(url: str) -> str:
    return url.replace("://0.0.0.0:", "://127.0.0.1:")


async def test_non_loopback_without_tokens_closes_api_v1(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1 = await sample_servers("v1")
    async with running_proxy(tmp_path, config(v1.url, "0.0.0.0:0")) as p:
        admin = via_loopback(p.admin_url)
        for path in OPEN:
            async with http.get(admin + path) as r:
                assert r.status == 200, (path, await r.text())
        for path in CLOSED:
            async with http.get(admin + path) as r:
                body = await r.json()
                assert r.status == 403, (path, body)
                assert body["error"] == "forbidden"
                assert "admin.tokens_file" in body["detail"], body
        async with http.put(admin + "/api/v1/routes/r/weights",
                            json={"weights": {"a": 1}}) as r:
            assert r.status == 403 and "admin.tokens_file" in (await r.json())["detail"]
        async with http.get(p.data_url + "/x") as r:  # the data plane is not affected
            assert r.status == 200
    warnings = [line for line in p.log if WARNING in line]
    assert len(warnings) == 1, p.log
    assert "WARNING" in warnings[0] and "0.0.0.0:0" in warnings[0]


async def test_loopback_without_tokens_reads_stay_open(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1 = await sample_servers("v1")
    async with running_proxy(tmp_path, config(v1.url, "127.0.0.1:0")) as p:
        async with http.get(p.admin_url + "/api/v1/routes") as r:
            assert r.status == 200
        async with http.put(p.admin_url + "/api/v1/routes/r/weights",
                            json={"weights": {"a": 1}}) as r:
            assert r.status == 403 and (await r.json())["error"] == "read_only"
    assert not [line for line in p.log if WARNING in line], p.log


async def test_non_loopback_with_tokens_serves_tokens(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1 = await sample_servers("v1")
    entries = [{"sha256": hashlib.sha256(b"view-token").hexdigest(), "user": "vic",
                "roles": ["viewer"]}]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    async with running_proxy(tmp_path, config(v1.url, "0.0.0.0:0", tokens=True)) as p:
        admin = via_loopback(p.admin_url)
        async with http.get(admin + "/api/v1/routes",
                            headers={"Authorization": "Bearer view-token"}) as r:
            assert r.status == 200
        async with http.get(admin + "/api/v1/routes") as r:
            assert r.status == 401
    assert not [line for line in p.log if WARNING in line], p.log
