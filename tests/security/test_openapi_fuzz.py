"""schemathesis against the real process: ``/api/openapi.json`` says what the API takes and
answers, and the running proxy agrees — 0 server errors, 0 schema mismatches.

The proxy runs with a tokens file (the fuzzer holds an ``admin`` token), SQLite (and
PostgreSQL when ``SPLITWAY_TEST_POSTGRES_URL`` is set), two routes over sample model servers
(one with a shadow, a rollout policy and an experiment), two registered versions, an
uploaded artifact, a pending promotion (requested by another user, so the fuzzer may review
it) and a running rollout (for the gates), so most operations have something to act on;
path parameters and a few body fields are drawn from those names half of the time (and
generated the rest, which exercises the 404s and 422s).

Every phase of ``schemathesis run`` runs (coverage: boundary and invalid values of each
parameter and undeclared methods; fuzzing; stateful sequences), seeded and with
deterministic generation, with these checks:

- no 5xx; every status, content type, header and body as the document declares it;
- schema-invalid input refused (4xx), and a 405 for a method a path does not take
  carries ``Allow``;
- schema-valid input is never refused as malformed: a 400/422 on positive data fails,
  unless its ``field`` is one the operation lists under ``x-splitway-semantic-422`` (a rule
  across fields or on other resources that no schema can state).

Operations mutate the live process (reload, weights, rollouts and their gates, promotions,
experiments): that changes what later requests see, never whether answers conform.

A second test pins a case random generation rarely reaches: NUL in stored text (which
PostgreSQL cannot hold) is a 422 naming the field on every store, never a store error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import StartServer
from tests.harness import in_schema, pg_schema, proxy_config, running_proxy

schemathesis = pytest.importorskip("schemathesis", minversion="4")
from schemathesis.engine import Status, StopReason, events  # noqa: E402

TOKEN = "spw_fuzz_admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATOR = {"Authorization": "Bearer spw_fuzz_operator"}  # requests what the fuzzer reviews
SEED = 20240501
MAX_EXAMPLES = 15
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance",
          "negative_data_rejection", "unsupported_method", "ignored_auth",
          "schema_valid_input_is_accepted")


@schemathesis.check
def schema_valid_input_is_accepted(ctx: Any, response: Any, case: Any) -> None:
    """Positive data (valid per the document) is not refused as malformed (400/422),
    except for the operation's declared semantic 422s."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if case.method.upper() != case.operation.method.upper():
        return  # an undeclared-method probe, judged by unsupported_method
    if response.status_code not in (400, 422):
        return
    try:
        field = str(json.loads(response.content).get("field") or "")
    except (ValueError, AttributeError):
        field = ""
    semantic = case.operation.definition.raw.get("x-splitway-semantic-422", {})
    if response.status_code == 422 and any(field == f or field.startswith(f + ".")
                                           for f in semantic):
        return
    raise AssertionError(f"schema-valid input refused with {response.status_code} "
                         f"(field {field!r}): {response.content[:300]!r}")


def _config(dictionaries: dict[str, list[str]]) -> Any:
    enabled = {name: {"enabled": name in CHECKS} for name in (
        *CHECKS, "positive_data_acceptance", "use_after_free",
        "ensure_resource_availability", "missing_required_header")}
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "workers": 1,
        "headers": AUTH,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none"},
        "checks": {**enabled, "enabled": False},
        "dictionaries": {name: {"values": values} for name, values in dictionaries.items()},
        "parameters": {key: {"dictionary": name, "probability": 0.5}
                       for key, name in (("path.route", "routes"), ("path.model", "models"),
                                         ("path.version", "versions"),
                                         ("path.name", "experiments"),
                                         ("path.id", "promotions"),
                                         ("path.sha256", "artifacts"),
                                         ("body.winner", "variants"),
                                         ("body.candidate", "variants"))},
    })


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)  # one entry per failure, with a curl
    cases: dict[str, int] = field(default_factory=dict)  # per operation (or scenario)
    checks: dict[str, int] = field(default_factory=dict)  # how often each check ran
    statuses: dict[str, set[int]] = field(default_factory=dict)  # seen, per operation
    stop: StopReason | None = None


