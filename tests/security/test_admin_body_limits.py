"""Admin request bodies are bounded per operation and parsed strictly, through the real
process.

Before the fix the admin app accepted bodies up to 1 GiB and read them whole before
validating (a viewer's 300 MB comment took the process to 1 GB RSS), and Python's JSON
parser took ``NaN``/``Infinity`` and recursed once per nesting level. Now each operation
has a ``max_body`` (64 KiB for JSON; the artifact upload 64 MiB, streamed): a larger
Content-Length is refused with 413 before any of the body is read, a chunked body is cut
off once over the limit, and bodies with ``NaN``, ``Infinity``, numbers out of range or
nesting deeper than 64 are a 400 naming the problem — and so are duplicate keys, a byte
order mark and text that is not UTF-8, which Python's parser let through (the last of two
keys won; the BOM was dropped; UTF-16 was guessed).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.harness import ProxyProcess, proxy_config, running_proxy

TOKENS = {"op-token": ("olga", ["operator"]), "view-token": ("vic", ["viewer"])}
OP = {"Authorization": "Bearer op-token"}
VIEW = {"Authorization": "Bearer view-token"}
MB = 1 << 20
WEIGHTS = "/api/v1/routes/r/weights"


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": u, "roles": r}
               for t, (u, r) in TOKENS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    cfg = proxy_config({"v1": ["http://127.0.0.1:9"], "v2": ["http://127.0.0.1:9"]},
                       [{"name": "r", "match": {"path_prefix": "/"},
                         "variants": {"a": "v1", "b": "v2"},
                         "split": {"weights": {"a": 1, "b": 0}}}],
                       admin={"tokens_file": "tokens.yaml"})
    async with running_proxy(tmp_path, cfg) as p:
        yield p


def rss_kib(p: ProxyProcess) -> int:
    text = Path(f"/proc/{p.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


async def megabytes(n: int) -> AsyncIterator[bytes]:
    chunk = b"[" * MB  # would be deep JSON too, if it were ever parsed
    for _ in range(n):
        yield chunk


async def send(http: aiohttp.ClientSession, method: str, url: str, data: Any,
               headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        async with http.request(method, url, data=data, headers=headers) as r:
            return r.status, await r.json()
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:  # pragma: no cover
        pytest.fail(f"the refusal did not reach the client: {exc!r}")


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("PUT", WEIGHTS, OP),
    ("POST", "/api/v1/promotions/prm-0123456789ab/comment", VIEW),  # the viewer's comment
])
async def test_a_100_mb_body_is_refused_before_it_is_read(
    proxy: ProxyProcess, http: aiohttp.ClientSession, method: str, path: str,
    headers: dict[str, str]
) -> None:
    before = rss_kib(proxy)
    for announced in (True, False):  # Content-Length: refused up front; chunked: cut off
        extra = {"Content-Length": str(100 * MB)} if announced else {}
        status, body = await send(http, method, proxy.admin_url + path, megabytes(100),
                                  {**headers, **extra, "Content-Type": "application/json"})
        assert status == 413, body
        assert body["error"] == "body_too_large"
        assert "limit of 65536 bytes" in body["detail"], body
        assert (f"({100 * MB} bytes)" in body["detail"]) is announced
    grown_mib = (rss_kib(proxy) - before) / 1024
    assert grown_mib < 50, f"RSS grew by {grown_mib:.0f} MiB"
    # the connection pool and the process are fine afterwards
    async with http.get(proxy.admin_url + "/api/v1/routes", headers=VIEW) as r:
        assert r.status == 200


async def test_bodies_within_the_limit_still_work(
    proxy: ProxyProcess, http: aiohttp.ClientSession
) -> None:
    pad = "x" * (60 * 1024)  # a 60 KiB JSON body is under 64 KiB: read, then validated
    status, body = await send(http, "PUT", proxy.admin_url + WEIGHTS,
                              f'{{"weights": {{"a": 1}}, "pad": "{pad}"}}', OP)
    assert status == 422 and body["field"] == "pad", body
    # the artifact upload takes up to 64 MiB, streamed
    status, body = await send(http, "POST", proxy.admin_url + "/api/v1/artifacts",
                              megabytes(2), OP)
    assert status == 201 and body["size"] == 2 * MB, body
    status, body = await send(http, "POST", proxy.admin_url + "/api/v1/artifacts",
                              megabytes(65), {**OP, "Content-Length": str(65 * MB)})
    assert status == 413 and f"limit of {64 * MB} bytes" in body["detail"], body


async def test_unauthenticated_big_body_is_a_401(
    proxy: ProxyProcess, http: aiohttp.ClientSession
) -> None:
    status, body = await send(http, "PUT", proxy.admin_url + WEIGHTS, megabytes(20),
                              {"Content-Length": str(20 * MB)})
    assert status == 401, body


@pytest.mark.parametrize(("text", "problem"), [
    ('{"weights": {"a": NaN}}', "NaN is not a JSON number"),
    ('{"weights": {"a": Infinity}}', "Infinity is not a JSON number"),
    ('{"weights": {"a": -Infinity}}', "-Infinity is not a JSON number"),
    ('{"weights": {"a": 1e400}}', "1e400 is out of range"),
    ('{"weights": {"a": 1}, "x": ' + "[" * 64 + "]" * 64 + "}", "nested deeper than 64"),
    ("[" * 30_000 + "]" * 30_000, "nested deeper than 64"),  # 60 KB: within the size limit
    # duplicate keys: Python kept the last, another reader may keep the first
    ('{"weights": {"a": 1}, "weights": {"a": 0, "b": 1}}', "duplicate key 'weights'"),
    ('{"weights": {"b": 1, "a": 1, "b": 0}}', "duplicate key 'b'"),
    # a byte order mark (Python's json dropped it from bytes) and UTF-16 (it guessed)
    (b'\xef\xbb\xbf{"weights": {"b": 1}}', "starts with a byte order mark"),
    ('{"weights": {"b": 1}}'.encode("utf-16"), "not UTF-8"),
])
async def test_json_that_is_not_finite_or_too_deep_is_a_400(
    proxy: ProxyProcess, http: aiohttp.ClientSession, text: str | bytes, problem: str
) -> None:
    status, body = await send(http, "PUT", proxy.admin_url + WEIGHTS, text,
                              {**OP, "Content-Type": "application/json"})
    assert status == 400, body
    assert body["error"] == "bad_request" and body["field"] == "body"
    assert problem in body["detail"], body
    async with http.get(proxy.admin_url + "/api/v1/routes", headers=VIEW) as r:
        assert (await r.json())["routes"][0]["weights"] == {"a": 1.0, "b": 0.0}


async def test_a_lone_surrogate_is_a_400_not_a_500(
    proxy: ProxyProcess, http: aiohttp.ClientSession
) -> None:
    """``"\\udfff"`` is valid JSON syntax but no character: storing it failed (500, and an
    ERROR traceback); now the body is refused naming it."""
    for body in ('{"version": "1.0.0", "backend": "v1", "params": {"a": "\\udfff"}}',
                 '{"version": "1.0.0", "backend": "v1", "params": {"\\ud800": 1}}'):
        status, answer = await send(http, "POST", proxy.admin_url + "/api/v1/models/m/versions",
                                    body, {**OP, "Content-Type": "application/json"})
        assert status == 400, answer
        assert "is a lone surrogate" in answer["detail"] and answer["field"] == "body"
    pair = '{"version": "1.0.0", "backend": "v1", "params": {"a": "\\ud83d\\ude00"}}'
    status, answer = await send(http, "POST", proxy.admin_url + "/api/v1/models/m/versions",
                                pair, {**OP, "Content-Type": "application/json"})
    assert status == 201 and answer["params"] == {"a": "\U0001f600"}, answer
