"""A row tampered in the database never crashes the audit API, through the real process.

Before the fix, ``NaN``, ``1e400`` or 100,000-deep JSON in a row's details made
``GET /api/v1/audit/verify`` and the compliance report answer 500 instead of naming the
bad event, and a row of unknown type made the audit query answer 500. Now any row that is
not a well-formed event is tampering: verify answers ``{"ok": false, "first_bad_event"}``
with the reason, the compliance report is 200 and not compliant, and the query and every
export format show the row as stored, marked ``unreadable``. An unknown ``type`` filter is
a 422 naming the field. Each case runs on SQLite and, with
``SPLITWAY_TEST_POSTGRES_URL``, on PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from control.store import open_store
from tests.harness import ProxyProcess
from tests.security.audit_support import (  # noqa: F401 (db_fixture)
    Db,
    clean_env,
    db_fixture,
    raw,
    splitway,
)

KEY = "tamper-test-key-0123456789"
#: what an intruder writes into evt-5 -> what the verify reason names
TAMPERING: dict[str, tuple[str, Any, str]] = {
    "NaN": ("details_json", '{"i":NaN}', "NaN is not a JSON number"),
    "Infinity": ("details_json", '{"i":Infinity}', "Infinity is not a JSON number"),
    "1e400": ("details_json", '{"i":1e400}', "1e400 is out of range"),
    "100k-deep JSON": ("details_json", '{"i":' + "[" * 100_000 + "]" * 100_000 + "}",
                       "nested deeper than"),
    "a \\u escape that is no character": ("details_json", '{"i":"\\udc80"}',
                                          "not a character"),
    "invalid UTF-8": ("details_json", b'{"i":"\xc3\x28"}', "not UTF-8"),
    "unknown type": ("type", "rollout.exploded", "unknown event type"),
    "unknown severity": ("severity", "fatal", "unknown severity"),
    "a time that is not one": ("ts", "2024-13-45T99:00:00.000000Z", "ts:"),
}


def tamper(db: Db, column: str, value: Any) -> None:
    if isinstance(value, bytes):  # SQLite: text holding bytes that are not UTF-8
        raw(db, f"UPDATE audit_events SET {column} = CAST(? AS TEXT) WHERE seq = 5", (value,))
    else:
        raw(db, f"UPDATE audit_events SET {column} = ? WHERE seq = 5", (value,))


async def get(http: aiohttp.ClientSession, p: ProxyProcess, path: str,
              **params: str) -> tuple[int, Any]:
    async with http.get(p.admin_url + path, params=params) as r:
        return r.status, await r.json()


async def export(http: aiohttp.ClientSession, p: ProxyProcess, fmt: str) -> tuple[int, str]:
    async with http.get(p.admin_url + "/api/v1/audit/export", params={"format": fmt}) as r:
        return r.status, await r.text()


def parse_export(fmt: str, text: str) -> list[dict[str, Any]]:
    if fmt == "json":
        return list(json.loads(text))
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    if fmt == "yaml":
        return list(yaml.safe_load(text))
    return list(csv.DictReader(io.StringIO(text)))


async def test_tampered_rows_are_named_never_a_500(
    tmp_path: Path, db: Db, http: aiohttp.ClientSession
) -> None:
    async with open_store(db.url, hmac_key=KEY.encode()) as store:
        for i in range(8):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})
    columns = "ts, type, severity, details_json"
    original = raw(db, f"SELECT {columns} FROM audit_events WHERE seq = 5")[0]
    p = await ProxyProcess.start(db.config(tmp_path), env={"SPLITWAY_AUDIT_HMAC_KEY": KEY})
    try:
        assert (await get(http, p, "/api/v1/audit/verify"))[1]["ok"]
        for case, (column, value, reason) in TAMPERING.items():
            if isinstance(value, bytes) and db.target.kind == "postgres":
                continue  # PostgreSQL refuses to store text that is not UTF-8
            tamper(db, column, value)
            status, body = await get(http, p, "/api/v1/audit/verify")
            assert status == 200, (case, body)
            assert (body["ok"], body["first_bad_event"], body["checked"]) == (
                False, "evt-5", 5), (case, body)
            assert "unreadable row" in body["reason"] and reason in body["reason"], (case, body)

            status, report = await get(http, p, "/api/v1/reports/compliance")
            assert status == 200, (case, report)
            assert not report["compliant"], case
            assert report["verification"]["first_bad_event"] == "evt-5", case

            status, page = await get(http, p, "/api/v1/audit", limit="1000")
            assert status == 200, (case, page)
            shown = {e["seq"]: e for e in page["events"]}
            assert reason in shown[5]["unreadable"], case
            assert "unreadable" not in shown[4] and shown[6]["type"] == "config.reloaded"

            for fmt in ("json", "jsonl", "yaml", "csv"):
                status, text = await export(http, p, fmt)
                assert status == 200, (case, fmt, text)
                rows = {int(r["seq"]): r for r in parse_export(fmt, text)}
                assert reason in rows[5]["unreadable"], (case, fmt)
                assert not rows[4].get("unreadable"), (case, fmt)

            raw(db, "UPDATE audit_events SET ts = ?, type = ?, severity = ?, details_json = ? "
                    "WHERE seq = 5", original)
            status, body = await get(http, p, "/api/v1/audit/verify")
            assert body["ok"], (case, body)  # restored: the chain holds again

        # the CLI says the same, and shows the row as stored
        tamper(db, "details_json", '{"i":NaN}')
        env = clean_env(SPLITWAY_ADMIN_URL=p.admin_url)
        code, out, err = await splitway("audit", "verify", env=env)
        assert code == 1 and "Traceback" not in err, err
        assert "BROKEN: first bad event evt-5" in out and "reason: unreadable row" in out
        assert '"details": "{\\"i\\":NaN}"' in out and '"unreadable":' in out, out
        code, out, err = await splitway("audit", "query", env=env)
        assert code == 0 and "UNREADABLE(config.reloaded): details:" in out, (out, err)

        status, body = await get(http, p, "/api/v1/audit", type="nosuch.")
        assert status == 422 and body["field"] == "type", body
        status, body = await get(http, p, "/api/v1/audit", type="audit.key_rotated")
        assert status == 200, body
    finally:
        await p.stop()
    assert not [line for line in p.log if "Traceback" in line], p.log
