"""Unreadable audit rows are tampering, never a crash: the strict row reader (pure and
property-tested), and verify/query/read/export over rows tampered in both stores."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from control.audit import (
    AuditEvent,
    UnreadableEvent,
    UnreadableRow,
    chain_event,
    read_row,
)
from control.audit.chain import MAX_DETAILS_DEPTH, canonical_json
from control.audit.rows import parse_details, read_record
from proxy.errors import InvalidInputError

if TYPE_CHECKING:
    from control.store import Store
    from tests.control.conftest import Target

KEY = b"audit-rows-key"
DEEP = '{"x":' + "[" * 100_000 + "]" * 100_000 + "}"
DEEP_OBJECTS = '{"a":' * 100_000 + "1" + "}" * 100_000


def good_row() -> dict[str, Any]:
    ev = chain_event(None, ts=datetime(2024, 5, 1, tzinfo=UTC), type="config.reloaded",
                     actor="ops", resource="config", details={"i": 1}, key=KEY)
    row = {k: v for k, v in ev.to_dict().items() if k != "details"}
    return {**row, "details_json": canonical_json(ev.details)}


#: (column, stored value, what the reason names) — each makes the row unreadable
UNREADABLE: dict[str, tuple[str, Any, str]] = {
    "NaN": ("details_json", '{"x":NaN}', "NaN is not a JSON number"),
    "Infinity": ("details_json", '{"x":-Infinity}', "-Infinity is not a JSON number"),
    "1e400": ("details_json", '{"x":1e400}', "1e400 is out of range"),
    "100k-deep arrays": ("details_json", DEEP, f"nested deeper than {MAX_DETAILS_DEPTH}"),
    "100k-deep objects": ("details_json", DEEP_OBJECTS, f"nested deeper than {MAX_DETAILS_DEPTH}"),
    "just too deep": ("details_json", "[" * 101 + "]" * 101, "details"),
    "not JSON": ("details_json", '{"x":', "details"),
    "not an object": ("details_json", "[1,2]", "not a JSON object"),
    "huge integer": ("details_json", '{"x":1' + "0" * 5000 + "}", "details"),
    "lone surrogate": ("details_json", '{"x":"\\ud800"}', "not a character"),
    "invalid UTF-8 details": ("details_json", b'{"x":"\xff\xfe"}', "details_json: not UTF-8"),
    "invalid UTF-8 actor": ("actor", b"ev\xc3il", "actor: not UTF-8"),
    "unknown type": ("type", "rollout.exploded", "unknown event type"),
    "unknown severity": ("severity", "fatal", "unknown severity"),
    "bad time": ("ts", "yesterday", "ts:"),
    "NULL": ("resource", None, "resource: NULL"),
    "number for text": ("actor", 42, "actor: int, not text"),
    "bad hash": ("hash", "zz", "hash: not 64 hex digits"),
    "seq not an integer": ("seq", "5", "seq"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_rows_raise_one_error_naming_the_column(case: str) -> None:
    column, value, reason = UNREADABLE[case]
    row = {**good_row(), column: value}
    with pytest.raises(UnreadableRow, match=reason.replace("[", r"\[")):
        read_row(row)
    record = read_record(row)
    assert isinstance(record, UnreadableEvent) and reason in record.reason
    shown = record.to_dict()
    assert shown["unreadable"] == record.reason
    json.dumps(shown, ensure_ascii=False).encode("utf-8")  # always JSON- and UTF-8-clean


def test_a_missing_column_and_a_good_row() -> None:
    row = good_row()
    assert isinstance(read_row(row), AuditEvent)
    assert read_row({**row, "actor": b"ops"}).actor == "ops"  # SQLite hands text as bytes
    del row["prev_hash"]
    with pytest.raises(UnreadableRow, match="prev_hash: column missing"):
        read_row(row)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_any_details_text_parses_to_an_object_or_is_unreadable(text: str) -> None:
    try:
        value = parse_details(text)
    except UnreadableRow:
        return
    assert isinstance(value, dict)
    canonical_json(value).encode("utf-8")  # hashable


COLUMN_VALUES = st.none() | st.integers() | st.text(max_size=20) | st.binary(max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(good_row())), COLUMN_VALUES)
def test_any_single_column_value_reads_or_is_unreadable(column: str, value: Any) -> None:
    record = read_record({**good_row(), column: value})
    json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8")


def test_appends_refuse_what_could_not_be_read_back() -> None:
    args: dict[str, Any] = {"ts": datetime(2024, 5, 1, tzinfo=UTC), "type": "data.access",
                            "actor": "a", "resource": "r"}
    deep: Any = 1
    for _ in range(MAX_DETAILS_DEPTH):
        deep = [deep]
    with pytest.raises(InvalidInputError, match="nested deeper"):
        chain_event(None, **args, details={"x": deep})
    chain_event(None, **args, details={"x": deep[0]})  # exactly the limit is fine
    with pytest.raises(InvalidInputError, match="details"):
        chain_event(None, **args, details={"x": "\ud800"})
    with pytest.raises(InvalidInputError, match="actor"):
        chain_event(None, **{**args, "actor": "\udcff"})


# -- tampered in the database ---------------------------------------------------------------


def tamper(target: Target, column: str, value: Any, seq: int = 5) -> None:
    """Write ``value`` into a row behind the store's back (SQLite: as TEXT, even bytes)."""
    if target.kind == "sqlite" and isinstance(value, bytes):
        target.raw(f"UPDATE audit_events SET {column} = CAST(? AS TEXT) WHERE seq = ?",
                   (value, seq))
    elif target.kind == "sqlite" and value is None:
        pytest.skip("SQLite cannot drop NOT NULL in place (the pure reader covers NULL)")
    elif target.kind == "postgres" and value is None:
        target.raw(f"ALTER TABLE audit_events ALTER COLUMN {column} DROP NOT NULL")
        target.raw(f"UPDATE audit_events SET {column} = NULL WHERE seq = ?", (seq,))
    else:
        target.raw(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (value, seq))


