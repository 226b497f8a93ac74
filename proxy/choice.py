"""Which variant serves a request: a pin (trusted or not), the sticky hash, or weighted
random (contract §3; the split tables themselves are in :mod:`proxy.splitter`).

A pin is honoured whenever the route has ``allow_pin``; whether the pinned request may be
judged depends on :mod:`proxy.pins` (``How.TRUSTED_PIN`` vs ``How.PIN``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from proxy.errors import BadPinError
from proxy.headers import VARIANT_HEADER
from proxy.runtime import RouteRuntime


class How(Enum):
    PIN = "pin"  # pinned from a source trusted_pins does not name: routed, not judged
    TRUSTED_PIN = "trusted_pin"
    HASH = "hash"
    RANDOM = "random"
    FALLBACK = "fallback"  # a hash split whose request lacked the key

    @property
    def pinned(self) -> bool:
        return self is How.PIN or self is How.TRUSTED_PIN


@dataclass(frozen=True, slots=True)
class Choice:
    variant: str
    how: How
    key: str | None = None

    @property
    def judged(self) -> bool:
        """Whether the request is a fair sample the rollout judge may read."""
        return self.how is not How.PIN


def choose_variant(rr: RouteRuntime, request: web.Request, rng: random.Random) -> Choice:
    """Pin, sticky hash, or weighted random (contract §3)."""
    split = rr.config.split
    if split.allow_pin:
        pinned = request.headers.get(VARIANT_HEADER)
        if pinned is not None:
            if pinned not in rr.config.variants:
                raise BadPinError(f"{VARIANT_HEADER}: {pinned!r} is not a variant of this route")
            trust = rr.pin_trust
            trusted = trust is not None and trust.trusts(request.headers, request.remote)
            return Choice(pinned, How.TRUSTED_PIN if trusted else How.PIN)
    if rr.hash_source is not None:
        kind, name = rr.hash_source
        key: str | None
        if kind == "header":
            key = request.headers.get(name)
        elif kind == "cookie":
            key = request.cookies.get(name)
        elif kind == "query":
            key = request.query.get(name)
        else:
            key = request.remote
        if key:
            return Choice(rr.table.pick_hash(key), How.HASH, key)
        rr.stats.record_fallback()
        return Choice(rr.table.pick_random(rng.random()), How.FALLBACK)
    return Choice(rr.table.pick_random(rng.random()), How.RANDOM)
