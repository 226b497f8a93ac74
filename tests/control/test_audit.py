"""The audit hash chain: the pure core, the log over both stores, tampering, processes."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from control.audit import (
    GENESIS_HASH,
    AuditEvent,
    EventType,
    Severity,
    canonical_json,
    chain_event,
    compute_hash,
    format_ts,
    verify_chain,
)
from proxy.errors import InvalidInputError

if TYPE_CHECKING:
    from control.store import Store
    from tests.control.conftest import FakeClock, Target

KEY = b"audit-secret"
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def make_chain(n: int, key: bytes | None = KEY) -> list[AuditEvent]:
    chain: list[AuditEvent] = []
    for i in range(n):
        chain.append(
            chain_event(
                chain[-1] if chain else None,
                ts=T0 + timedelta(seconds=i),
                type=list(EventType)[i % len(EventType)],
                actor=f"user{i % 3}",
                resource=f"route/r{i}",
                details={"i": i},
                key=key,
            )
        )
    return chain


# -- pure core -----------------------------------------------------------------------


def test_hash_is_sha256_of_canonical_json_or_hmac() -> None:
    first = make_chain(1, key=None)[0]
    assert first.prev_hash == GENESIS_HASH and first.seq == 1 and first.id == "evt-1"
    assert first.ts == "2024-05-01T00:00:00.000000Z"
    body = json.dumps(first.hashed_fields(), sort_keys=True, separators=(",", ":"))
    assert first.hash == hashlib.sha256(body.encode()).hexdigest()
    assert "hash" not in first.hashed_fields() and "prev_hash" in first.hashed_fields()
    assert compute_hash(first.hashed_fields(), KEY) != first.hash
    assert canonical_json({"b": "é", "a": [1.5]}) == '{"a":[1.5],"b":"é"}'


def test_valid_chain_verifies_only_with_its_key() -> None:
    chain = make_chain(20)
    assert verify_chain(chain, KEY) == verify_chain(chain, KEY)
    result = verify_chain(chain, KEY)
    assert (result.ok, result.checked, result.first_bad_event) == (True, 20, None)
    assert result.to_dict() == {"ok": True, "checked": 20, "first_bad_event": None,
                                "reason": None}
    wrong = verify_chain(chain, b"other")
    assert (wrong.ok, wrong.first_bad_event) == (False, "evt-1")
    assert verify_chain([], KEY).ok
    # a chain can be checked in pieces
    part = verify_chain(chain[10:], KEY, prev_hash=chain[9].hash, prev_seq=10)
    assert part.ok and part.checked == 10


def test_pure_tampering_names_the_first_bad_event() -> None:
    chain = make_chain(10)
    edited = [*chain[:3], dataclasses.replace(chain[3], actor="mallory"), *chain[4:]]
    assert verify_chain(edited, KEY).first_bad_event == "evt-4"
    deleted = chain[:3] + chain[4:]
    assert verify_chain(deleted, KEY).first_bad_event == "evt-5"
    swapped = [*chain[:3], chain[4], chain[3], *chain[5:]]
    assert verify_chain(swapped, KEY).first_bad_event == "evt-5"
    forged = dataclasses.replace(chain[3], id="evt-x", actor="mallory", hash="f" * 64)
    assert verify_chain([*chain[:3], forged, *chain[3:]], KEY).first_bad_event == "evt-x"


def test_unknown_types_and_bad_details_are_refused() -> None:
    bad_kwargs: list[dict[str, Any]] = [
        {"type": "rollout.exploded"},
        {"severity": "fatal"},
        {"details": {"x": object()}},
        {"details": {"x": float("nan")}},
    ]
    for kwargs in bad_kwargs:
        args: dict[str, Any] = {"type": EventType.DATA_ACCESS, "actor": "a", "resource": "r"}
        with pytest.raises(InvalidInputError):
            chain_event(None, ts=T0, **{**args, **kwargs})
    with pytest.raises(ValueError, match="aware"):
        chain_event(None, ts=datetime(2024, 1, 1), type="data.access", actor="a", resource="r")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
OBJECTS = st.dictionaries(st.text(max_size=6), JSON, max_size=4)
HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
NEW_VALUE = {
    "seq": st.integers(-5, 100),
    "id": st.text(max_size=10),
    "ts": st.text(max_size=30),
    "type": st.sampled_from(EventType),
    "actor": st.text(max_size=10),
    "severity": st.sampled_from(Severity),
    "resource": st.text(max_size=10),
    "details": OBJECTS,
    "prev_hash": HEX64 | st.text(max_size=4),
    "hash": HEX64 | st.text(max_size=4),
}
ENTRY = st.tuples(
    st.sampled_from(EventType), st.text(max_size=8), st.sampled_from(Severity), OBJECTS
)


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[AuditEvent], bytes | None]:
    key = draw(st.none() | st.binary(min_size=1, max_size=16))
    chain: list[AuditEvent] = []
    entries = draw(st.lists(ENTRY, min_size=1, max_size=10))
    for i, (etype, actor, severity, details) in enumerate(entries):
        chain.append(
            chain_event(
                chain[-1] if chain else None,
                ts=T0 + timedelta(microseconds=i),
                type=etype,
                actor=actor,
                resource="r",
                details=details,
                severity=severity,
                key=key,
            )
        )
    return chain, key


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.data())
def test_any_single_edit_is_detected_at_its_index(
    drawn: tuple[list[AuditEvent], bytes | None], data: st.DataObject
) -> None:
    chain, key = drawn
    assert verify_chain(chain, key).ok
    index = data.draw(st.integers(0, len(chain) - 1), label="index")
    field = data.draw(st.sampled_from(sorted(NEW_VALUE)), label="field")
    edited_event = dataclasses.replace(chain[index], **{field: data.draw(NEW_VALUE[field])})
    assume(canonical_json(edited_event.to_dict()) != canonical_json(chain[index].to_dict()))
    edited = [*chain[:index], edited_event, *chain[index + 1 :]]
    result = verify_chain(edited, key)
    assert not result.ok
    assert result.checked == index + 1
    assert result.first_bad_event == edited_event.id


@settings(max_examples=100, deadline=None)
@given(chains(), st.data())
def test_deletion_swap_and_insertion_are_detected(
    drawn: tuple[list[AuditEvent], bytes | None], data: st.DataObject
) -> None:
    chain, key = drawn
    i = data.draw(st.integers(0, len(chain) - 1))
    if i < len(chain) - 1:  # deleting the newest event is truncation, not detectable
        assert verify_chain(chain[:i] + chain[i + 1 :], key).first_bad_event == chain[i + 1].id
        swapped = [*chain[:i], chain[i + 1], chain[i], *chain[i + 2 :]]
        assert verify_chain(swapped, key).first_bad_event == chain[i + 1].id
    # an intruder forges an event at position i without the key
    guess = b"guess" if key else None
    forged = chain_event(
        chain[i - 1] if i else None, ts=T0, type="security.violation", actor="mallory",
        resource="x", key=guess,
    )  # fmt: skip
    forged = dataclasses.replace(forged, id="evt-forged")
    forged = dataclasses.replace(forged, hash=compute_hash(forged.hashed_fields(), guess))
    result = verify_chain([*chain[:i], forged, *chain[i:]], key)
    # with a key the forgery itself fails; without one it is only caught at the next link
    assert result.first_bad_event == ("evt-forged" if key else chain[i].id)


# -- the log over a store --------------------------------------------------------------


async def test_append_query_filters(store: Store, clock: FakeClock) -> None:
    start = clock.now
    log = store.audit
    await log.record(EventType.ROLLOUT_STARTED, "alice", "route/a", {"step": 0})
    await log.record("rollout.step", "bot", "route/a", {"step": 1})
    await log.record("rollout.rolled_back", "bot", "route/b", severity=Severity.WARNING)
    await log.record("security.violation", "mallory", "admin", {}, "critical")
    await log.record("model.registered", "alice", "model/m@1.0.0", {"v": "1.0.0"})

    async def seqs(**kwargs: Any) -> list[int]:
        return [e.seq for e in await log.query(**kwargs)]

    assert await seqs() == [1, 2, 3, 4, 5]
    assert await seqs(type="rollout.") == [1, 2, 3]
    assert await seqs(type="rollout.step") == [2]
    assert await seqs(type="rollout.rolled_back", severity="warning") == [3]
    assert await seqs(actor="alice") == [1, 5]
    assert await seqs(resource="route/a") == [1, 2]
    assert await seqs(severity=Severity.CRITICAL) == [4]
    assert await seqs(since=start + timedelta(seconds=2), until=start + timedelta(seconds=4)) == [
        2,
        3,
    ]
    assert await seqs(since=(start + timedelta(seconds=4)).isoformat()) == [4, 5]
    assert await seqs(until=format_ts(start + timedelta(seconds=2))) == [1]
    assert await seqs(limit=2) == [1, 2]
    assert await seqs(limit=2, offset=2) == [3, 4]
    assert await seqs(after=3) == [4, 5]
    assert await seqs(newest_first=True, limit=2) == [5, 4]
    assert await seqs(newest_first=True, after=3) == [2, 1]
    assert [e.seq async for e in log.iter_events(batch_size=2, actor="bot")] == [2, 3]
    events = await log.query()
    assert events[0].ts == format_ts(start + timedelta(seconds=1))
    assert events[0].timestamp == start + timedelta(seconds=1)
    assert events[3].severity is Severity.CRITICAL and events[4].details == {"v": "1.0.0"}
    bad_queries: list[dict[str, Any]] = [
        {"severity": "loud"},
        {"since": "yesterday"},
        {"limit": 0},
        {"offset": -1},
    ]
    for bad in bad_queries:
        with pytest.raises(InvalidInputError):
            await log.query(**bad)
    with pytest.raises(InvalidInputError):
        await log.record("no.such.type", "a", "r")
    assert (await log.verify()).ok


async def test_export_formats(store: Store) -> None:
    assert json.loads(await store.audit.export("json")) == []
    assert yaml.safe_load(await store.audit.export("yaml")) == []
    for i in range(3):
        await store.audit.record("data.access", "ana", f"report/{i}", {"q": "é", "n": i})
    dicts = [e.to_dict() for e in await store.audit.query()]
    assert json.loads(await store.audit.export("json")) == dicts
    lines = (await store.audit.export("jsonl")).splitlines()
    assert [json.loads(line) for line in lines] == dicts
    assert yaml.safe_load(await store.audit.export("yaml")) == dicts
    rows = list(csv.DictReader(io.StringIO(await store.audit.export("csv"))))
    assert [r["id"] for r in rows] == ["evt-1", "evt-2", "evt-3"]
    assert json.loads(rows[2]["details"]) == {"n": 2, "q": "é"}
    assert rows[2]["hash"] == dicts[2]["hash"]
    assert len(json.loads(await store.audit.export("json", resource="report/1"))) == 1
    with pytest.raises(InvalidInputError):
        await store.audit.export("xml")


async def test_verify_in_batches_and_with_keys(target: Target) -> None:
    async with target.store(hmac_key=KEY) as store:
        for i in range(25):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})
        result = await store.audit.verify(batch_size=7)
        assert (result.ok, result.checked) == (True, 25)
    async with target.store() as keyless:
        result = await keyless.audit.verify()
        assert (result.ok, result.first_bad_event, result.checked) == (False, "evt-1", 1)


def _swap(target: Target, a: int, b: int) -> None:
    cols = ["ts", "type", "actor", "severity", "resource", "details_json", "prev_hash", "hash"]
    select = f"SELECT {', '.join(cols)} FROM audit_events WHERE seq = ?"
    row_a, row_b = target.raw(select, (a,))[0], target.raw(select, (b,))[0]
    update = f"UPDATE audit_events SET {', '.join(c + ' = ?' for c in cols)} WHERE seq = ?"
    target.raw(update, (*row_b, a))
    target.raw(update, (*row_a, b))


def _insert_forged(target: Target, at: int) -> None:
    target.raw("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= ?", (at,))
    target.raw("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
    prev = target.raw("SELECT hash FROM audit_events WHERE seq = ?", (at - 1,))[0][0]
    fields = {
        "seq": at, "id": "evt-forged", "ts": "2024-05-01T12:00:03.500000Z",
        "type": "access.granted", "actor": "mallory", "severity": "info",
        "resource": "token/mallory", "details": {"role": "admin"}, "prev_hash": prev,
    }  # fmt: skip
    target.raw(
        "INSERT INTO audit_events (seq, id, ts, type, actor, severity, resource, "
        "details_json, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*[v if k != "details" else canonical_json(v) for k, v in fields.items()],
         compute_hash(fields)),  # a correct SHA-256, but the log uses an HMAC key
    )  # fmt: skip


TAMPERING: dict[str, tuple[Callable[[Target], object], str]] = {
    "edit a field": (lambda t: t.raw("UPDATE audit_events SET actor = 'x' WHERE seq = 4"), "evt-4"),
    "edit details": (
        lambda t: t.raw("UPDATE audit_events SET details_json = '{\"i\":99}' WHERE seq = 6"),
        "evt-6",
    ),
    "delete a row": (lambda t: t.raw("DELETE FROM audit_events WHERE seq = 4"), "evt-5"),
    "swap two rows": (lambda t: _swap(t, 4, 7), "evt-4"),
    "insert a forged row": (lambda t: _insert_forged(t, 4), "evt-forged"),
    "corrupt a row": (
        lambda t: t.raw("UPDATE audit_events SET severity = 'fatal' WHERE seq = 8"),
        "evt-8",
    ),
}


@pytest.mark.parametrize("how", list(TAMPERING))
async def test_tampering_by_sql_is_detected(target: Target, how: str) -> None:
    tamper, first_bad = TAMPERING[how]
    async with target.store(hmac_key=KEY) as store:
        for i in range(10):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})
        assert (await store.audit.verify()).ok
        tamper(target)
        result = await store.audit.verify(batch_size=3)
        assert (result.ok, result.first_bad_event) == (False, first_bad), result
        await store.audit.record("security.violation", "ops", "audit")  # appends go on


# -- many processes ---------------------------------------------------------------------


@pytest.mark.slow
async def test_eight_processes_append_at_once(target: Target) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            *target.writer("--count", "200", "--actor", f"w{i}", "--wait-go"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(8)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    outputs = await asyncio.wait_for(
        asyncio.gather(*(proc.communicate(b"go\n") for proc in procs)), 50
    )
    assert [proc.returncode for proc in procs] == [0] * 8
    acked = [int(line) for out, _ in outputs for line in out.split()]
    assert len(acked) == len(set(acked)) == 1600
    async with target.store() as store:
        events = [e async for e in store.audit.iter_events(batch_size=1000)]
        assert len(events) == 1600
        assert len({e.id for e in events}) == 1600
        assert [e.seq for e in events] == list(range(1, 1601)) == sorted(acked)
        assert {e.actor for e in events} == {f"w{i}" for i in range(8)}
        result = await store.audit.verify()
        assert (result.ok, result.checked) == (True, 1600)


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_write(target: Target) -> None:
    async with target.store():
        pass  # schema in place, so the writer starts appending at once
    proc = await asyncio.create_subprocess_exec(
        *target.writer("--count", "1000000", "--hmac-key", KEY.hex()),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: list[int] = []
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    while len(acked) < 150:
        acked.append(int(await asyncio.wait_for(proc.stdout.readline(), 30)))
    proc.kill()  # SIGKILL, mid-stream
    rest, _ = await proc.communicate()
    acked += [int(line) for line in rest.splitlines(keepends=True) if line.endswith(b"\n")]
    assert proc.returncode == -9
    async with target.store(hmac_key=KEY) as store:
        seqs = [e.seq async for e in store.audit.iter_events()]
        assert set(acked) <= set(seqs)
        assert len(acked) <= len(seqs) <= len(acked) + 1  # at most one unacknowledged commit
        assert seqs == list(range(1, len(seqs) + 1))
        result = await store.audit.verify()
        assert (result.ok, result.checked) == (True, len(seqs))
        await store.audit.record("config.reloaded", "ops", "config")  # the chain goes on
        assert (await store.audit.verify()).ok
