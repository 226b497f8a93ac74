"""A stalled or abandoned admin request body, through the real process over raw sockets.

Before the fix an admin body had no time limit: a viewer's comment announcing 100 bytes
and sending one held its connection for good, SIGTERM waited for it (aiohttp's default
60 s, whatever ``grace_period_s`` said), and a client that closed mid-body left an
``ERROR aiohttp.server: Error handling request`` traceback, once per request. Now the
next piece of an admin body must arrive within ``limits.body_read_timeout_s`` (a JSON
408 ``client_timeout``, then the connection closes), a client that goes away mid-body is
dropped quietly, and the admin listener drains within ``grace_period_s`` like the data
listener, cancelling what still runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.harness import ProxyProcess, proxy_config, running_proxy, write_config
from tests.security.test_connection_limits import DEADLINE, connect, response, until_closed

TOKENS = {"op-token": ("olga", ["operator"]), "view-token": ("vic", ["viewer"])}
COMMENT = (b"POST /api/v1/promotions/prm-0123456789ab/comment HTTP/1.1\r\nHost: a\r\n"
           b"Authorization: Bearer view-token\r\nContent-Type: application/json\r\n"
           b"Content-Length: 100\r\n\r\n{")
UPLOAD = (b"POST /api/v1/artifacts HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer op-token\r\n"
          b"Content-Length: 1000\r\n\r\n" + b"x" * 10)


def config(tmp_path: Path, **limits: float) -> dict[str, object]:
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": u, "roles": r}
               for t, (u, r) in TOKENS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    return proxy_config({"v1": ["http://127.0.0.1:9"]},
                        [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
                          "split": {"weights": {"a": 1}}}],
                        admin={"tokens_file": "tokens.yaml"}, limits=limits, grace_period_s=1)


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    async with running_proxy(tmp_path, config(tmp_path, body_read_timeout_s=1)) as p:
        yield p


def problems(p: ProxyProcess) -> list[str]:
    return [line for line in p.log if "Traceback" in line or " ERROR " in line
            or line.startswith("ERROR")]


async def healthz(p: ProxyProcess) -> None:
    """One full request on a fresh connection: what was sent before it has been read."""
    async with connect(p.admin_url) as (r, w):
        w.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await response(r))[0] == 200


@pytest.mark.parametrize("head", [COMMENT, UPLOAD], ids=["json-comment", "artifact-upload"])
async def test_a_stalled_admin_body_gets_408_and_the_connection_closes(
    proxy: ProxyProcess, head: bytes
) -> None:
    async with connect(proxy.admin_url) as (r, w):
        started = time.monotonic()
        w.write(head)  # then nothing more
        status, headers, body = await response(r)
        took = time.monotonic() - started
        assert status == 408, body
        error = json.loads(body)
        assert error["error"] == "client_timeout", error
        assert "limits.body_read_timeout_s" in error["detail"], error
        assert headers.get("connection") == "close"
        rest, _ = await until_closed(r)  # the unread rest is not waited for
    assert rest == b""
    assert took >= 0.9  # after the configured second, not at once
    await healthz(proxy)
    await proxy.stop()
    assert problems(proxy) == []


async def test_a_client_that_leaves_mid_body_leaves_no_traceback(proxy: ProxyProcess) -> None:
    for head in [COMMENT, UPLOAD] * 10:
        async with connect(proxy.admin_url) as (_, w):
            w.write(head)
            await w.drain()
        # closed mid-body; a full request on another connection shows it was all read
    await healthz(proxy)
    await proxy.stop()
    assert problems(proxy) == [], "\n".join(proxy.log)


async def test_sigterm_ends_a_stalled_admin_request_within_the_grace_period(
    tmp_path: Path,
) -> None:
    """grace_period_s is 1 and the body timeout the default 30 s: only the drain can end the
    stalled request in time. The deadline is far above the grace period (liveness)."""
    p = await ProxyProcess.start(write_config(tmp_path, config(tmp_path)))
    try:
        async with connect(p.admin_url) as (r, w):
            w.write(COMMENT)
            await w.drain()
            await healthz(p)  # the stalled request is in its handler now
            started = time.monotonic()
            p.signal(signal.SIGTERM)
            async with asyncio.timeout(DEADLINE):
                code = await p.proc.wait()
            took = time.monotonic() - started
            await r.read()  # the connection was closed with the process
    finally:
        await p.kill()
    assert code == 0
    assert took < DEADLINE
    assert problems(p) == [], "\n".join(p.log)
