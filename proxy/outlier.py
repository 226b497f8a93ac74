"""Endpoint choice and passive outlier ejection: pure rules over plain endpoint state.

* Choice is *power of two choices* on outstanding requests (Mitzenmacher): two random
  available endpoints, the less loaded wins. It needs no global scan and no lock.
* Passive ejection follows Envoy's ``consecutive_5xx``: ``consecutive_failures`` 5xx
  responses or connect failures in a row eject an endpoint for
  ``base_ejection_s × times_ejected``, capped at ``max_ejection_s``. An endpoint is never
  ejected when it is the last available one — better a flaky endpoint than none (Envoy's
  ``max_ejection_percent`` taken to its safe limit).
* Active health checks, when configured, mark an endpoint down or up; an endpoint that is
  down or ejected is unavailable. When nothing is available at all the pool "panics" and
  uses every endpoint, as Envoy does, instead of failing every request.

The clock (``now``) and the randomness (``rng``) are arguments, so tests drive time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from proxy.config import OutlierDetection


@dataclass(slots=True, eq=False)
class Endpoint:
    """Mutable per-endpoint state; only the functions below change it."""

    url: str
    outstanding: int = 0
    consecutive_failures: int = 0
    times_ejected: int = 0
    ejected_until: float = 0.0
    healthy: bool = True  # active health check verdict

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


def choose(
    endpoints: list[Endpoint], now: float, rng: random.Random, exclude: Endpoint | None = None
) -> Endpoint:
    """Pick an endpoint by power of two choices among the available ones."""
    if len(endpoints) == 1:
        return endpoints[0]  # the common case: nothing to choose (and nothing to exclude)
    pool = [e for e in endpoints if e is not exclude and e.available(now)]
    if not pool:  # panic mode: every endpoint rather than none
        pool = [e for e in endpoints if e is not exclude] or endpoints
    if len(pool) == 1:
        return pool[0]
    a, b = rng.sample(pool, 2)
    return a if a.outstanding <= b.outstanding else b


def record_success(ep: Endpoint) -> None:
    ep.consecutive_failures = 0


def record_failure(
    ep: Endpoint, endpoints: list[Endpoint], now: float, policy: OutlierDetection
) -> bool:
    """Count a 5xx or connect failure; eject when the policy says so. Returns ``True``
    when this failure ejected the endpoint."""
    ep.consecutive_failures += 1
    if ep.consecutive_failures < policy.consecutive_failures or not ep.available(now):
        return False
    others = sum(1 for e in endpoints if e is not ep and e.available(now))
    if others == 0:
        return False  # never eject the last available endpoint
    ep.times_ejected += 1
    ep.ejected_until = now + ejection_seconds(ep.times_ejected, policy)
    ep.consecutive_failures = 0
    return True


def ejection_seconds(times_ejected: int, policy: OutlierDetection) -> float:
    return min(policy.base_ejection_s * times_ejected, policy.max_ejection_s)
