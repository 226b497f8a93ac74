"""Trusted pins: whether a pinned request may count toward a rollout's judgement.

Any client of a route with ``allow_pin`` can aim its requests at a variant with
``x-splitway-variant``; that is what pins are for (testing a blue-green candidate before
it takes traffic). Those requests are still routed and counted in Prometheus, but only a
pin from a source the route's ``split.trusted_pins`` names is a sample the rollout judge
may read: otherwise any client could push a candidate to a rollback (or through a step)
with a few deliberate requests.

A pin is trusted when *every* condition the config gives holds:

* ``secret`` — the request carries it in ``header`` (compared in constant time: both sides
  are hashed first, so neither the content nor the length of the secret leaks);
* ``sources`` — the peer address of the connection (never ``x-forwarded-for``, which the
  client writes) is in one of the networks; an IPv4-mapped IPv6 peer counts as IPv4.

The secret header is dropped before the request goes upstream, whether it matched or not —
every route's secret header name (and the default ``x-splitway-pin-secret``) on every
route, in any spelling (``_`` for ``-``), to the primary and the shadow
(:func:`proxy.headers.internal_headers`). Only the exact configured name is read as the
secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.config import TrustedPins

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PinTrust:
    """A route's compiled ``trusted_pins``; build with :meth:`of`."""

    header: str  # lower case; dropped upstream
    secret_digest: bytes | None
    networks: tuple[Network, ...] | None

    @classmethod
    def of(cls, config: TrustedPins) -> PinTrust:
        secret = config.secret.get_secret_value() if config.secret is not None else None
        return cls(
            header=config.header,
            secret_digest=_digest(secret) if secret is not None else None,
            networks=tuple(config.sources) if config.sources is not None else None,
        )

    def trusts(self, headers: Mapping[str, str], remote: str | None) -> bool:
        """Whether a pinned request with these headers, from this peer, is trusted."""
        if self.secret_digest is not None:
            given = headers.get(self.header)
            # Hash first: compare_digest is constant-time only for equal lengths.
            if given is None or not hmac.compare_digest(_digest(given), self.secret_digest):
                return False
        return self.networks is None or _source_in(remote, self.networks)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _source_in(remote: str | None, networks: tuple[Network, ...]) -> bool:
    if not remote:
        return False  # a Unix socket or an unknown peer: no address to trust
    try:
        addr = ipaddress.ip_address(remote.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)
