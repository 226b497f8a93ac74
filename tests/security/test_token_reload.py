"""Admin tokens are read again on reload, through the real process.

Before the fix tokens were read once at start-up: a token removed from ``tokens.yaml``
kept working after SIGHUP and ``POST /api/v1/reload``, and a new one stayed refused until
a restart. Now both reloads re-read the file (and a changed ``admin.tokens_file`` path), an
invalid file refuses the whole reload with the old tokens still serving, and each change
is audited as ``tokens.reloaded`` naming users and the file's SHA-256, never a token or a
token's hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness import ProxyProcess, proxy_config, running_proxy, write_config

ROUTES = [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
           "split": {"weights": {"a": 1}}}]
OP, VIEW, NEW = "op-token", "view-token", "new-token"
USERS = {OP: ("olga", ["operator"]), VIEW: ("vic", ["viewer"]), NEW: ("nina", ["viewer"])}


def write_tokens(path: Path, *tokens: str) -> str:
    """Write a tokens file holding ``tokens``; return the file's SHA-256."""
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": USERS[t][0],
                "roles": USERS[t][1]} for t in tokens]
    path.write_text(yaml.safe_dump({"tokens": entries}))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config(tokens_file: str = "tokens.yaml") -> dict[str, Any]:
    return proxy_config({"v1": ["http://127.0.0.1:9"]}, ROUTES,
                        admin={"tokens_file": tokens_file})


async def status(http: aiohttp.ClientSession, p: ProxyProcess, token: str) -> int:
    async with http.get(p.admin_url + "/api/v1/routes",
                        headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def reload(http: aiohttp.ClientSession, p: ProxyProcess) -> tuple[int, Any]:
    async with http.post(p.admin_url + "/api/v1/reload",
                         headers={"Authorization": f"Bearer {OP}"}) as r:
        return r.status, await r.json()


async def until(cond: Callable[[], Any], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def audit(http: aiohttp.ClientSession, p: ProxyProcess, type: str) -> list[Any]:
    async with http.get(p.admin_url + "/api/v1/audit", params={"type": type},
                        headers={"Authorization": f"Bearer {OP}"}) as r:
        assert r.status == 200
        return list((await r.json())["events"])


async def test_sighup_and_post_reload_reread_the_tokens_file(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    tokens = tmp_path / "tokens.yaml"
    digests = [write_tokens(tokens, OP, VIEW)]
    async with running_proxy(tmp_path, config()) as p:
        assert await status(http, p, VIEW) == 200
        assert await status(http, p, NEW) == 401

        # revoke vic's token, create nina's; SIGHUP
        digests.append(write_tokens(tokens, OP, NEW))
        p.signal(signal.SIGHUP)
        await until(lambda: _is(status(http, p, VIEW), 401))
        assert await status(http, p, NEW) == 200

        # revoke nina's token; POST /api/v1/reload takes effect before it answers
        digests.append(write_tokens(tokens, OP))
        assert (await reload(http, p))[0] == 200
        assert await status(http, p, NEW) == 401
        assert await status(http, p, OP) == 200

        events = await audit(http, p, "tokens.reloaded")
        assert [(e["actor"], e["details"]["added"], e["details"]["removed"],
                 e["details"]["file_sha256"], e["details"]["tokens"]) for e in events] == [
            ("sighup", ["nina"], ["vic"], digests[1], 2),
            ("olga", [], ["nina"], digests[2], 1)]
        assert events[0]["details"]["path"] == str(tokens)
        text = json.dumps(events)
        for t in USERS:
            assert t not in text and hashlib.sha256(t.encode()).hexdigest() not in text

        # a reload that changes nothing in the file records no tokens.reloaded
        assert (await reload(http, p))[0] == 200
        assert len(await audit(http, p, "tokens.reloaded")) == 2


async def _is(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def test_invalid_tokens_file_refuses_the_whole_reload(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    tokens = tmp_path / "tokens.yaml"
    write_tokens(tokens, OP, VIEW)
    async with running_proxy(tmp_path, config()) as p:
        # a bad role, and a config change that must not be applied with it
        tokens.write_text(tokens.read_text().replace("viewer", "superuser"))
        cfg = config()
        cfg["routes"][0]["split"]["weights"] = {"a": 7}
        write_config(tmp_path, cfg)
        code, body = await reload(http, p)
        assert code == 422, body
        assert "the old one keeps serving" in body["detail"]
        assert f"{tokens}: tokens[1].roles[0]" in body["detail"], body
        assert await status(http, p, VIEW) == 200  # old tokens keep serving
        async with http.get(p.admin_url + "/api/v1/routes",
                            headers={"Authorization": f"Bearer {VIEW}"}) as r:
            assert (await r.json())["routes"][0]["weights"] == {"a": 1.0}  # old config too

        p.signal(signal.SIGHUP)  # the same through the signal: a one-line error, no change
        await until(lambda: _logged(p, "reload refused"))
        (line,) = [x for x in p.log if "reload refused" in x]
        assert f"{tokens}: tokens[1].roles[0]" in line
        assert await status(http, p, VIEW) == 200

        tokens.unlink()  # a missing file is refused the same way
        code, body = await reload(http, p)
        assert code == 422 and f"{tokens}: cannot read" in body["detail"], body
        assert await status(http, p, VIEW) == 200
        assert await audit(http, p, "tokens.reloaded") == []


async def _logged(p: ProxyProcess, text: str) -> bool:
    return any(text in line for line in p.log)


async def test_a_changed_tokens_file_path_is_read_on_reload(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    write_tokens(tmp_path / "tokens.yaml", OP, VIEW)
    other = write_tokens(tmp_path / "other.yaml", OP, NEW)
    async with running_proxy(tmp_path, config()) as p:
        assert await status(http, p, NEW) == 401
        write_config(tmp_path, config("other.yaml"))
        assert (await reload(http, p))[0] == 200
        assert await status(http, p, NEW) == 200
        assert await status(http, p, VIEW) == 401
        (event,) = await audit(http, p, "tokens.reloaded")
        assert event["details"]["path"] == str(tmp_path / "other.yaml")
        assert event["details"]["file_sha256"] == other
        assert (event["details"]["added"], event["details"]["removed"]) == (["nina"], ["vic"])
