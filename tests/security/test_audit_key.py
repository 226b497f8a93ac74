"""The audit key is checked at start-up and changed only by a signed rotation, through the
real ``splitway run`` and ``splitway audit rotate-key`` processes.

Before the fix, a proxy started without ``SPLITWAY_AUDIT_HMAC_KEY`` (or with another key)
on a keyed chain started silently and appended events the chain's key did not sign, so
the chain read as broken from then on, and nothing recorded which key signed the chain.
Now the chain keeps its key's fingerprint; a wrong or missing key (or a key on an unkeyed
chain) is refused at start-up with one line naming the fingerprint expected and the one
given (exit 1, nothing appended), and ``splitway audit rotate-key`` records a key change
that verification follows; a rotation not signed with the old key is detected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from control.audit import canonical_json, compute_hash, fingerprint
from control.audit.keys import rotation_proof
from control.store import open_store
from tests.harness import ProxyProcess
from tests.security.audit_support import Db, clean_env, db_fixture, lines, raw, splitway  # noqa: F401

K1 = "first-audit-key-0123456789"
K2 = "second-audit-key-0123456789"
K3 = "mallory-audit-key-0123456789"
FP1, FP2, FP3 = (fingerprint(k.encode()) for k in (K1, K2, K3))


async def seed(db: Db, key: str | None, n: int = 3) -> None:
    async with open_store(db.url, hmac_key=key.encode() if key else None) as store:
        for i in range(n):
            await store.audit.record("config.reloaded", "ops", "config", {"i": i})


async def refused(config: Path, **keys: str | None) -> str:
    """Start ``splitway run``; it must refuse with exit 1 and one line: that line."""
    code, out, err = await splitway("run", "-c", str(config), env=clean_env(**keys))
    assert code == 1, (code, out, err)
    assert "splitway ready" not in out and "Traceback" not in err, err
    refusal = [line for line in lines(err) if line.startswith("splitway run:")]
    assert len(refusal) == 1, err
    return refusal[0]


async def verify(http: aiohttp.ClientSession, p: ProxyProcess) -> dict[str, Any]:
    async with http.get(p.admin_url + "/api/v1/audit/verify") as r:
        assert r.status == 200
        return dict(await r.json())


async def started(config: Path, **keys: str | None) -> ProxyProcess:
    env = {k: v for k, v in keys.items() if v is not None}
    return await ProxyProcess.start(config, env=env)


async def test_a_wrong_or_missing_key_refuses_to_start(tmp_path: Path, db: Db) -> None:
    await seed(db, K1)
    config = db.config(tmp_path)
    before = db.count()
    line = await refused(config)  # no key on a keyed chain
    assert f"signed with key fingerprint {FP1}" in line
    assert "SPLITWAY_AUDIT_HMAC_KEY is not set" in line and "rotate-key" in line
    line = await refused(config, SPLITWAY_AUDIT_HMAC_KEY=K2)  # another key
    assert FP1 in line and f"has fingerprint {FP2}" in line
    assert K1 not in line and K2 not in line  # fingerprints only, never keys
    assert db.count() == before  # nothing appended
    p = await started(config, SPLITWAY_AUDIT_HMAC_KEY=K1)  # the right key starts
    await p.stop()


async def test_a_key_on_an_unkeyed_chain_refuses_to_start(tmp_path: Path, db: Db) -> None:
    await seed(db, None)
    line = await refused(db.config(tmp_path), SPLITWAY_AUDIT_HMAC_KEY=K1)
    assert "unkeyed (fingerprint none)" in line and f"has fingerprint {FP1}" in line
    assert db.count() == 3


async def test_rotation_then_restart_with_the_new_key(
    tmp_path: Path, db: Db, http: aiohttp.ClientSession
) -> None:
    await seed(db, K1)
    config = db.config(tmp_path)
    # the wrong old key is refused and writes nothing; bad new keys are usage errors
    code, _, err = await splitway("audit", "rotate-key", "-c", str(config), env=clean_env(
        SPLITWAY_AUDIT_HMAC_KEY=K3, SPLITWAY_AUDIT_HMAC_KEY_NEW=K2))
    assert code == 1 and f"fingerprint {FP1}" in err and "Traceback" not in err, err
    for new in (None, "short"):
        code, _, err = await splitway("audit", "rotate-key", "-c", str(config), env=clean_env(
            SPLITWAY_AUDIT_HMAC_KEY=K1, SPLITWAY_AUDIT_HMAC_KEY_NEW=new))
        assert code == 2 and "SPLITWAY_AUDIT_HMAC_KEY_NEW" in err, err
    assert db.count() == 3

    code, out, err = await splitway("audit", "rotate-key", "-c", str(config), "--reason",
                                    "yearly", env=clean_env(SPLITWAY_AUDIT_HMAC_KEY=K1,
                                                            SPLITWAY_AUDIT_HMAC_KEY_NEW=K2))
    assert code == 0, err
    assert out.strip() == f"audit key rotated at evt-4: key {FP1} -> key {FP2}"
    assert K1 not in out + err and K2 not in out + err

    line = await refused(config, SPLITWAY_AUDIT_HMAC_KEY=K1)  # the old key is retired
    assert f"fingerprint {FP2}" in line
    p = await started(config, SPLITWAY_AUDIT_HMAC_KEY=K2,
                      SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS=K1)
    try:
        assert await verify(http, p) == {"ok": True, "checked": 4, "first_bad_event": None,
                                          "reason": None}
        async with http.get(p.admin_url + "/api/v1/audit",
                            params={"type": "audit.key_rotated"}) as r:
            (event,) = (await r.json())["events"]
        assert (event["id"], event["details"]["from"], event["details"]["to"]) == (
            "evt-4", FP1, FP2)
        assert event["details"]["reason"] == "yearly" and event["severity"] == "warning"
    finally:
        await p.stop()
    # without the old key the events it signed cannot be checked: said, not passed
    p = await started(config, SPLITWAY_AUDIT_HMAC_KEY=K2)
    try:
        body = await verify(http, p)
        assert (body["ok"], body["first_bad_event"]) == (False, "evt-1")
        assert FP1 in body["reason"] and "SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS" in body["reason"]
    finally:
        await p.stop()


async def test_adding_and_removing_a_key_go_through_rotate_key(
    tmp_path: Path, db: Db, http: aiohttp.ClientSession
) -> None:
    await seed(db, None)
    config = db.config(tmp_path)
    code, out, err = await splitway("audit", "rotate-key", "--state", db.url,
                                    env=clean_env(SPLITWAY_AUDIT_HMAC_KEY_NEW=K1))
    assert code == 0 and f"no key (unkeyed) -> key {FP1}" in out, err
    code, out, err = await splitway("audit", "rotate-key", "--state", db.url, "--remove-key",
                                    env=clean_env(SPLITWAY_AUDIT_HMAC_KEY=K1))
    assert code == 0 and f"key {FP1} -> no key (unkeyed)" in out, err
    await refused(config, SPLITWAY_AUDIT_HMAC_KEY=K1)
    p = await started(config, SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS=K1)
    try:
        assert (await verify(http, p))["ok"]
    finally:
        await p.stop()


async def test_a_forged_rotation_is_detected(
    tmp_path: Path, db: Db, http: aiohttp.ClientSession
) -> None:
    """Mallory can write to the database but lacks K1: she appends a rotation to her own
    key, with a valid proof for it, and the matching key record, then starts a proxy with
    her key. It starts (the record is consistent), but the rotation is not signed with
    K1, and verification names it."""
    await seed(db, K1)
    ((head_hash,),) = raw(db, "SELECT hash FROM audit_events WHERE seq = 3")
    details = {"from": FP1, "to": FP3, "proof": rotation_proof(
        K3.encode(), seq=4, prev_hash=head_hash, old_fp=FP1, new_fp=FP3)}
    fields = {"seq": 4, "id": "evt-4", "ts": "2030-01-01T00:00:00.000000Z",
              "type": "audit.key_rotated", "actor": "ops", "severity": "warning",
              "resource": "audit", "details": details, "prev_hash": head_hash}
    raw(db, "INSERT INTO audit_events (seq, id, ts, type, actor, severity, resource, "
            "details_json, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (4, "evt-4", fields["ts"], fields["type"], "ops", "warning", "audit",
         canonical_json(details), head_hash, compute_hash(fields, K3.encode())))
    raw(db, "INSERT INTO audit_keys (since_seq, fingerprint, recorded_at) VALUES (?, ?, ?)",
        (5, FP3, "2030-01-01T00:00:00.000000Z"))
    p = await started(db.config(tmp_path), SPLITWAY_AUDIT_HMAC_KEY=K3,
                      SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS=K1)
    try:
        body = await verify(http, p)
        assert (body["ok"], body["first_bad_event"]) == (False, "evt-4"), body
        assert f"hash does not match the event's contents (key {FP1})" == body["reason"]
    finally:
        await p.stop()
    # and a key record edited without any rotation refuses the start outright
    raw(db, "DELETE FROM audit_events WHERE seq = 4")
    line = await refused(db.config(tmp_path), SPLITWAY_AUDIT_HMAC_KEY=K3)
    assert "no rotation to it" in line
