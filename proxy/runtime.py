"""The compiled configuration a request runs against, and its atomic replacement.

:class:`Runtime` is built once per config load: the router, one :class:`RouteRuntime` per
route (split table, variant -> backend pool, observation handles). A request takes the
current runtime at its start and keeps it to the end, so a reload never changes a request
in flight; the next request sees the new one. Backend pools whose settings did not change
are carried over with their warm connections; pools no longer used are closed once the
requests of the old runtime have finished (or the grace period ran out).

Live weights (contract §3): an operator's or a rollout's persisted weights for a route
override the config's; :meth:`Runtime.apply_weights` swaps one route's split table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.config import RouteConfig, Settings, effective_weights
from proxy.experiment.success import SuccessRule
from proxy.headers import INTERNAL_HEADERS, internal_headers
from proxy.mirror import ShadowBook, ShadowRoute
from proxy.observe import Observatory, RouteStats
from proxy.pins import PinTrust
from proxy.routing import Router
from proxy.splitter import SplitTable
from proxy.upstream import BackendPool

log = logging.getLogger("splitway.runtime")


@dataclass(slots=True, eq=False)
class RouteRuntime:
    """One route, compiled. ``table`` is replaced (never mutated) when weights change."""

    config: RouteConfig
    table: SplitTable
    pools: dict[str, BackendPool]  # variant -> pool
    stats: RouteStats
    hash_source: tuple[str, str] | None  # ("header", "x-user-id"), ("client_ip", "")
    shadow: ShadowRoute | None = None
    success: SuccessRule | None = None  # the experiment's, when the route has one
    json_field: str | None = None  # set by the rollout controller while a check needs it
    weights_source: str = "config"  # "config" | "api" | "rollout"
    pin_trust: PinTrust | None = None  # split.trusted_pins, compiled
    #: splitway's own request headers, never sent upstream (the runtime's union, shared)
    internal_headers: frozenset[str] = INTERNAL_HEADERS

    @property
    def salt(self) -> str:
        """The hash salt: the experiment's name when the route runs one (two experiments on
        one key space assign independently), the route's name otherwise."""
        return split_salt(self.config)

    @property
    def weights(self) -> dict[str, float]:
        by_name = dict(zip(self.table.variants, self.table.weights, strict=True))
        return {v: by_name.get(v, 0.0) for v in self.config.variants}


@dataclass(slots=True, eq=False)
class Runtime:
    settings: Settings
    router: Router
    routes: dict[str, RouteRuntime]
    pools: dict[str, BackendPool]  # backend name -> pool
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def apply_weights(self, route: str, weights: Mapping[str, float], source: str) -> None:
        rr = self.routes[route]
        full = {v: float(weights.get(v, 0.0)) for v in rr.config.variants}
        rr.table = SplitTable.build(rr.salt, full)
        rr.weights_source = source

    def live_weights(self) -> dict[str, dict[str, float]]:
        return {name: rr.weights for name, rr in self.routes.items()}


def split_salt(route: RouteConfig) -> str:
    return route.experiment.name if route.experiment is not None else route.name


def _hash_source(route: RouteConfig) -> tuple[str, str] | None:
    if route.split.strategy != "hash" or route.split.hash_on is None:
        return None
    kind, _, name = route.split.hash_on.partition(":")
    return (kind, name.lower() if kind == "header" else name)


def _pin_trust(route: RouteConfig) -> PinTrust | None:
    trusted = route.split.trusted_pins
    return PinTrust.of(trusted) if trusted is not None and route.split.allow_pin else None


def _shadow_route(route: RouteConfig, pools: dict[str, BackendPool], stats: RouteStats,
                  books: dict[str, ShadowBook]) -> ShadowRoute | None:
    if route.shadow is None:
        books.pop(route.name, None)
        return None
    book = books.get(route.name)
    if book is None or book.backend != route.shadow.backend:
        book = books[route.name] = ShadowBook(route.shadow.backend)  # a new shadow: new report
    return ShadowRoute(route.shadow, pools[route.shadow.backend], book, stats)


def build_runtime(
    settings: Settings,
    observatory: Observatory,
    previous: Runtime | None = None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    shadow_books: dict[str, ShadowBook] | None = None,
) -> Runtime:
    """Compile settings; reuse ``previous``'s pools whose backend settings are unchanged.
    ``shadow_books`` (route -> report) is updated in place: it outlives runtimes."""
    books = shadow_books if shadow_books is not None else {}
    observatory.sync(settings)
    old = previous.pools if previous else {}
    pools: dict[str, BackendPool] = {}
    for name, backend in settings.backends.items():
        kept = old.get(name)
        pools[name] = kept if kept is not None and kept.config == backend else BackendPool(
            name, backend
        )
    # Every route's secret header is dropped on every route: a secret sent to the wrong
    # route (or to one without trusted_pins) must not reach its backend either.
    internal = internal_headers(r.split.trusted_pins.header for r in settings.routes
                                if r.split.trusted_pins is not None)
    routes: dict[str, RouteRuntime] = {}
    for route in settings.routes:
        weights = effective_weights(route)
        source = "config"
        override = (overrides or {}).get(route.name)
        if override is not None and set(override) <= set(route.variants) and any(
            w > 0 for w in override.values()
        ):
            weights = {v: float(override.get(v, 0.0)) for v in route.variants}
            source = "api"
        elif override is not None:
            log.warning("route %s: stored weights %s no longer fit its variants; using config",
                        route.name, dict(override))
        routes[route.name] = RouteRuntime(
            config=route,
            table=SplitTable.build(split_salt(route), weights),
            pools={v: pools[b] for v, b in route.variants.items()},
            stats=observatory.route(route.name),
            hash_source=_hash_source(route),
            shadow=_shadow_route(route, pools, observatory.route(route.name), books),
            success=SuccessRule.of(route.experiment.success) if route.experiment else None,
            weights_source=source,
            pin_trust=_pin_trust(route),
            internal_headers=internal,
        )
    return Runtime(settings, Router.compile(settings.routes), routes, pools)


def retired_pools(old: Runtime, new: Runtime) -> list[BackendPool]:
    """Pools of ``old`` that ``new`` does not use (to close after the old drains)."""
    keep = {id(p) for p in new.pools.values()}
    return [p for p in old.pools.values() if id(p) not in keep]
