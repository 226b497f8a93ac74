"""Pins sway judgement only from a trusted source: through the real process.

With ``allow_pin`` any client can aim requests at the canary with ``x-splitway-variant``.
Before the fix, 20 failing pinned requests forced a critical rollback. Now a pin is still
routed (and counted in Prometheus), but reaches the rollout judge only when it comes from a
source ``split.trusted_pins`` names: here a shared secret in ``x-splitway-pin-secret``
*and* a loopback address, 127.0.0.1 (the tests connect from 127.0.0.2 to be another
source). Blue-green, judged on pinned traffic, works on trusted pins. Pins never count in
experiments (they are not randomised).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config_load import load_settings
from proxy.errors import ConfigError
from tests.conftest import StartServer
from tests.e2e.rollout_support import poll
from tests.e2e.test_experiment import blast, experiment_cfg
from tests.e2e.test_rollout import AUTH, FAST, api, rollout_cfg, tokens_free
from tests.harness import ProxyProcess, running_proxy
from tests.security.test_client_errors import HOLDING, metric

SECRET = secrets.token_hex(16)
ENV = {"SPLITWAY_PIN_SECRET": SECRET}
TRUSTED = {"header": "x-splitway-pin-secret", "secret": "${SPLITWAY_PIN_SECRET}",
           "sources": ["127.0.0.1/32"]}
PIN = {"x-splitway-variant": "canary"}


@pytest.fixture
async def other_source() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from 127.0.0.2, not 127.0.0.1."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def pinned(session: aiohttp.ClientSession, p: ProxyProcess, n: int,
                 headers: dict[str, str]) -> list[tuple[int, str]]:
    out = []
    for i in range(n):
        async with session.post(p.data_url + f"/p?{i}", json={}, headers=headers) as r:
            await r.read()
            out.append((r.status, r.headers["x-splitway-variant"]))
    return out


async def analyses_after(http: aiohttp.ClientSession, p: ProxyProcess, n: int
                         ) -> dict[str, Any]:
    """The rollout document once ``n`` more analyses were recorded (or it ended)."""
    _, before = await api(http, p, "GET", "/api/v1/routes/r/rollout")
    _, doc = await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
                        lambda sd: sd[1]["state"] != "progressing"
                        or len(sd[1]["analyses"]) >= len(before["analyses"]) + n)
    return doc  # type: ignore[no-any-return]


async def test_untrusted_pins_cannot_force_a_rollback_trusted_ones_count(
    tmp_path: Path, sample_servers: StartServer, other_source: aiohttp.ClientSession
) -> None:
    v1 = await sample_servers("v1", latency_ms=1)
    v2 = await sample_servers("v2", latency_ms=1, error_rate=1.0)  # every answer a 500
    cfg = tokens_free(rollout_cfg(v1.url, v2.url, steps=[5, 100], step_interval_s=0.3,
                                  progress_deadline_s=600, analysis=HOLDING), tmp_path)
    cfg["routes"][0]["split"]["trusted_pins"] = TRUSTED
    async with running_proxy(tmp_path, cfg, env=ENV) as p, \
            aiohttp.ClientSession(headers=AUTH) as http, aiohttp.ClientSession() as local:
        status, _ = await api(http, p, "POST", "/api/v1/routes/r/rollouts", {})
        assert status == 201
        await analyses_after(http, p, 1)  # the step's window is open
        secret = {"x-splitway-pin-secret": SECRET}
        untrusted = [
            *await pinned(local, p, 15, PIN),  # right source, no secret
            *await pinned(local, p, 15, {**PIN, "x-splitway-pin-secret": "x" * 32}),
            *await pinned(other_source, p, 15, {**PIN, **secret}),  # secret, wrong source
        ]
        # still routed as pinned, still answered by the canary ...
        assert untrusted == [(500, "canary")] * 45
        doc = await analyses_after(http, p, 2)
        assert doc["state"] == "progressing", doc["reason"]
        # ... but not in the judge's window
        assert doc["analyses"][-1]["candidate"]["requests"] == 0, doc["analyses"][-1]
        # ... while Prometheus counts every one of them
        assert await metric(http, p, r'splitway_requests_total\{code="5xx",route="r",'
                                     r'variant="canary"\}') == 45
        # The secret header never goes upstream, whether it matched or not.
        assert all("x-splitway-pin-secret" not in s.headers for s in v2.seen)
        # Trusted pins are judged: 25 failures are a critical rollback.
        trusted = await pinned(local, p, 25, {**PIN, **secret})
        assert trusted == [(500, "canary")] * 25
        _, doc = await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
                            lambda sd: sd[1]["state"] != "progressing")
    assert doc["state"] == "rolled_back" and doc["reason"].startswith("critical"), doc
    assert all("x-splitway-pin-secret" not in s.headers for s in v2.seen)


async def test_without_trusted_pins_no_pin_reaches_the_judge(
    tmp_path: Path, sample_servers: StartServer
) -> None:
    """The probe's replay: 25 failing pinned requests on a route with ``allow_pin`` (and no
    ``trusted_pins``) forced a critical rollback of the canary."""
    v1 = await sample_servers("v1", latency_ms=1)
    v2 = await sample_servers("v2", latency_ms=1, error_rate=1.0)
    cfg = tokens_free(rollout_cfg(v1.url, v2.url, steps=[5, 100], step_interval_s=0.3,
                                  progress_deadline_s=600, analysis=HOLDING), tmp_path)
    async with running_proxy(tmp_path, cfg) as p, \
            aiohttp.ClientSession(headers=AUTH) as http, aiohttp.ClientSession() as local:
        status, _ = await api(http, p, "POST", "/api/v1/routes/r/rollouts", {})
        assert status == 201
        await analyses_after(http, p, 1)
        assert await pinned(local, p, 25, PIN) == [(500, "canary")] * 25
        doc = await analyses_after(http, p, 2)
    assert doc["state"] == "progressing", doc["reason"]
    assert doc["analyses"][-1]["candidate"]["requests"] == 0


async def test_blue_green_is_judged_on_trusted_pins_only(
    tmp_path: Path, sample_servers: StartServer, other_source: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1", latency_ms=1), await sample_servers("v2", latency_ms=1)
    # A 30 % error limit: the 30 clean trusted previews show the candidate under it.
    cfg = tokens_free(rollout_cfg(v1.url, v2.url, strategy="blue_green", step_interval_s=0.3,
                                  progress_deadline_s=600,
                                  analysis={**FAST, "max_error_rate": 0.3}), tmp_path)
    cfg["routes"][0]["split"]["trusted_pins"] = TRUSTED
    secret = {"x-splitway-pin-secret": SECRET}
    async with running_proxy(tmp_path, cfg, env=ENV) as p, \
            aiohttp.ClientSession(headers=AUTH) as http, aiohttp.ClientSession() as local:
        status, doc = await api(http, p, "POST", "/api/v1/routes/r/rollouts", {})
        assert status == 201 and doc["weights"] == {"stable": 100, "canary": 0}
        await analyses_after(http, p, 1)
        # A preview from an untrusted source is served, but the candidate is not judged on it.
        assert await pinned(other_source, p, FAST["min_requests"] + 10,
                            {**PIN, **secret}) == [(200, "canary")] * 30
        doc = await analyses_after(http, p, 2)
        assert doc["state"] == "progressing"
        assert doc["analyses"][-1]["decision"] == "hold"
        assert doc["analyses"][-1]["candidate"]["requests"] == 0
        # The trusted preview is: the candidate passes and takes 100 % at once.
        await pinned(local, p, FAST["min_requests"] + 10, {**PIN, **secret})
        _, doc = await poll(lambda: api(http, p, "GET", "/api/v1/routes/r/rollout"),
                            lambda sd: sd[1]["state"] != "progressing")
    assert doc["state"] == "succeeded" and doc["weights"]["canary"] == 100, doc
    passed = [a for a in doc["analyses"] if a["decision"] == "pass"]
    assert passed and passed[-1]["candidate"]["requests"] >= FAST["min_requests"]


async def test_pins_stay_out_of_experiments_and_blue_green_needs_trusted_pins(
    tmp_path: Path, sample_servers: StartServer, other_source: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    cfg = experiment_cfg(v1.url, v2.url, tmp_path)
    cfg["routes"][0]["rollout"] = {"baseline": "control", "candidate": "treat"}
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession(headers=AUTH) as http, \
            aiohttp.ClientSession() as local:
        await blast(p.data_url + "/p", 40)
        await pinned(local, p, 10, {"x-splitway-variant": "treat"})
        await pinned(other_source, p, 10, {"x-splitway-variant": "treat"})
        _, rep = await api(http, p, "GET", "/api/v1/experiments/ab")
        # this route names no trusted_pins: a blue-green rollout could never be judged
        status, err = await api(http, p, "POST", "/api/v1/routes/r/rollouts",
                                {"strategy": "blue_green"})
    assert sum(v["requests"] for v in rep["variants"].values()) == 40
    assert status == 422 and err["field"] == "strategy" and "trusted_pins" in err["detail"]


CONFIG = """
version: 1
backends: {a: {endpoints: [http://127.0.0.1:1]}}
routes:
  - name: r
    variants: {stable: a, canary: a}
    split: %s
    rollout: {strategy: %s, baseline: stable, candidate: canary}
"""


@pytest.mark.parametrize(("split", "strategy", "problem"), [
    ("{weights: {stable: 1}, allow_pin: true}", "blue_green",
     "routes[0].rollout.strategy: blue_green is judged on pinned requests"),
    ("{weights: {stable: 1}, trusted_pins: {sources: [10.0.0.0/8]}}", "canary",
     "routes[0].split.trusted_pins: trusted_pins needs allow_pin: true"),
    ("{weights: {stable: 1}, allow_pin: true, trusted_pins: {}}", "canary",
     "routes[0].split.trusted_pins: give secret, sources or both"),
    ("{weights: {stable: 1}, allow_pin: true, trusted_pins: {sources: [10.0.0.1/8]}}",
     "canary", "routes[0].split.trusted_pins.sources[0]: 10.0.0.1/8 has host bits set"),
    ("{weights: {stable: 1}, allow_pin: true, trusted_pins: {secret: short}}", "canary",
     "routes[0].split.trusted_pins.secret: use at least 16 characters"),
    ("{weights: {stable: 1}, allow_pin: true, trusted_pins: {secret: '${S}', "
     "header: x-splitway-variant}}", "canary",
     "routes[0].split.trusted_pins.header: 'x-splitway-variant' is a header splitway uses"),
])
def test_trusted_pins_config_problems(split: str, strategy: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIG % (split, strategy), {"S": SECRET})
    assert any(str(p).startswith(problem) for p in info.value.problems), info.value.problems


def test_the_secret_comes_from_the_environment_and_is_never_shown() -> None:
    split = ("{weights: {stable: 1}, allow_pin: true, trusted_pins: "
             "{secret: '${SPLITWAY_PIN_SECRET}', sources: ['::1', 127.0.0.1/32]}}")
    settings = load_settings(CONFIG % (split, "blue_green"), ENV)
    trusted = settings.routes[0].split.trusted_pins
    assert trusted is not None and trusted.secret is not None
    assert trusted.secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(trusted.model_dump())
    with pytest.raises(ConfigError, match="SPLITWAY_PIN_SECRET is not set"):
        load_settings(CONFIG % (split, "blue_green"), {})
