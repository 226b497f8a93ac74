"""Verifying the whole chain across key rotations (pure; fed one event at a time).

The chain is cut into **epochs**, each signed with one key: the store's ``audit_keys``
table says which fingerprint starts the chain (``since_seq`` 1) and where each later one
takes over. The record is only trusted for the first epoch; every later one must be
announced *inside* the chain by an ``audit.key_rotated`` event that

- is signed with the key in force (its hash checks out under the old key),
- names that key's fingerprint as ``from`` and the next one as ``to``,
- carries ``proof``, the new key's HMAC over the rotation's place in the chain
  (:func:`control.audit.keys.rotation_proof`; none when the chain goes unkeyed),
- and agrees with the record (``audit_keys`` holds ``to`` from the next ``seq`` on).

A rotation not signed with the old key fails its own hash, so a forged one is the first
bad event. At the end the record must hold no key change the chain does not announce, and
the key in force must be the verifier's own: a chain rebuilt without a key by someone
who can write to the database but lacks it ends in the wrong epoch and is reported.
Verifying an epoch needs its key; without it the first event of that epoch is reported,
saying which fingerprint is missing.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from control.audit.chain import GENESIS_HASH, AuditEvent, EventType, VerifyResult, compute_hash
from control.audit.keys import (
    NO_KEY,
    PREVIOUS_KEYS_ENV,
    Keyring,
    describe,
    is_fingerprint,
    rotation_proof,
)


def _same(a: str, b: object) -> bool:
    """Constant-time equality of hex digests; a tampered value may be any text."""
    return isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode("utf-8", "replace"))


@dataclass
class ChainVerifier:
    """Feed events oldest first with :meth:`feed`, then call :meth:`finish`."""

    keyring: Keyring
    epochs: Mapping[int, str]  # audit_keys: since_seq -> fingerprint
    prev_seq: int = 0
    prev_hash: str = GENESIS_HASH
    checked: int = 0
    fp: str = field(init=False)  # the fingerprint the next event must be signed with
    epoch_start: int = field(init=False, default=1)
    announced: set[int] = field(init=False, default_factory=set)  # since_seqs of rotations

    def __post_init__(self) -> None:
        # no record yet: a chain written before fingerprints were kept, signed with our key
        self.fp = self.epochs[min(self.epochs)] if self.epochs else self.keyring.current_fp

    def bad(self, event_id: str, seq: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, self.checked, event_id, seq, reason)

    def feed(self, ev: AuditEvent) -> VerifyResult | None:
        """``None`` while the chain holds; else the result naming ``ev``."""
        self.checked += 1
        reason = self._check(ev)
        if reason is not None:
            return self.bad(ev.id, ev.seq, reason)
        self.prev_seq, self.prev_hash = ev.seq, ev.hash
        return None

    def unreadable(self, event_id: str, seq: int | None, reason: str) -> VerifyResult:
        """A row that is not an event: tampering, named like any other bad event."""
        self.checked += 1
        return self.bad(event_id, seq, f"unreadable row: {reason}")

    def _check(self, ev: AuditEvent) -> str | None:
        if ev.seq != self.prev_seq + 1:
            return f"seq {ev.seq} does not follow {self.prev_seq}"
        if ev.prev_hash != self.prev_hash:
            return "prev_hash is not the previous event's hash"
        held, key = self.keyring.lookup(self.fp)
        if not held:
            return (f"signed with key {self.fp} (the chain's key from evt-{self.epoch_start}), "
                    f"which this process was not given: add it to {PREVIOUS_KEYS_ENV}")
        if not _same(compute_hash(ev.hashed_fields(), key), ev.hash):
            under = "" if key is None else f" (key {self.fp})"
            return f"hash does not match the event's contents{under}"
        if ev.type is EventType.AUDIT_KEY_ROTATED:
            return self._rotation(ev)
        return None

    def _rotation(self, ev: AuditEvent) -> str | None:
        old, new, proof = (ev.details.get(k) for k in ("from", "to", "proof"))
        if old != self.fp:
            return f"key rotation from {old!r}, but the chain's key is {self.fp}"
        if not is_fingerprint(new) or new == old:
            return f"key rotation to {new!r}: not a new key fingerprint"
        assert isinstance(new, str)
        if new != NO_KEY:
            held, key = self.keyring.lookup(new)
            if not held or key is None:
                return (f"key rotation to key {new}, which this process was not given; "
                        "verify with the chain's current key")
            want = rotation_proof(key, seq=ev.seq, prev_hash=ev.prev_hash, old_fp=old,
                                  new_fp=new)
            if not _same(want, proof):
                return "key rotation without the new key's proof: not made with both keys"
        if self.epochs.get(ev.seq + 1) != new:
            return "key rotation missing from the key record (audit_keys)"
        self.fp, self.epoch_start = new, ev.seq + 1
        self.announced.add(ev.seq + 1)
        return None

    def finish(self, head_id: str | None) -> VerifyResult:
        """After the last event (``head_id``: its id, ``None`` for an empty chain)."""
        if head_id is None:
            return VerifyResult(True, 0)
        for since in sorted(self.epochs):
            if since != 1 and since not in self.announced:
                at = f"evt-{since - 1}" if 1 < since <= self.prev_seq + 1 else head_id
                return self.bad(at, None, f"the key record (audit_keys) changes keys at "
                                          f"seq {since}, but the chain announces no rotation")
        if self.fp != self.keyring.current_fp:
            at = f"evt-{self.epoch_start}" if self.epoch_start <= self.prev_seq else head_id
            return self.bad(at, None, f"the chain is signed with {describe(self.fp)} from "
                                      f"evt-{self.epoch_start} on, but this process holds "
                                      f"{describe(self.keyring.current_fp)}")
        return VerifyResult(True, self.checked)
