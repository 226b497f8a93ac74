"""The audit admin API against a real ``splitway run`` process: filters, pagination,
exports, verification after tampering with the database, the compliance report, roles
and 422s naming the bad field; plus the log's snapshot reads on both stores."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from control.api import audit as audit_api
from control.store import Store, open_store
from proxy.admin import create_admin_app
from proxy.app import ProxyState
from proxy.config_load import parse_settings
from proxy.errors import StoreError
from tests.control.conftest import FakeClock
from tests.harness import ProxyProcess, proxy_config, running_proxy

TOKENS = {"view-token": ("vic", ["viewer"]), "op-token": ("olga", ["operator"]),
          "appr-token": ("abe", ["approver"])}
VIEW = {"Authorization": "Bearer view-token"}
OP = {"Authorization": "Bearer op-token"}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SEEDED = 40
SETTINGS = {
    "version": 1, "listen": "127.0.0.1:0", "admin": {"listen": "127.0.0.1:0"},
    "backends": {"v1": {"endpoints": ["http://127.0.0.1:9"]}},
    "routes": [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
                "split": {"weights": {"a": 1}}}],
}
KINDS = [("weights.changed", "info"), ("rollout.step", "info"),
         ("rollout.started", "info"), ("security.violation", "warning")]


@dataclass
class Api:
    proc: ProxyProcess
    http: aiohttp.ClientSession
    db: Path

    async def get(self, path: str, headers: Mapping[str, str] | None = VIEW,
                  **params: Any) -> tuple[int, Any]:
        async with self.http.get(self.proc.admin_url + path, params=params,
                                 headers=headers or {}) as r:
            text = await r.text()
            return r.status, json.loads(text) if r.content_type == "application/json" else text

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        status, body = await self.get("/api/v1/audit", limit=1000, **params)
        assert status == 200, body
        assert body["next_cursor"] is None
        return list(body["events"])

    async def wait_for_violations(self, total: int, after: int = 0,
                                  **params: Any) -> list[dict[str, Any]]:
        """The ``security.violation`` events after the first ``after``, once their counts
        add up to ``total`` (they are aggregated and written by a background loop)."""
        async with asyncio.timeout(10):
            while True:
                found = (await self.events(type="security.violation", **params))[after:]
                if sum(e["details"].get("count", 0) for e in found) >= total:
                    return found
                await asyncio.sleep(0.05)


async def seed(url: str, n: int = SEEDED) -> None:
    """``n`` events a second apart from 2024-05-01T12:00:01Z, in one transaction."""
    async with open_store(url, clock=FakeClock(T0)) as store:
        async with store.transaction() as tx:
            for i in range(n):
                etype, severity = KINDS[i % 4]
                await store.audit.append(tx, etype, ["ann", "ben"][i % 2], f"route/r{i % 3}",
                                         {"i": i, "note": "a,b \"c\"\né"}, severity)


@pytest.fixture
async def api(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    db = tmp_path / "state.db"
    await seed(f"sqlite:///{db}")
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": u, "roles": r}
               for t, (u, r) in TOKENS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    cfg = proxy_config({"v1": ["http://127.0.0.1:9"], "v2": ["http://127.0.0.1:9"]}, [
        {"name": "r", "match": {"path_prefix": "/"},
         "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": {"stable": 100, "canary": 0}}}],
        admin={"tokens_file": "tokens.yaml", "violation_interval_s": 0.5})
    async with running_proxy(tmp_path, cfg) as proc:
        a = Api(proc, http, db)
        # three more events through the API: weights.changed, security.violation,
        # config.reloaded
        async with http.put(proc.admin_url + "/api/v1/routes/r/weights", headers=OP,
                            json={"weights": {"stable": 90, "canary": 10}}) as r:
            assert r.status == 200
        assert (await a.get("/api/v1/routes", headers={"Authorization": "Bearer nope"}))[0] == 401
        # refusals are counted and written by a loop (the 401 never waits on the store)
        await a.wait_for_violations(1)
        async with http.post(proc.admin_url + "/api/v1/reload", headers=OP) as r:
            assert r.status == 200
        yield a


async def test_filters_match_every_event_exactly(api: Api) -> None:
    everything = await api.events()
    assert [e["seq"] for e in everything] == list(range(1, SEEDED + 4))
    assert [e["type"] for e in everything[-3:]] == [
        "weights.changed", "security.violation", "config.reloaded"]
    assert everything[-3]["actor"] == "olga" and everything[-3]["resource"] == "route/r"
    assert set(everything[0]) == {"seq", "id", "ts", "type", "actor", "severity", "resource",
                                  "details", "prev_hash", "hash"}

    def where(**want: Any) -> list[int]:
        return [e["seq"] for e in everything if all(e[k] == v for k, v in want.items())]

    rollout = [e["seq"] for e in everything if e["type"].startswith("rollout.")]
    assert [e["seq"] for e in await api.events(type="rollout.")] == rollout and rollout
    assert [e["seq"] for e in await api.events(type="rollout.step")] == where(
        type="rollout.step")
    assert [e["seq"] for e in await api.events(actor="ben")] == where(actor="ben")
    assert [e["seq"] for e in await api.events(resource="route/r1")] == where(
        resource="route/r1")
    assert [e["seq"] for e in await api.events(severity="warning")] == where(
        severity="warning")
    assert [e["seq"] for e in await api.events(
        type="security.", actor="ann", severity="warning")] == where(
        type="security.violation", actor="ann", severity="warning")
    # seeded events are a second apart; since is inclusive, until exclusive, any offset
    until = datetime.fromisoformat(everything[9]["ts"]).astimezone(timezone(timedelta(hours=2)))
    window = await api.events(since=everything[4]["ts"], until=until.isoformat())
    assert [e["seq"] for e in window] == [5, 6, 7, 8, 9]
    just_after = everything[2]["ts"].replace(".000000Z", ".000001Z")
    assert [e["seq"] for e in await api.events(until=just_after)] == [1, 2, 3]


@pytest.mark.parametrize(("params", "order"), [
    ({"limit": 7}, "asc"), ({"limit": 1, "type": "rollout."}, "asc"),
    ({"limit": 6, "order": "desc"}, "desc"), ({"limit": 1000}, "asc")])
async def test_pagination_walks_every_event_exactly_once(
    api: Api, params: dict[str, Any], order: str
) -> None:
    want = [e["seq"] for e in await api.events(**{k: v for k, v in params.items()
                                                    if k == "type"})]
    if order == "desc":
        want.reverse()
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        more: dict[str, Any] = {"cursor": cursor} if cursor else {}
        status, page = await api.get("/api/v1/audit", **params, **more)
        assert status == 200, page
        assert len(page["events"]) <= params["limit"]
        seen += [e["seq"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        if pages == 2:  # events appended mid-walk join the end, nothing repeats
            async with api.http.put(api.proc.admin_url + "/api/v1/routes/r/weights",
                                    headers=OP,
                                    json={"weights": {"stable": 80, "canary": 20}}) as r:
                assert r.status == 200
    expected_len = len(want) + (1 if order == "asc" and "type" not in params
                                and pages > 2 else 0)
    assert seen[: len(want)] == want and len(seen) == expected_len
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "yesterday"}, "since"), ({"since": "2024-05-01"}, "since"),
    ({"until": "2024-05-01T12:00:00"}, "until"),  # no offset: ambiguous
    ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "until"),
    ({"severity": "loud"}, "severity"), ({"type": "nope."}, "type"), ({"actor": ""}, "actor"),
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "x"}, "limit"),
    ({"cursor": "abc"}, "cursor"), ({"order": "sideways"}, "order"), ({"typ": "x"}, "typ")])
async def test_bad_filters_are_422_naming_the_field(
    api: Api, params: dict[str, Any], field: str
) -> None:
    for path in ("/api/v1/audit", "/api/v1/audit/export", "/api/v1/reports/compliance"):
        # (a parameter an operation does not take is refused as unknown: same field)
        status, body = await api.get(path, **params)
        assert status == 422, (path, body)
        assert body["error"] == "invalid" and body["field"] == field, body
        assert field in body["detail"]


async def test_repeated_parameter_and_bad_format(api: Api) -> None:
    async with api.http.get(api.proc.admin_url + "/api/v1/audit?type=a&type=b",
                            headers=VIEW) as r:
        assert r.status == 422 and (await r.json())["field"] == "type"
    status, body = await api.get("/api/v1/audit/export", format="xml")
    assert status == 422 and body["field"] == "format"
    status, body = await api.get("/api/v1/audit/verify", deep="1")
    assert status == 422 and body["field"] == "deep"


async def test_roles(api: Api) -> None:
    paths = ("/api/v1/audit", "/api/v1/audit/verify", "/api/v1/audit/export",
             "/api/v1/reports/compliance")
    before = len(await api.events(type="security.violation"))
    for path in paths:
        assert (await api.get(path, headers=None))[0] == 401
        status, body = await api.get(path, headers={"Authorization": "Bearer appr-token"})
        assert status == 403 and body["error"] == "forbidden", body
        assert (await api.get(path, headers=OP))[0] == 200  # operator implies viewer
        assert (await api.get(path))[0] == 200
    # the 401s and 403s, aggregated per source, kind and interval
    violations = await api.wait_for_violations(8, after=before)
    assert sum(v["details"]["count"] for v in violations) == 8 and len(violations) <= 8
    by_kind = {(v["details"]["kind"], v["actor"]) for v in violations}
    assert by_kind == {("missing_token", "anonymous"), ("wrong_role", "abe")}
    assert (await api.get("/api/openapi.json", headers=None))[0] == 200  # public


def _csv_events(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert all(r.pop("unreadable") == "" for r in rows)  # the column for tampered rows
    return [{**r, "seq": int(r["seq"]), "details": json.loads(r["details"])} for r in rows]


async def test_each_export_format_has_the_same_events(api: Api) -> None:
    want = await api.events(type="rollout.", actor="ann")
    assert want
    parsers: dict[str, Callable[[str], Any]] = {
        "json": json.loads, "yaml": yaml.safe_load, "csv": _csv_events,
        "jsonl": lambda t: [json.loads(line) for line in t.splitlines()]}
    types = {"json": "application/json", "jsonl": "application/x-ndjson",
             "yaml": "application/yaml", "csv": "text/csv"}
    for fmt, parse in parsers.items():
        async with api.http.get(api.proc.admin_url + "/api/v1/audit/export", headers=VIEW,
                                params={"format": fmt, "type": "rollout.",
                                        "actor": "ann"}) as r:
            assert r.status == 200
            assert r.content_type == types[fmt]
            assert f".{fmt}" in r.headers["Content-Disposition"]
            assert parse(await r.text()) == want, fmt
    status, text = await api.get("/api/v1/audit/export", format="jsonl", type="model.")
    assert status == 200 and text == ""
    # every export was audited as data.access, and an export never includes its own
    accesses = await api.events(type="data.access")
    assert len(accesses) == 5 and {a["actor"] for a in accesses} == {"vic"}
    assert accesses[0]["details"]["format"] == "json"
    assert accesses[0]["details"]["filters"] == {"type": "rollout.", "actor": "ann"}
    assert accesses[0]["resource"] == "audit"
    status, exported = await api.get("/api/v1/audit/export")  # default json, no filter
    assert status == 200
    newest_access = (await api.events(type="data.access"))[-1]
    assert exported[-1]["seq"] == newest_access["seq"] - 1
    assert exported == (await api.events())[: len(exported)]


async def test_large_export_streams_in_chunks(api: Api) -> None:
    async with open_store(f"sqlite:///{api.db}") as store:
        async with store.transaction() as tx:
            for i in range(3000):
                await store.audit.append(tx, "data.access", "bulk", f"report/{i}",
                                         {"pad": "x" * 100})
    async with api.http.get(api.proc.admin_url + "/api/v1/audit/export",
                            params={"format": "csv", "actor": "bulk"}, headers=VIEW) as r:
        assert r.status == 200 and r.headers.get("Transfer-Encoding") == "chunked"
        chunks = [c async for c in r.content.iter_chunked(1 << 20)]
    assert len(_csv_events(b"".join(chunks).decode())) == 3000


async def test_verify_finds_an_edit_made_in_the_database(api: Api) -> None:
    status, body = await api.get("/api/v1/audit/verify")
    assert status == 200
    assert body == {"ok": True, "checked": SEEDED + 3, "first_bad_event": None, "reason": None}
    with sqlite3.connect(api.db) as conn:
        conn.execute("UPDATE audit_events SET details_json = ? WHERE seq = 17",
                     (json.dumps({"i": 16, "note": "edited"}),))
    conn.close()
    status, body = await api.get("/api/v1/audit/verify")
    assert status == 200
    edited = {"ok": False, "checked": 17, "first_bad_event": "evt-17",
              "reason": "hash does not match the event's contents"}
    assert body == edited
    status, report = await api.get("/api/v1/reports/compliance")
    assert status == 200 and not report["compliant"]
    assert report["verification"] == edited


async def test_compliance_report(api: Api) -> None:
    t = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
    async with open_store(f"sqlite:///{api.db}", clock=FakeClock(t)) as store:
        rec = store.audit.record
        await rec("approval.requested", "alice", "promotion/p1", {
            "promotion_id": "p1", "model": "m", "version": "2.0.0", "from_stage": "staging",
            "to_stage": "production", "justification": "wins", "requested_by": "alice"})
        granted = await rec("approval.granted", "bob", "promotion/p1", {
            "promotion_id": "p1", "model": "m", "version": "2.0.0", "to_stage": "production",
            "approver": "bob", "comment": "ok", "approvals": 1, "required": 1})
        await rec("model.stage_changed", "alice", "model/m@2.0.0", {
            "model": "m", "version": "2.0.0", "from": "staging", "to": "production",
            "promotion_id": "p1", "requested_by": "alice", "requested_at": "2024-06-01T09:00:01Z",
            "justification": "wins", "approved_by": [{"user": "bob", "at": granted.ts},
                                                     {"user": "carl", "at": granted.ts}]})
        await rec("rollout.rolled_back", "controller", "route/r", {
            "route": "r", "candidate": "canary", "reason": "error rate"}, "warning")
    status, report = await api.get("/api/v1/reports/compliance",
                                    since="2024-06-01T00:00:00Z", until="2024-06-02T00:00:00Z")
    assert status == 200, report
    assert report["period"] == {"since": "2024-06-01T00:00:00.000000Z",
                                "until": "2024-06-02T00:00:00.000000Z"}
    assert report["verification"]["ok"] and not report["compliant"]
    [change] = report["production_changes"]
    assert (change["model"], change["version"], change["requested_by"]) == (
        "m", "2.0.0", "alice")
    assert change["issues"] == ["approval by carl is missing from the audit log"]
    assert [r["reason"] for r in report["rollbacks"]] == ["error rate"]
    assert report["security_violations"] == []  # the API's own are not in June 2024
    assert report["counts"]["production_changes"] == 1
    access = (await api.events(type="data.access"))[-1]
    assert access["actor"] == "vic" and access["resource"] == "report/compliance"
    assert access["details"]["filters"] == {"since": "2024-06-01T00:00:00.000000Z",
                                            "until": "2024-06-02T00:00:00.000000Z"}
    status, everything = await api.get("/api/v1/reports/compliance")
    assert status == 200 and everything["period"] == {"since": None, "until": None}
    assert everything["counts"]["security_violations"] == SEEDED // 4 + 1


# -- the log's snapshot reads, on both stores --------------------------------------------


async def test_head_and_max_seq(store: Store) -> None:
    assert await store.audit.head() is None
    for i in range(5):
        await store.audit.record("data.access", "a", "r", {"i": i})
    head = await store.audit.head()
    assert head is not None and head.seq == 5
    assert [e.seq async for e in store.audit.iter_events(max_seq=3, batch_size=2)] == [1, 2, 3]
    assert json.loads(await store.audit.export("json", max_seq=0)) == []
    assert len(json.loads(await store.audit.export("json", max_seq=4, actor="a"))) == 4


async def test_an_export_failing_part_way_is_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the 200 is sent a failure cannot become a JSON error: the body is cut short
    (no final chunk), so a client cannot take a partial export for a whole one."""
    async with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        async with store.transaction() as tx:
            for i in range(400):
                await store.audit.append(tx, "data.access", "a", f"r/{i}", {"pad": "x" * 500})
        state = ProxyState(parse_settings(SETTINGS))
        state.store, state.audit = store, store.audit
        real = store.audit.export_chunks

        async def failing(fmt: Any, **filters: Any) -> AsyncIterator[str]:
            async for n, chunk in _enumerate(real(fmt, **filters)):
                if n == 300:
                    raise StoreError("the disk is on fire")
                yield chunk

        monkeypatch.setattr(store.audit, "export_chunks", failing)
        app = create_admin_app(state, None, routes=audit_api.ROUTES)
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/api/v1/audit/export", params={"format": "jsonl"})
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
            r = await client.get("/api/v1/audit/verify")  # the server itself is fine
            assert r.status == 200 and (await r.json())["ok"]


async def _enumerate(it: AsyncIterator[str]) -> AsyncIterator[tuple[int, str]]:
    n = 0
    async for item in it:
        yield n, item
        n += 1
