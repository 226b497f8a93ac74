"""Which HMAC key signs the audit chain: fingerprints, the keyring, rotation proofs.

A key is never stored or printed; its **fingerprint** is: the first 16 hex digits of
SHA-256 over a domain-separation prefix and the key (``"none"`` for an unkeyed chain), so
the fingerprint of an audit key cannot be confused with a hash of the same bytes made for
any other purpose. The store keeps the fingerprint with the chain (``audit_keys``: the
fingerprint in force from a given ``seq`` on), and :func:`check_fingerprint` compares it
with the key a process was given before that process may append.

A key change is an ``audit.key_rotated`` event: signed (hashed) with the *old* key like
every event of its epoch, with details ``{"from": OLD_FP, "to": NEW_FP, "proof": P}``
where ``P`` is :func:`rotation_proof`, an HMAC with the *new* key over the event's place
in the chain. The old key's signature shows the holder of the chain's key made the change;
the proof shows the new key was in hand too, so nobody can forge a move from an unkeyed
chain (whose "signature" anyone can compute) to a key of their own.

Everything here is pure; only the CLI reads the environment and hands it over as a mapping.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.errors import SplitwayError

NO_KEY = "none"
KEY_ENV = "SPLITWAY_AUDIT_HMAC_KEY"
NEW_KEY_ENV = "SPLITWAY_AUDIT_HMAC_KEY_NEW"
PREVIOUS_KEYS_ENV = "SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS"
MIN_NEW_KEY_BYTES = 16

_FINGERPRINT_PREFIX = b"splitway audit key fingerprint v1\x00"
_PROOF_PREFIX = b"splitway audit key rotation v1\x00"
_FINGERPRINT = re.compile(r"none|[0-9a-f]{16}")


class AuditKeyError(SplitwayError):
    """The HMAC key given is not the key the audit chain is signed with (or the key record
    is inconsistent). Appending would break the chain, so the process refuses to."""

    kind, status = "audit_key", 500


def fingerprint(key: bytes | None) -> str:
    """``"none"`` for no key; else 16 hex digits of a domain-separated SHA-256 of the key."""
    if key is None:
        return NO_KEY
    return hashlib.sha256(_FINGERPRINT_PREFIX + key).hexdigest()[:16]


def is_fingerprint(value: object) -> bool:
    return isinstance(value, str) and _FINGERPRINT.fullmatch(value) is not None


def describe(fp: str) -> str:
    return "no key (unkeyed)" if fp == NO_KEY else f"key {fp}"


def rotation_proof(new_key: bytes, *, seq: int, prev_hash: str, old_fp: str, new_fp: str) -> str:
    """HMAC-SHA256 with the new key over where the rotation sits and what it changes."""
    message = f"{seq}\x00{prev_hash}\x00{old_fp}\x00{new_fp}".encode()
    return hmac.new(new_key, _PROOF_PREFIX + message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key a process signs with (``current``) and older keys it may verify with."""

    current: bytes | None = None
    previous: tuple[bytes, ...] = ()

    @property
    def current_fp(self) -> str:
        return fingerprint(self.current)

    def lookup(self, fp: str) -> tuple[bool, bytes | None]:
        """``(held, key)`` for a fingerprint; an unkeyed epoch needs no key."""
        if fp == NO_KEY:
            return True, None
        for key in (self.current, *self.previous):
            if key is not None and fingerprint(key) == fp:
                return True, key
        return False, None


def keyring_from_env(env: Mapping[str, str]) -> Keyring:
    """``SPLITWAY_AUDIT_HMAC_KEY`` and ``SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS`` (comma-separated:
    the keys earlier epochs of the chain were signed with, for verification only)."""
    current = env.get(KEY_ENV) or None
    previous = [k.strip() for k in env.get(PREVIOUS_KEYS_ENV, "").split(",") if k.strip()]
    return Keyring(current.encode() if current else None, tuple(k.encode() for k in previous))


def mismatch_message(expected: str, given: str) -> str:
    """One line: the fingerprint the chain needs, the one given, and how to fix it."""
    chain = ("is unkeyed (fingerprint none)" if expected == NO_KEY
             else f"is signed with key fingerprint {expected}")
    got = (f"{KEY_ENV} is not set" if given == NO_KEY
           else f"{KEY_ENV} has fingerprint {given}")
    if expected == NO_KEY:
        fix = f"unset {KEY_ENV}, or add a key with `splitway audit rotate-key`"
    else:
        fix = (f"set {KEY_ENV} to the key whose fingerprint is {expected} (to change keys "
               "use `splitway audit rotate-key`)")
    return f"audit key mismatch: the audit chain {chain} but {got}; {fix}"


def check_fingerprint(recorded: str, given: str) -> None:
    """Raise :class:`AuditKeyError` unless the chain's recorded fingerprint is the given one."""
    if recorded != given:
        raise AuditKeyError(mismatch_message(recorded, given))
