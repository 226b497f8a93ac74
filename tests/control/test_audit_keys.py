"""The audit key kept with the chain: fingerprints, the check before every append, and
rotations — verified across keys, forged ones detected (pure core and both stores)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.audit import (
    AuditEvent,
    AuditKeyError,
    ChainVerifier,
    EventType,
    Keyring,
    canonical_json,
    chain_event,
    compute_hash,
    fingerprint,
    keyring_from_env,
)
from control.audit.keys import rotation_proof
from proxy.errors import InvalidInputError

if TYPE_CHECKING:
    from tests.control.conftest import Target

K1, K2, K3 = b"first-key-0123456789", b"second-key-0123456789", b"mallory-key-0123456789"
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_fingerprints_name_keys_without_showing_them() -> None:
    fp = fingerprint(K1)
    assert len(fp) == 16 and int(fp, 16) >= 0 and fp == fingerprint(K1)
    assert fp != fingerprint(K2) and fingerprint(None) == "none"
    assert fp not in hashlib.sha256(K1).hexdigest()  # domain-separated, not a plain hash
    ring = keyring_from_env({"SPLITWAY_AUDIT_HMAC_KEY": "k1",
                             "SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS": "old-a, old-b,,"})
    assert ring == Keyring(b"k1", (b"old-a", b"old-b"))
    assert keyring_from_env({}) == Keyring(None, ())
    assert ring.lookup("none") == (True, None) and ring.lookup(fingerprint(b"old-b"))[0]
    assert ring.lookup(fingerprint(b"other")) == (False, None)


# -- the pure verifier ----------------------------------------------------------------------


def build(plan: list[Any], start_key: bytes | None = K1) -> tuple[list[AuditEvent],
                                                                   dict[int, str]]:
    """A chain from ``plan``: ``"e"`` is an event, ``("rotate", new_key)`` a rotation."""
    events: list[AuditEvent] = []
    epochs = {1: fingerprint(start_key)}
    key = start_key
    for i, step in enumerate(plan):
        prev = events[-1] if events else None
        ts = T0 + timedelta(seconds=i)
        if step == "e":
            events.append(chain_event(prev, ts=ts, type="config.reloaded", actor="ops",
                                      resource="config", details={"i": i}, key=key))
            continue
        new = step[1]
        seq = prev.seq + 1 if prev else 1
        old_fp, new_fp = fingerprint(key), fingerprint(new)
        proof = None if new is None else rotation_proof(
            new, seq=seq, prev_hash=prev.hash if prev else "0" * 64, old_fp=old_fp,
            new_fp=new_fp)
        events.append(chain_event(prev, ts=ts, type=EventType.AUDIT_KEY_ROTATED, actor="ops",
                                  resource="audit", details={"from": old_fp, "to": new_fp,
                                                             "proof": proof}, key=key))
        epochs[seq + 1] = new_fp
        key = new
    return events, epochs


def run(events: list[AuditEvent], epochs: dict[int, str], ring: Keyring) -> Any:
    verifier = ChainVerifier(ring, epochs)
    for ev in events:
        if (bad := verifier.feed(ev)) is not None:
            return bad
    return verifier.finish(events[-1].id if events else None)


PLANS = {
    "keyed to keyed": (["e", "e", ("rotate", K2), "e"], K1, Keyring(K2, (K1,))),
    "unkeyed to keyed": (["e", ("rotate", K1), "e"], None, Keyring(K1)),
    "keyed to unkeyed": (["e", ("rotate", None), "e"], K1, Keyring(None, (K1,))),
    "twice": (["e", ("rotate", K2), "e", ("rotate", K3), "e"], K1, Keyring(K3, (K1, K2))),
    "rotation last": (["e", ("rotate", K2)], K1, Keyring(K2, (K1,))),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_verification_follows_rotations(name: str) -> None:
    plan, start, ring = PLANS[name]
    events, epochs = build(plan, start)
    result = run(events, epochs, ring)
    assert (result.ok, result.checked) == (True, len(events)), result


def test_an_epoch_without_its_key_is_reported_not_passed() -> None:
    events, epochs = build(["e", "e", ("rotate", K2), "e"])
    result = run(events, epochs, Keyring(K2))  # K1 not given
    assert (result.ok, result.first_bad_event) == (False, "evt-1")
    assert fingerprint(K1) in result.reason and "SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS" in result.reason
    stale = run(events, epochs, Keyring(K1))  # still holding only the old key
    assert (stale.ok, stale.first_bad_event) == (False, "evt-3")


def forge_rotation(events: list[AuditEvent], signing: bytes | None, to: bytes,
                   proof_key: bytes | None) -> AuditEvent:
    prev = events[-1]
    proof = rotation_proof(proof_key, seq=prev.seq + 1, prev_hash=prev.hash,
                           old_fp=fingerprint(K1), new_fp=fingerprint(to)) if proof_key else None
    return chain_event(prev, ts=T0, type=EventType.AUDIT_KEY_ROTATED, actor="mallory",
                       resource="audit", details={"from": fingerprint(K1),
                                                  "to": fingerprint(to), "proof": proof},
                       key=signing)


def test_forged_rotations_are_the_first_bad_event() -> None:
    events, epochs = build(["e", "e", "e"])
    forged_epochs = {**epochs, 5: fingerprint(K3)}
    # Mallory lacks K1: her rotation to her own key fails its hash under K1
    forged = forge_rotation(events, K3, K3, K3)
    result = run([*events, forged], forged_epochs, Keyring(K3, (K1,)))
    assert (result.ok, result.first_bad_event) == (False, "evt-4"), result
    assert "hash does not match" in result.reason
    # signed with K1 (she stole it) but without the new key's proof: refused too
    unproved = forge_rotation(events, K1, K3, None)
    result = run([*events, unproved], forged_epochs, Keyring(K3, (K1,)))
    assert (result.ok, result.first_bad_event) == (False, "evt-4")
    assert "proof" in result.reason
    # an unkeyed chain cannot be taken over without the new key either
    plain, plain_epochs = build(["e", "e"], None)
    bogus = dataclasses.replace(forge_rotation(plain, None, K3, K2), hash="")
    bogus = dataclasses.replace(bogus, details={**bogus.details, "from": "none"})
    bogus = dataclasses.replace(bogus, hash=compute_hash(bogus.hashed_fields()))
    result = run([*plain, bogus], {**plain_epochs, 4: fingerprint(K3)}, Keyring(K3))
    assert (result.ok, result.first_bad_event) == (False, "evt-3") and "proof" in result.reason


def test_the_key_record_must_agree_with_the_chain() -> None:
    events, epochs = build(["e", "e", ("rotate", K2), "e"])
    # a key change the chain does not announce (e.g. to let a keyless process in)
    result = run(events, {**epochs, 5: "none"}, Keyring(None, (K1, K2)))
    assert (result.ok, result.first_bad_event) == (False, "evt-4")
    assert "announces no rotation" in result.reason
    # a rotation the record does not show
    result = run(events, {1: epochs[1]}, Keyring(K2, (K1,)))
    assert (result.ok, result.first_bad_event) == (False, "evt-3")
    # the whole chain rebuilt without a key and the record edited to match: wrong epoch
    plain, _ = build(["e", "e"], None)
    result = run(plain, {1: "none"}, Keyring(K1))
    assert (result.ok, result.first_bad_event) == (False, "evt-1")
    assert "this process holds key" in result.reason


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5), st.integers(1, 3), st.data())
def test_any_edit_around_a_rotation_is_detected_at_its_event(
    before: int, after: int, data: st.DataObject
) -> None:
    events, epochs = build(["e"] * before + [("rotate", K2)] + ["e"] * after)
    ring = Keyring(K2, (K1,))
    assert run(events, epochs, ring).ok
    index = data.draw(st.integers(0, len(events) - 1))
    field = data.draw(st.sampled_from(["actor", "details", "resource", "ts"]))
    value: Any = {"actor": "mallory", "details": {"to": "none"}, "resource": "x",
                  "ts": "2030-01-01T00:00:00.000000Z"}[field]
    edited = dataclasses.replace(events[index], **{field: value})
    result = run([*events[:index], edited, *events[index + 1:]], epochs, ring)
    assert (result.ok, result.first_bad_event) == (False, events[index].id)


# -- over a store -----------------------------------------------------------------------------


async def count(target: Target, table: str = "audit_events") -> int:
    return int(target.raw(f"SELECT COUNT(*) FROM {table}")[0][0])


async def test_the_first_append_records_the_key_and_others_are_refused(target: Target) -> None:
    async with target.store(hmac_key=K1) as store:
        assert await store.audit.check_key() == fingerprint(K1)
        await store.audit.record("config.reloaded", "ops", "config")
    assert target.raw("SELECT since_seq, fingerprint FROM audit_keys") == [(1, fingerprint(K1))]
    for wrong in (None, K2):
        async with target.store(hmac_key=wrong) as store:
            with pytest.raises(AuditKeyError, match=f"fingerprint {fingerprint(K1)}"):
                await store.audit.check_key()
            with pytest.raises(AuditKeyError, match="audit key mismatch"):
                await store.audit.record("config.reloaded", "ops", "config")
    assert await count(target) == 1  # nothing appended with the wrong key
    target.raw("DELETE FROM audit_keys")
    target.raw("DELETE FROM audit_events")
    async with target.store() as store:
        await store.audit.record("config.reloaded", "ops", "config")
    async with target.store(hmac_key=K1) as store:
        with pytest.raises(AuditKeyError, match=r"unkeyed .* has fingerprint"):
            await store.audit.record("config.reloaded", "ops", "config")


async def test_a_chain_from_before_fingerprints_is_adopted_by_its_key(target: Target) -> None:
    async with target.store(hmac_key=K1) as store:
        for i in range(3):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})
    target.raw("DELETE FROM audit_keys")  # as a chain written by an older splitway
    async with target.store(hmac_key=K2) as store:
        with pytest.raises(AuditKeyError, match="evt-3 is not signed with key"):
            await store.audit.check_key()
    async with target.store() as store:
        with pytest.raises(AuditKeyError):
            await store.audit.record("config.reloaded", "ops", "config")
    assert await count(target, "audit_keys") == 0
    async with target.store(hmac_key=K1) as store:
        await store.audit.check_key()
        assert (await store.audit.verify()).ok
    assert target.raw("SELECT since_seq, fingerprint FROM audit_keys") == [(1, fingerprint(K1))]


async def rotate(target: Target, old: bytes | None, new: bytes | None) -> AuditEvent:
    async with target.store(hmac_key=old) as store:
        return await store.audit.rotate_key(new, "ops", "test")


async def test_rotation_through_the_store(target: Target) -> None:
    async with target.store(hmac_key=K1) as store:
        for i in range(3):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})
        with pytest.raises(InvalidInputError, match="written only by"):
            await store.audit.record("audit.key_rotated", "ops", "audit", {"to": "none"})
        with pytest.raises(InvalidInputError, match="key in use"):
            await store.audit.rotate_key(K1, "ops")
    with pytest.raises(AuditKeyError):
        await rotate(target, K3, K2)  # not the chain's key: nothing written
    assert await count(target) == 3
    ev = await rotate(target, K1, K2)
    assert (ev.seq, ev.type, ev.details["from"], ev.details["to"]) == (
        4, EventType.AUDIT_KEY_ROTATED, fingerprint(K1), fingerprint(K2))
    async with target.store(hmac_key=K2) as store:
        store.audit.set_previous_keys((K1,))
        await store.audit.check_key()
        await store.audit.record("config.reloaded", "ops", "config")
        result = await store.audit.verify(batch_size=2)
        assert (result.ok, result.checked) == (True, 5), result
    async with target.store(hmac_key=K1) as store:  # the old key is retired
        with pytest.raises(AuditKeyError, match=fingerprint(K2)):
            await store.audit.record("config.reloaded", "ops", "config")
    await rotate(target, K2, None)  # and off again
    async with target.store() as store:
        store.audit.set_previous_keys((K1, K2))
        await store.audit.record("config.reloaded", "ops", "config")
        assert (await store.audit.verify()).ok


async def test_a_process_holding_the_old_key_stops_appending(target: Target) -> None:
    async with target.store(hmac_key=K1) as running:
        await running.audit.record("config.reloaded", "ops", "config")
        await rotate(target, K1, K2)  # rotated while it runs
        with pytest.raises(AuditKeyError):
            await running.audit.record("config.reloaded", "ops", "config")
    assert await count(target) == 2


async def test_a_key_record_edited_to_let_a_key_in_is_refused(target: Target) -> None:
    async with target.store(hmac_key=K1) as store:
        await store.audit.record("config.reloaded", "ops", "config")
    target.raw("INSERT INTO audit_keys (since_seq, fingerprint, recorded_at) VALUES (?, ?, ?)",
               (2, "none", "2024-05-01T00:00:00.000000Z"))
    async with target.store() as store:
        with pytest.raises(AuditKeyError, match="no rotation to it"):
            await store.audit.check_key()
    async with target.store(hmac_key=K1) as store:
        result = await store.audit.verify()
        assert not result.ok and "announces no rotation" in (result.reason or "")


async def test_a_forged_rotation_row_is_detected(target: Target) -> None:
    async with target.store(hmac_key=K1) as real:
        for i in range(3):
            await real.audit.record("config.reloaded", "ops", "config", {"i": i})
        head = await real.audit.head()
    assert head is not None
    # Mallory writes a rotation to her key, signed with her key (she lacks K1)
    proof = rotation_proof(K3, seq=4, prev_hash=head.hash, old_fp=fingerprint(K1),
                           new_fp=fingerprint(K3))
    fields = {"seq": 4, "id": "evt-4", "ts": "2024-05-01T13:00:00.000000Z",
              "type": "audit.key_rotated", "actor": "ops", "severity": "warning",
              "resource": "audit", "details": {"from": fingerprint(K1), "to": fingerprint(K3),
                                               "proof": proof}, "prev_hash": head.hash}
    target.raw("INSERT INTO audit_events (seq, id, ts, type, actor, severity, resource, "
               "details_json, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (*[canonical_json(v) if k == "details" else v for k, v in fields.items()],
                compute_hash(fields, K3)))
    target.raw("INSERT INTO audit_keys (since_seq, fingerprint, recorded_at) VALUES (?, ?, ?)",
               (5, fingerprint(K3), "2024-05-01T13:00:00.000000Z"))
    async with target.store(hmac_key=K3) as store_k3:
        store_k3.audit.set_previous_keys((K1,))
        await store_k3.audit.check_key()  # structurally fine: only the signature tells
        result = await store_k3.audit.verify()
        assert (result.ok, result.first_bad_event) == (False, "evt-4"), result
