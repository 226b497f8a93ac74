"""The real ``splitway audit query|verify|export|report`` against a running proxy:
tables and ``--json``, pagination, exports to files and stdout, the compliance report,
a broken chain (exit 1), bad input (exit 2) and no tracebacks."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

from control.store import open_store
from tests.control.conftest import FakeClock
from tests.e2e.test_cli import splitway
from tests.harness import proxy_config, running_proxy

TOKENS = {"view-token": ("vic", ["viewer"]), "op-token": ("olga", ["operator"]),
          "appr-token": ("abe", ["approver"])}


async def seed_promotion(db: Path) -> None:
    async with open_store(f"sqlite:///{db}",
                          clock=FakeClock(datetime(2024, 6, 1, 9, tzinfo=UTC))) as store:
        rec = store.audit.record
        await rec("approval.requested", "alice", "promotion/p1", {
            "promotion_id": "p1", "model": "m", "version": "2.0.0", "from_stage": "staging",
            "to_stage": "production", "justification": "wins", "requested_by": "alice"})
        ok = await rec("approval.granted", "bob", "promotion/p1", {
            "promotion_id": "p1", "model": "m", "version": "2.0.0", "to_stage": "production",
            "approver": "bob", "comment": "ok", "approvals": 1, "required": 1})
        await rec("model.stage_changed", "alice", "model/m@2.0.0", {
            "model": "m", "version": "2.0.0", "from": "staging", "to": "production",
            "promotion_id": "p1", "requested_by": "alice", "requested_at": "2024-06-01T09:00:01Z",
            "justification": "wins", "approved_by": [{"user": "bob", "at": ok.ts}]})
        await rec("rollout.rolled_back", "controller", "route/r", {
            "route": "r", "candidate": "canary", "reason": "p99 latency ratio 2.1 > 1.5"})


async def test_audit_cli(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = tmp_path / "state.db"
    await seed_promotion(db)
    entries = [{"sha256": hashlib.sha256(t.encode()).hexdigest(), "user": u, "roles": r}
               for t, (u, r) in TOKENS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    cfg = proxy_config({"v1": ["http://127.0.0.1:9"], "v2": ["http://127.0.0.1:9"]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": {"stable": 100, "canary": 0}}}],
        admin={"tokens_file": "tokens.yaml"})
    async with running_proxy(tmp_path, cfg) as p:
        env = {"SPLITWAY_ADMIN_URL": p.admin_url, "SPLITWAY_TOKEN": "view-token"}
        for weights in ({"stable": 90, "canary": 10}, {"stable": 50, "canary": 50}):
            async with http.put(p.admin_url + "/api/v1/routes/r/weights", json={
                    "weights": weights}, headers={"Authorization": "Bearer op-token"}) as r:
                assert r.status == 200

        # query: a table, JSON, filters, pages
        code, out, err = await splitway("audit", "query", env=env)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["SEQ", "TS", "TYPE", "ACTOR", "RESOURCE"]
        assert len(lines) == 1 + 6 and "weights.changed" in lines[-1] and "olga" in lines[-1]
        code, out, err = await splitway("audit", "query", "--type", "weights.", "--json",
                                        env=env)
        assert code == 0, err
        page = json.loads(out)
        assert [e["type"] for e in page["events"]] == ["weights.changed"] * 2
        assert page["next_cursor"] is None
        code, out, err = await splitway("audit", "query", "--limit", "2", env=env)
        assert code == 0 and len(out.splitlines()) == 3 and "--cursor 2" in err
        code, out, err = await splitway("audit", "query", "--limit", "1", "--all", "--json",
                                        env=env)
        assert code == 0, err
        assert [e["seq"] for e in json.loads(out)["events"]] == [1, 2, 3, 4, 5, 6]
        code, out, _ = await splitway("audit", "query", "--since", "2024-06-01",
                                      "--until", "2024-06-02", "--actor", "alice", "--json",
                                      env=env)
        assert code == 0 and [e["seq"] for e in json.loads(out)["events"]] == [1, 3]

        # bad input exits 2 naming the option or field; refusals exit 1
        code, _, err = await splitway("audit", "query", "--since", "last tuesday", env=env)
        assert code == 2 and "--since" in err and "Traceback" not in err
        code, _, err = await splitway("audit", "report", "--until", "2024-13-01", env=env)
        assert code == 2 and "--until" in err and "Traceback" not in err
        code, _, err = await splitway("audit", "query", "--type", "nope.", env=env)
        assert code == 2 and "(type)" in err and "Traceback" not in err
        code, _, err = await splitway("audit", "export", "--format", "xml", env=env)
        assert code == 2 and "Traceback" not in err
        code, _, err = await splitway("audit", "verify",
                                      env={**env, "SPLITWAY_TOKEN": "appr-token"})
        assert code == 1 and "403" in err and "Traceback" not in err

        # export to files and stdout
        out_csv = tmp_path / "audit.csv"
        code, _, err = await splitway("audit", "export", "--format", "csv", "-o", str(out_csv),
                                      "--type", "weights.", env=env)
        assert code == 0, err
        rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
        assert [r["type"] for r in rows] == ["weights.changed"] * 2
        assert json.loads(rows[1]["details"])["weights"] == {"stable": 50.0, "canary": 50.0}
        code, out, err = await splitway("audit", "export", "--format", "jsonl", "--actor",
                                        "alice", env=env)
        assert code == 0, err
        assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 3]
        code, out, _ = await splitway("audit", "export", "--format", "yaml", env=env)
        assert code == 0 and len(yaml.safe_load(out)) >= 6
        denied = tmp_path / "denied.json"
        code, _, err = await splitway("audit", "export", "--format", "json", "-o", str(denied),
                                      env={**env, "SPLITWAY_TOKEN": "appr-token"})
        assert code == 1 and "403" in err and not denied.exists()
        assert not list(tmp_path.glob(".denied.json*"))

        # the compliance report
        code, out, err = await splitway("audit", "report", "--since", "2024-06-01",
                                        "--until", "2024-06-02", env=env)
        assert code == 0, err
        assert out.startswith("# Compliance report")
        assert "| m@2.0.0 | staging | alice |" in out and "bob (" in out
        assert "p99 latency ratio 2.1 > 1.5" in out and "Verdict: **compliant**" in out
        code, out, err = await splitway("audit", "report", "--json", env=env)
        assert code == 0, err
        report = json.loads(out)
        assert report["counts"]["production_changes"] == 1 and report["compliant"]

        # verify: ok, then broken by an edit made in the database
        code, out, err = await splitway("audit", "verify", env=env)
        assert code == 0 and "audit chain ok" in out, err
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
        conn.close()
        code, out, err = await splitway("audit", "verify", env=env)
        assert code == 1 and "Traceback" not in err
        assert "BROKEN" in out and "evt-2" in out and "mallory" in out
        code, out, _ = await splitway("audit", "verify", "--json", env=env)
        result = json.loads(out)
        assert code == 1 and result["first_bad_event"] == "evt-2"
        assert result["event"]["actor"] == "mallory"