def _run(url: str, dictionaries: dict[str, list[str]]) -> Outcome:
    """Run every phase of ``schemathesis run`` against ``url``."""
    schema = schemathesis.openapi.from_url(url, config=_config(dictionaries))
    out = Outcome()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            rec = event.recorder
            out.cases[rec.label] = out.cases.get(rec.label, 0) + len(rec.cases)
            for case_id, interaction in rec.interactions.items():
                if interaction.response is not None:
                    label = rec.cases[case_id].value.operation.label
                    out.statuses.setdefault(label, set()).add(interaction.response.status_code)
            for check in (c for checks in rec.checks.values() for c in checks):
                out.checks[check.name] = out.checks.get(check.name, 0) + 1
                if check.status is Status.FAILURE and check.failure_info is not None:
                    info = check.failure_info
                    out.failures.append(f"{rec.label} [{check.name}] {info.failure.title}: "
                                        f"{info.failure.message[:400]}\n    {info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            out.failures.append(f"{event.label}: error {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            out.stop = event.stop_reason
    out.failures = sorted(set(out.failures))
    return out


async def _seed(http: aiohttp.ClientSession, admin: str, data: str) -> dict[str, list[str]]:
    """Give the operations something to act on; the names the fuzzer should try."""
    async def call(method: str, path: str, headers: dict[str, str] = AUTH, **kw: Any) -> Any:
        async with http.request(method, admin + path, headers=headers, **kw) as r:
            assert r.status < 300, (path, r.status, await r.text())
            return await r.json()

    for version, backend in (("1.0.0", "m-v1"), ("1.1.0", "m-v2")):
        await call("POST", "/api/v1/models/sentiment/versions",
                   json={"version": version, "backend": backend, "metrics": {"acc": 0.9},
                         "tags": ["nlp"]})
    artifact = await call("POST", "/api/v1/artifacts", data=b"weights" * 100)
    pending = await call("POST", "/api/v1/models/sentiment/versions/1.1.0/promotions",
                         headers=OPERATOR,
                         json={"stage": "staging", "justification": "offline eval passed"})
    await call("POST", "/api/v1/routes/sentiment/rollouts", json={})  # for the gates
    for i in range(20):  # traffic for the experiment, shadow and route reports
        async with http.post(data + "/v1/models/sentiment/predict",
                             headers={"x-user-id": f"u{i}"}, json={"x": i}) as r:
            assert r.status == 200
    return {"routes": ["sentiment", "other"], "models": ["sentiment"],
            "versions": ["1.0.0", "1.1.0"], "experiments": ["sentiment-ab"],
            "promotions": [pending["id"]], "artifacts": [artifact["sha256"]],
            "variants": ["stable", "canary", "a", "b"]}


PG_URL = os.environ.get("SPLITWAY_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="SPLITWAY_TEST_POSTGRES_URL is not set")])])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The state store: SQLite, and PostgreSQL (a fresh schema) when configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    assert PG_URL is not None
    with pg_schema(PG_URL, "sw_fuzz") as schema:
        yield in_schema(PG_URL, schema)


@pytest.fixture
def fuzz_config(tmp_path: Path, state_url: str) -> dict[str, Any]:
    entries = [{"sha256": hashlib.sha256(token.encode()).hexdigest(), "user": user,
                "roles": [role]}
               for token, user, role in ((TOKEN, "fuzz", "admin"),
                                         ("spw_fuzz_operator", "olga", "operator"))]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    return {"approvals": {"staging": {"required": 1}, "production": {"required": 1}},
            "state": state_url}


async def test_schemathesis_finds_no_server_error_and_no_mismatch(
    tmp_path: Path, sample_servers: StartServer, fuzz_config: dict[str, Any]
) -> None:
    v1, v2, v3 = [await sample_servers(n) for n in ("m-v1", "m-v2", "m-v3")]
    cfg = proxy_config({"m-v1": [v1.url], "m-v2": [v2.url], "m-v3": [v3.url]}, [
        {"name": "sentiment", "match": {"path_prefix": "/v1/models/sentiment"},
         "variants": {"stable": "m-v1", "canary": "m-v2"},
         "split": {"strategy": "hash", "hash_on": "header:x-user-id",
                   "weights": {"stable": 90, "canary": 10}},
         "shadow": {"backend": "m-v3", "percent": 100},
         "rollout": {"strategy": "canary", "baseline": "stable", "candidate": "canary",
                     "steps": [10, 50, 100], "step_interval_s": 3600,
                     "analysis": {"min_requests": 100000}},
         "experiment": {"name": "sentiment-ab", "control": "stable",
                        "success": {"status_below": 500}}},
        {"name": "other", "match": {"path_prefix": "/other"},
         "variants": {"a": "m-v1", "b": "m-v2"}, "split": {"weights": {"a": 50, "b": 50}}},
    ], **fuzz_config)
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    async with running_proxy(tmp_path, cfg) as p:
        async with aiohttp.ClientSession() as http:
            names = await _seed(http, p.admin_url, p.data_url)
        started = time.monotonic()
        out = await asyncio.to_thread(_run, p.admin_url + "/api/openapi.json", names)
        elapsed = time.monotonic() - started
        assert not [line for line in p.log if "Traceback" in line], "\n".join(p.log[-40:])
    reached = {op for op, codes in out.statuses.items() if any(200 <= c < 300 for c in codes)}
    print(f"schemathesis: {sum(out.cases.values())} cases in {elapsed:.1f}s, "
          f"{len(reached)}/{len(out.statuses)} operations answered 2xx; checks {out.checks}")
    assert out.failures == [], f"{len(out.failures)} failures:\n" + "\n".join(out.failures)
    assert out.stop is StopReason.COMPLETED
    assert set(out.checks) == set(CHECKS), out.checks  # each check ran (and only those)
    assert len(out.statuses) >= 36, sorted(out.statuses)  # every operation was exercised
    # ...and most got past validation to their work (the seed gives them something)
    assert len(reached) >= 30, {op: sorted(c) for op, c in out.statuses.items()}


async def test_text_with_nul_is_refused_naming_the_field(
    tmp_path: Path, sample_servers: StartServer, fuzz_config: dict[str, Any]
) -> None:
    """PostgreSQL text cannot hold NUL: the schema says so, and the refusal is a 422
    naming the field on every store, never a store error."""
    v1 = await sample_servers("m-v1")
    cfg = proxy_config({"m-v1": [v1.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "m-v1"},
         "split": {"weights": {"a": 1}}}], **fuzz_config)
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    reg = "/api/v1/models/m/versions"
    async with running_proxy(tmp_path, cfg) as p, aiohttp.ClientSession() as http:
        async def call(path: str, body: dict[str, Any], headers: dict[str, str] = AUTH,
                       ) -> tuple[int, Any]:
            async with http.post(p.admin_url + path, json=body, headers=headers) as r:
                return r.status, await r.json()

        assert (await call(reg, {"version": "1.0.0", "backend": "m-v1"}))[0] == 201
        status, pending = await call(reg + "/1.0.0/promotions", headers=OPERATOR, body={
            "stage": "staging", "justification": "ok"})
        assert status == 201
        for path, body, field in (
            (reg, {"version": "1.0.1", "backend": "m-v1", "description": "a\x00b"},
             "description"),
            (reg, {"version": "1.0.1", "backend": "m-v1", "artifact": {"uri": "s3://b/\x00"}},
             "artifact.uri"),
            (reg + "/1.0.0/promotions", {"stage": "production", "justification": "x\x00"},
             "justification"),
            (f"/api/v1/promotions/{pending['id']}/comment", {"comment": "\x00"}, "comment"),
            (f"/api/v1/promotions/{pending['id']}/approve", {"comment": "ok\x00"}, "comment"),
        ):
            status, err = await call(path, body)
            assert (status, err.get("field")) == (422, field), (path, err)
