"""``splitway audit rotate-key``: change the key that signs the audit chain, offline.

Run against the state store (``-c CONFIG`` for its ``state:`` URL, or ``--state URL``) with
the proxies stopped. The keys come from the environment, never from the command line
(where ``ps`` and shell history would show them):

- ``SPLITWAY_AUDIT_HMAC_KEY``: the key the chain is signed with now (unset: unkeyed);
- ``SPLITWAY_AUDIT_HMAC_KEY_NEW``: the key to sign with from now on (or ``--remove-key``);
- ``SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS``: older keys, comma-separated, so the chain can be
  verified first.

It checks that the current key is the chain's (exit 1 otherwise, naming both
fingerprints), verifies the chain (a break is reported, not fatal: a key is often
rotated *because* something went wrong), then appends ``audit.key_rotated`` signed with
the current key and proved with the new one (:mod:`control.audit.keys`) and records the
new fingerprint, in one transaction. Exit codes: 0 rotated, 1 refused or the store
failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import Any

from control.audit import AuditEvent, Keyring, VerifyResult, keyring_from_env
from control.audit.keys import (
    KEY_ENV,
    MIN_NEW_KEY_BYTES,
    NEW_KEY_ENV,
    NO_KEY,
    PREVIOUS_KEYS_ENV,
    AuditKeyError,
    describe,
)
from control.store import open_store
from proxy.cliutil import UsageError, add_config, print_json
from proxy.config_load import load_settings_file
from proxy.errors import InvalidInputError, StoreError

PROG = "splitway audit rotate-key"


def new_key_problem(key: str) -> str | None:
    """Why ``key`` may not become the audit key (``None``: it may)."""
    if len(key.encode()) < MIN_NEW_KEY_BYTES:
        return f"{NEW_KEY_ENV} must be at least {MIN_NEW_KEY_BYTES} bytes"
    if "," in key or key != key.strip():
        return (f"{NEW_KEY_ENV} must not contain commas or start or end with whitespace "
                "(keys are listed comma-separated once retired)")
    return None


def _new_key(args: argparse.Namespace) -> bytes | None:
    raw = os.environ.get(NEW_KEY_ENV)
    if args.remove_key:
        if raw:
            raise UsageError(f"{PROG}: --remove-key and {NEW_KEY_ENV} both given; pick one")
        return None
    if not raw:
        raise UsageError(f"{PROG}: set {NEW_KEY_ENV} to the new key (or pass --remove-key "
                         "to stop signing the chain)")
    if (problem := new_key_problem(raw)) is not None:
        raise UsageError(f"{PROG}: {problem}")
    return raw.encode()


def _state_url(args: argparse.Namespace) -> str:
    if args.state:
        return str(args.state)
    if args.config is None:
        raise UsageError(f"{PROG}: give -c CONFIG (or SPLITWAY_CONFIG) or --state URL")
    return load_settings_file(args.config, os.environ).state


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "operator"


async def _rotate(url: str, keys: Keyring, new: bytes | None, actor: str,
                  reason: str | None) -> tuple[VerifyResult, AuditEvent]:
    async with open_store(url, hmac_key=keys.current) as store:
        store.audit.set_previous_keys(keys.previous)
        await store.audit.check_key()
        verified = await store.audit.verify()
        event = await store.audit.rotate_key(new, actor, reason)
    return verified, event


def cmd_rotate_key(args: argparse.Namespace) -> int:
    new = _new_key(args)
    keys = keyring_from_env(os.environ)
    url = _state_url(args)
    try:
        verified, event = asyncio.run(_rotate(url, keys, new, _actor(args), args.reason))
    except AuditKeyError as exc:
        print(f"{PROG}: {exc.detail}", file=sys.stderr)
        return 1
    except InvalidInputError as exc:
        raise UsageError(f"{PROG}: {exc.detail}") from None
    except StoreError as exc:
        print(f"{PROG}: state store {url!r}: {exc.detail}", file=sys.stderr)
        return 1
    if not verified.ok:
        print(f"{PROG}: warning: the chain was already broken at {verified.first_bad_event} "
              f"({verified.reason}); the rotation is recorded after it and verification "
              "still reports the break", file=sys.stderr)
    old_fp, new_fp = event.details["from"], event.details["to"]
    if args.json:
        out: dict[str, Any] = {"event": event.to_dict(), "from": old_fp, "to": new_fp,
                               "verified_before": verified.to_dict()}
        print_json(out)
    else:
        print(f"audit key rotated at {event.id}: {describe(old_fp)} -> {describe(new_fp)}")
    keep = ("" if old_fp == NO_KEY else f"; keep the old key in {PREVIOUS_KEYS_ENV} so the "
            "events it signed still verify")
    start = f"{KEY_ENV} set to the new key" if new is not None else f"{KEY_ENV} unset"
    print(f"next: restart splitway with {start}{keep}", file=sys.stderr)
    return 0


def register(verbs: argparse._SubParsersAction[Any]) -> None:
    """Add ``splitway audit rotate-key`` to the ``audit`` verbs."""
    p = verbs.add_parser("rotate-key", help="change the audit chain's HMAC key (offline; "
                         f"keys from ${KEY_ENV} and ${NEW_KEY_ENV})")
    add_config(p)
    p.add_argument("--state", help="state store URL (default: the config's state:)")
    p.add_argument("--remove-key", action="store_true",
                   help="stop signing: the chain goes on unkeyed")
    p.add_argument("--actor", help="who rotates (default: the login name)")
    p.add_argument("--reason", help="why, recorded in the event")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_rotate_key)