#: Not storable: a TEXT column turns 42 into "42", and seq is an integer key.
STORE_CASES = [c for c in UNREADABLE if c not in ("seq not an integer", "number for text")]


@pytest.mark.parametrize("case", STORE_CASES)
async def test_tampered_rows_are_named_by_verify_and_shown_by_reads(
    target: Target, case: str
) -> None:
    column, value, reason = UNREADABLE[case]
    if target.kind == "postgres" and isinstance(value, bytes):
        pytest.skip("PostgreSQL refuses text that is not UTF-8: it cannot be stored")
    async with target.store(hmac_key=KEY) as store:
        for i in range(8):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})
        tamper(target, column, value)
        result = await store.audit.verify(batch_size=3)
        assert (result.ok, result.first_bad_event, result.checked) == (False, "evt-5", 5)
        assert result.reason is not None and result.reason.startswith("unreadable row: ")
        assert reason in result.reason
        await assert_reads_show_it(store, reason)
        await store.audit.record("security.violation", "ops", "audit")  # appends go on
        assert [e.seq async for e in store.audit.iter_events()] == [1, 2, 3, 4, 6, 7, 8, 9]


async def assert_reads_show_it(store: Store, reason: str) -> None:
    records = await store.audit.read(limit=100)
    assert [r.seq for r in records] == list(range(1, 9))
    bad = records[4]
    assert isinstance(bad, UnreadableEvent) and reason in bad.reason
    assert [e.seq for e in await store.audit.query()] == [1, 2, 3, 4, 6, 7, 8]
    for fmt in ("json", "jsonl", "yaml", "csv"):
        text = await store.audit.export(fmt)
        if fmt == "json":
            rows = json.loads(text)
        elif fmt == "jsonl":
            rows = [json.loads(line) for line in text.splitlines()]
        elif fmt == "yaml":
            rows = yaml.safe_load(text)
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 8, fmt
        assert reason in rows[4]["unreadable"], fmt
        assert not any(r.get("unreadable") for i, r in enumerate(rows) if i != 4), fmt
