"""Client-caused failures are the client's: through the real process, with a canary
rollout running, none of them reaches the judge.

Before the fix, an absolute-form target (``POST http://x/p HTTP/1.1``) became an invalid
upstream URL answered 502 and charged to the variant: 30-odd such requests rolled a healthy
canary back and quarantined it. A client stalling its body until the upstream timeout was
charged a 504; bodies over the limit, clients leaving mid-body and the like were counted
as requests of the variant. And error bodies told any client the backend's address.

The judge's input is read where the judge leaves it: every analysis in
``GET /api/v1/routes/{route}/rollout`` carries the baseline's and candidate's window
(``requests``, ``errors``). Each window starts when the step is first judged, so the tests
send their traffic once the first analysis is there.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import StartServer
from tests.e2e.rollout_support import poll
from tests.e2e.test_rollout import AUTH, FAST, api, rollout_cfg, tokens_free
from tests.harness import ProxyProcess, proxy_config, running_proxy
from tests.security.raw_backend import raw_backend, raw_exchange

# A step that is judged every 0.3 s but never passes (too few requests), so the window
# grows while the test sends traffic; a critical failure would still roll back at once.
HOLDING = {**FAST, "min_requests": 1_000_000}


def canary_cfg(v1: str, v2: str, tmp_path: Path, **route: Any) -> dict[str, Any]:
    cfg = tokens_free(rollout_cfg(v1, v2, steps=[50, 100], step_interval_s=0.3,
                                  progress_deadline_s=600, analysis=HOLDING), tmp_path)
    cfg["routes"][0].update(route)
    return cfg


async def start_canary(http: aiohttp.ClientSession, p: ProxyProcess) -> None:
    status, doc = await api(http, p, "POST", "/api/v1/routes/r/rollouts", {})
    assert status == 201 and doc["weights"] == {"stable": 50, "canary": 50}, doc
    await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
               lambda sd: len(sd[1]["analyses"]) >= 1)


async def judged(http: aiohttp.ClientSession, p: ProxyProcess, total: int) -> dict[str, Any]:
    """The rollout document once its last analysis has ``total`` judged requests (or the
    rollout has ended)."""
    def done(sd: tuple[int, dict[str, Any]]) -> bool:
        doc = sd[1]
        last = doc["analyses"][-1]
        seen = last["baseline"]["requests"] + last["candidate"]["requests"]
        return doc["state"] != "progressing" or seen >= total
    _, doc = await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"), done)
    return doc  # type: ignore[no-any-return]


async def metric(http: aiohttp.ClientSession, p: ProxyProcess, pattern: str) -> float:
    async with http.get(p.admin_url + "/metrics") as r:
        text = await r.text()
    return sum(float(m.group(1)) for m in re.finditer(pattern + r" (\S+)", text))


async def test_absolute_form_requests_do_not_roll_a_healthy_canary_back(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1, v2 = await sample_servers("v1", latency_ms=1), await sample_servers("v2", latency_ms=1)
    cfg = canary_cfg(v1.url, v2.url, tmp_path)
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        await start_canary(http, p)
        statuses = []
        for i in range(60):
            r = await raw_exchange(p.data_url, (
                f"POST http://models.example/v1/models/m:predict?i={i} HTTP/1.1\r\n"
                "Host: models.example\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\nConnection: close\r\n\r\n{}").encode())
            statuses.append(r.status)
        doc = await judged(http, p, 60)
    assert doc["state"] == "progressing", doc["reason"]
    assert statuses == [200] * 60
    last = doc["analyses"][-1]
    assert last["candidate"]["requests"] > 15 and last["candidate"]["errors"] == 0, last
    assert last["baseline"]["errors"] == 0
    assert {s.path_qs.partition("?")[0] for s in [*v1.seen, *v2.seen]} == {
        "/v1/models/m:predict"}


async def test_client_caused_failures_never_reach_the_judge(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    v1, v2 = await sample_servers("v1", latency_ms=1), await sample_servers("v2", latency_ms=1)
    cfg = canary_cfg(v1.url, v2.url, tmp_path, max_body_bytes=100_000)
    for backend in cfg["backends"].values():
        backend["timeout_s"] = 1.0  # the upstream exchange, body upload included
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http:
        await start_canary(http, p)
        host, port = p.data_url.removeprefix("http://").split(":")

        async def stalled() -> int:
            """Announces 90 kB, sends 10 bytes and waits: 408 once the timeout runs out."""
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n"
                         + b"x" * 10)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            writer.close()
            return status

        async def left_mid_body() -> None:
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n"
                         + b"x" * 70_000)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.transport.abort()

        async def too_large_streamed() -> int:
            async def chunks() -> Any:
                for _ in range(4):
                    yield b"x" * 40_000
            async with aiohttp.ClientSession() as s, s.post(p.data_url + "/p",
                                                            data=chunks()) as r:
                return r.status

        stall = [asyncio.ensure_future(stalled()) for _ in range(4)]
        for _ in range(3):
            await left_mid_body()
        large = [await too_large_streamed() for _ in range(3)]
        refused = [(await raw_exchange(p.data_url, t.encode())).status for t in (
            "GET /p/../.. HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET /p#x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET /p HTTP/1.1\r\nHost: x\r\nx-splitway-variant: nope\r\nConnection: close\r\n\r\n",
        )]
        ok = 0
        for i in range(40):
            async with http.post(p.data_url + f"/p?{i}", json={"i": i}) as r:
                ok += r.status == 200
        stalled_statuses = await asyncio.gather(*stall)
        doc = await judged(http, p, 40)
        upstream_timeouts = await metric(http, p, r'splitway_upstream_errors_total\{[^}]*'
                                                  r'reason="timeout"[^}]*\}')
        client_4xx = await metric(http, p, r'splitway_requests_total\{code="4xx"[^}]*\}')
    assert stalled_statuses == [408] * 4
    assert large == [413] * 3 and refused == [400, 400, 400] and ok == 40
    assert doc["state"] == "progressing", doc["reason"]
    last = doc["analyses"][-1]
    # exactly the 40 good requests: none of the 4 + 3 + 3 client failures is judged
    assert last["baseline"]["requests"] + last["candidate"]["requests"] == 40, last
    assert last["baseline"]["errors"] == last["candidate"]["errors"] == 0
    # ... and Prometheus still counts them with their real class: 408 x4, 413 x3, 499 x3
    assert client_4xx == 10
    assert upstream_timeouts == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_error_bodies_name_the_backend_not_its_address(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    async with raw_backend(name="slow", hold=True) as slow:
        cfg = proxy_config({"sentiment-v2": [dead], "sentiment-v3": [slow.url]}, [
            {"name": "down", "match": {"path_prefix": "/down"}, "variants": {"a": "sentiment-v2"},
             "split": {"weights": {"a": 1}}},
            {"name": "slow", "match": {"path_prefix": "/slow"}, "variants": {"a": "sentiment-v3"},
             "split": {"weights": {"a": 1}}}])
        cfg["backends"]["sentiment-v3"]["timeout_s"] = 0.5
        async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession() as http:
            bodies = []
            for path, status in (("/down/p", 502), ("/slow/p", 504)):
                async with http.post(p.data_url + path, json={}) as r:
                    assert r.status == status
                    bodies.append(await r.text())
            # the full detail goes to the log instead: one warning line per failure
            await poll(lambda: asyncio.sleep(0, p.log),
                       lambda log: sum("WARNING" in x and "request_id=" in x for x in log) >= 2,
                       timeout=10)
            slow.release(10)
    down, timed_out = bodies
    assert '"cannot connect to sentiment-v2: Connection refused"' in down
    assert '"sentiment-v3 did not answer in time"' in timed_out
    for body in bodies:
        assert "127.0.0.1" not in body and "http://" not in body, body
        assert str(slow.port) not in body and dead.rpartition(":")[2] not in body
    warnings = [x for x in p.log if "WARNING" in x and "request_id=" in x]
    assert any(dead in x and "sentiment-v2" in x for x in warnings), warnings
    assert any(slow.url in x and "sentiment-v3" in x for x in warnings), warnings
