"""Every refused admin call is counted, under the kind of refusal it was, through the real
process.

Before the fix a 401 was recorded only for a wrong token: no Authorization header, a
``Basic`` header, ``Bearer`` with nothing after it and a token in the query string were
refused and recorded nowhere, although the counts were documented to add up. Now every
refusal is counted — the aggregator bounds the writes, not the counting — with a kind
that says which (:class:`control.refusals.Refusal`), and the ``security.violation``
counts of each kind add up to exactly the calls refused.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from control.refusals import Refusal, refusal_of
from control.store import open_store
from proxy.errors import ApiError, ForbiddenError, ReadOnlyError, UnauthorizedError
from tests.harness import proxy_config, running_proxy

ROUTES = "/api/v1/routes"
WEIGHTS = "/api/v1/routes/r/weights"

# (kind, method, path, headers, expected status): each sent a different number of times
WITH_TOKENS: list[tuple[Refusal, str, str, dict[str, str], int]] = [
    (Refusal.MISSING_TOKEN, "GET", ROUTES, {}, 401),
    (Refusal.TOKEN_IN_QUERY, "GET", ROUTES + "?token=view-token", {}, 401),
    (Refusal.TOKEN_IN_QUERY, "GET", ROUTES + "?access_token=view-token", {}, 401),
    (Refusal.MALFORMED_AUTHORIZATION, "GET", ROUTES, {"Authorization": "Basic dmljOnB3"}, 401),
    (Refusal.MALFORMED_AUTHORIZATION, "GET", ROUTES, {"Authorization": "Bearer "}, 401),
    (Refusal.MALFORMED_AUTHORIZATION, "GET", ROUTES, {"Authorization": "Bearer a b"}, 401),
    (Refusal.BAD_TOKEN, "GET", ROUTES, {"Authorization": "Bearer guessed"}, 401),
    (Refusal.WRONG_ROLE, "PUT", WEIGHTS, {"Authorization": "Bearer view-token"}, 403),
]


def config(tmp_path: Path, listen: str, tokens: bool) -> dict[str, Any]:
    admin: dict[str, Any] = {"listen": listen}
    if tokens:
        entry = {"sha256": hashlib.sha256(b"view-token").hexdigest(), "user": "vic",
                 "roles": ["viewer"]}
        (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [entry]}))
        admin["tokens_file"] = "tokens.yaml"
    return proxy_config({"v1": ["http://127.0.0.1:9"]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
         "split": {"weights": {"a": 1}}}], admin=admin)


async def counted(tmp_path: Path) -> Counter[str]:
    """The stored ``security.violation`` counts per kind (read after the proxy stopped,
    which writes what is still counted)."""
    async with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        events = await store.audit.query(type="security.violation", limit=10_000)
    totals: Counter[str] = Counter()
    for e in events:
        totals[e.details["kind"]] += e.details["count"]
    return totals


async def refuse(http: aiohttp.ClientSession, base: str, method: str, path: str,
                 headers: dict[str, str], status: int) -> dict[str, Any]:
    async with http.request(method, base + path, headers=headers,
                            json={"weights": {"a": 1}} if method == "PUT" else None) as r:
        body = await r.json()
        assert r.status == status, body
        return body  # type: ignore[no-any-return]


async def test_every_refusal_is_counted_under_its_kind(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    sent: Counter[str] = Counter()
    details: dict[str, set[str]] = {}
    async with running_proxy(tmp_path, config(tmp_path, "127.0.0.1:0", tokens=True)) as p:
        for i, (kind, method, path, headers, status) in enumerate(WITH_TOKENS):
            for _ in range(i + 2):
                body = await refuse(http, p.admin_url, method, path, headers, status)
                sent[kind] += 1
                details.setdefault(kind, set()).add(body["detail"])
        async with http.get(p.admin_url + ROUTES,  # a valid token is not a refusal
                            headers={"Authorization": "Bearer view-token"}) as r:
            assert r.status == 200
    assert await counted(tmp_path) == sent
    # the 401 says what was wrong with what was sent
    assert details[Refusal.TOKEN_IN_QUERY] == {
        "tokens are not accepted in the query string: send Authorization: Bearer TOKEN"}
    assert details[Refusal.MALFORMED_AUTHORIZATION] == {
        "the Authorization header must be 'Bearer TOKEN'"}
    assert details[Refusal.MISSING_TOKEN] == {
        "a valid bearer token is required (Authorization: Bearer TOKEN)"}


@pytest.mark.parametrize(("listen", "kind", "method", "n"), [
    ("127.0.0.1:0", Refusal.READ_ONLY, "PUT", 3),  # loopback without tokens: writes refused
    ("0.0.0.0:0", Refusal.CLOSED_API, "GET", 4),  # elsewhere without tokens: all refused
])
async def test_refusals_without_a_tokens_file_are_counted(
    tmp_path: Path, http: aiohttp.ClientSession, listen: str, kind: Refusal, method: str,
    n: int
) -> None:
    async with running_proxy(tmp_path, config(tmp_path, listen, tokens=False)) as p:
        base = p.admin_url.replace("://0.0.0.0:", "://127.0.0.1:")
        for i in range(n):
            headers = {"Authorization": "Bearer whatever"} if i % 2 else {}
            await refuse(http, base, method, WEIGHTS if method == "PUT" else ROUTES,
                         headers, 403)
    assert await counted(tmp_path) == {kind: n}


@pytest.mark.parametrize(("error", "configured", "header", "query", "kind"), [
    (UnauthorizedError(), True, None, (), Refusal.MISSING_TOKEN),
    (UnauthorizedError(), True, None, ("Token",), Refusal.TOKEN_IN_QUERY),
    (UnauthorizedError(), True, None, ("limit", "access_token"), Refusal.TOKEN_IN_QUERY),
    (UnauthorizedError(), True, "", (), Refusal.MALFORMED_AUTHORIZATION),
    (UnauthorizedError(), True, "Basic x", ("token",), Refusal.MALFORMED_AUTHORIZATION),
    (UnauthorizedError(), True, "Bearer t", ("token",), Refusal.BAD_TOKEN),
    (ForbiddenError(), True, "Bearer t", (), Refusal.WRONG_ROLE),
    (ForbiddenError(), False, None, (), Refusal.CLOSED_API),
    (ReadOnlyError(), False, "Bearer t", (), Refusal.READ_ONLY),
])
def test_refusal_of(error: ApiError, configured: bool, header: str | None,
                    query: tuple[str, ...], kind: Refusal) -> None:
    assert refusal_of(error, tokens_configured=configured, authorization=header,
                      query=query) is kind
