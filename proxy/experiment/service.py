"""The experiment service: lifecycle, counting on the request path, persistence, events.

* **Lifecycle** — an experiment named in the config is *created* and *started* the first
  time a proxy loads it (audited ``experiment.created`` / ``experiment.started``); it runs
  until *stopped* or *concluded* (with the winner and who decided) through the API or CLI.
  Nothing is counted once it is no longer running. The lifecycle lives in the state store,
  so every proxy of a fleet agrees.
* **Counting** — :meth:`ExperimentService.record` runs on the request path: a few integer
  additions and one HdrHistogram record into this process's :class:`ExperimentBook`.
  Every ``FLUSH_S`` the book is written to the store under this process's own key; a report
  merges every contribution (:func:`proxy.experiment.book.merge`).
* **Custom metrics** — ``POST /api/v1/experiments/{name}/events`` joins a later outcome to
  the variant that served it: by ``unit`` (the hash split is recomputed from the key) or by
  ``request_id`` (remembered for ``REQUEST_ID_TTL_S``, at most ``REQUEST_ID_MAX`` ids; see
  :class:`RequestIds`). A client can choose its own ``x-request-id``, so an id that
  served requests on two variants is *ambiguous*: its events are refused (409) rather
  than credited to whichever request came last — otherwise a client could resend one id
  until it landed on the variant it wanted.
* **Looks** — every flush is a look for the always-valid p-value: its running minimum is
  persisted, and a point of the cumulative difference is appended to the series the plot
  draws.
* **Store unavailable** — counting goes on in memory (this process's book is cumulative,
  so the next flush after the store returns carries everything); looks, reports, stops and
  conclusions wait for it: a look's running minimum and series point, and a decision's new
  state, change this process's copy only after the store has them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from proxy.errors import ConflictError, InvalidInputError, NotFoundError, StoreUnavailableError
from proxy.experiment.book import ExperimentBook, merge, totals_json
from proxy.experiment.report import build_report, series_point

if TYPE_CHECKING:
    from proxy.app import ProxyState
    from proxy.runtime import RouteRuntime

log = logging.getLogger("splitway.experiment")

NS_COUNTS = "experiment_counts"
NS_META = "experiments"
FLUSH_S = 5.0
REQUEST_ID_TTL_S = 3600.0
REQUEST_ID_MAX = 200_000
SERIES_MAX = 500
STALE_S = 3600.0  # a contribution not flushed for this long is from a process that is gone
ARCHIVE = "_archive"
COMPACT_LOCK_KEY = 0x5357_0020


class RequestIds:
    """Request id -> the variant that served it, per experiment, for ``ttl_s`` and at most
    ``cap`` ids (the oldest go first).

    Keys are 16-byte digests of (experiment, id), so an entry's size does not depend on
    the id's. The same id served again by the same variant is fine (a client's retry); by
    another variant, it becomes ambiguous until it expires (:meth:`variant_of` raises)."""

    def __init__(self, ttl_s: float = REQUEST_ID_TTL_S, cap: int = REQUEST_ID_MAX) -> None:
        self._ttl_s, self._cap = ttl_s, cap
        # digest -> (variant, or None once ambiguous; expiry)
        self._ids: OrderedDict[bytes, tuple[str | None, float]] = OrderedDict()

    @staticmethod
    def _key(experiment: str, request_id: str) -> bytes:
        return hashlib.blake2b(f"{experiment}\0{request_id}".encode(), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, experiment: str, request_id: str, variant: str, now: float) -> None:
        key = self._key(experiment, request_id)
        prior = self._ids.get(key)
        served: str | None = variant
        if prior is not None and prior[1] >= now and prior[0] != variant:
            served = None
        self._ids[key] = (served, now + self._ttl_s)
        self._ids.move_to_end(key)
        if len(self._ids) > self._cap:
            self._ids.popitem(last=False)

    def variant_of(self, experiment: str, request_id: str, now: float) -> str:
        """The variant that served ``request_id``; NotFoundError if unknown or expired,
        ConflictError (``field`` request_id) if more than one variant served it."""
        found = self._ids.get(self._key(experiment, request_id))
        if found is None or found[1] < now:
            raise NotFoundError(f"request id {request_id!r} is unknown or expired",
                                field="request_id")
        if found[0] is None:
            raise ConflictError(f"request id {request_id!r} was served by more than one "
                                "variant; its events cannot be credited to either",
                                field="request_id")
        return found[0]


class ExperimentService:
    def __init__(self, state: ProxyState, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.books: dict[str, ExperimentBook] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.request_ids = RequestIds()
        self._lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    async def sync(self, actor: str = "config") -> None:
        """Create (and start) every experiment of the config seen for the first time."""
        store, audit = self._state.store, self._state.audit
        assert store is not None and audit is not None
        async with self._lock:
            self.meta = await store.kv_list(NS_META)
            for rr in self._state.current.routes.values():
                exp = rr.config.experiment
                if exp is None:
                    continue
                self.books.setdefault(exp.name, ExperimentBook(tuple(rr.config.variants)))
                if exp.name in self.meta:
                    continue
                meta = {"name": exp.name, "route": rr.config.name, "control": exp.control,
                        "state": "running", "started_at": self._clock(), "seq": {},
                        "series": []}
                async with store.transaction() as tx:
                    await store.kv_put(NS_META, exp.name, meta, tx=tx)
                    details = {"route": rr.config.name, "control": exp.control,
                               "variants": list(rr.config.variants),
                               "success": exp.success.model_dump(exclude_none=True)}
                    await audit.append(tx, "experiment.created", actor,
                                       f"experiment/{exp.name}", details)
                    await audit.append(tx, "experiment.started", actor,
                                       f"experiment/{exp.name}", {"route": rr.config.name})
                self.meta[exp.name] = meta

    def running(self, name: str) -> bool:
        meta = self.meta.get(name)
        return meta is not None and meta["state"] == "running"

    # -- the request path ----------------------------------------------------------------
    def record(self, rr: RouteRuntime, variant: str, *, success: bool, duration_s: float,
               unit: str | None, fallback: bool, request_id: str) -> None:
        exp = rr.config.experiment
        if exp is None or not self.running(exp.name):
            return
        book = self.books.get(exp.name)
        if book is None:
            return
        book.record(variant, success, duration_s, weights=lambda: rr.weights,
                    weights_key=rr.table, unit=unit, fallback=fallback)
        self.request_ids.add(exp.name, request_id, variant, self._clock())

    # -- events --------------------------------------------------------------------------
    def _route_of(self, name: str) -> RouteRuntime:
        for rr in self._state.current.routes.values():
            if rr.config.experiment is not None and rr.config.experiment.name == name:
                return rr
        raise NotFoundError(f"no experiment named {name!r}")

    def event(self, name: str, body: Mapping[str, Any]) -> str:
        """Join a custom metric value to a variant; returns the variant."""
        rr = self._route_of(name)
        if not self.running(name):
            raise ConflictError(f"experiment {name!r} is {self.meta[name]['state']}")
        metric, value = body.get("metric"), body.get("value")
        if not isinstance(metric, str) or not metric or len(metric) > 64:
            raise InvalidInputError("metric must be a name of 1-64 characters", field="metric")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError("value must be a number", field="value")
        unit, request_id = body.get("unit"), body.get("request_id")
        if (unit is None) == (request_id is None):
            raise InvalidInputError("give exactly one of unit and request_id", field="unit")
        if unit is not None:
            if rr.hash_source is None:
                raise InvalidInputError("unit needs a hash split; use request_id", field="unit")
            variant = rr.table.pick_hash(str(unit))
        else:
            variant = self.request_ids.variant_of(name, str(request_id), self._clock())
        self.books[name].record_metric(variant, metric, float(value))
        return variant

    # -- persistence and reports ---------------------------------------------------------
    async def flush(self) -> None:
        store = self._state.store
        assert store is not None
        for name, book in self.books.items():
            await store.kv_put(NS_COUNTS, f"{name}/{self.identity}",
                               {**book.to_json(), "updated_at": self._clock()})

    async def compact(self, name: str) -> int:
        """Fold the contributions of processes gone for ``STALE_S`` into ``NAME/_archive``
        (a live process flushes every ``FLUSH_S``), so a look does not merge one entry per
        restart forever. Returns how many were folded."""
        store = self._state.store
        assert store is not None
        archive_key = f"{name}/{ARCHIVE}"
        cutoff = self._clock() - STALE_S
        async with store.transaction() as tx:
            await tx.lock(COMPACT_LOCK_KEY)
            rows = await store.kv_list(NS_COUNTS, tx=tx)
            stale = {k: v for k, v in rows.items() if k.rsplit("/", 1)[0] == name
                     and k != archive_key and v.get("updated_at", 0.0) < cutoff}
            if not stale:
                return 0
            parts = [*([rows[archive_key]] if archive_key in rows else []), *stale.values()]
            await store.kv_put(NS_COUNTS, archive_key, totals_json(merge(parts)), tx=tx)
            for key in stale:
                await store.kv_delete(NS_COUNTS, key, tx=tx)
        return len(stale)

    async def look(self, name: str) -> dict[str, Any]:
        """Flush, merge every contribution, update the running minimum of the sequential
        p-values and the series; returns the report (contract §9)."""
        store = self._state.store
        assert store is not None
        if name not in self.meta:
            raise NotFoundError(f"no experiment named {name!r}")
        await self.flush()
        await self.compact(name)
        rows = await store.kv_list(NS_COUNTS)
        totals = merge([v for k, v in rows.items() if k.rsplit("/", 1)[0] == name])
        meta = self.meta[name]
        rr = self._route_of(name)
        report, seq = build_report(meta, totals, rr)
        if meta["state"] == "running":
            point = series_point(self._clock(), report)
            meta = {**meta, "seq": seq,
                    "series": [*meta.get("series", []), point][-SERIES_MAX:]}
            await store.kv_put(NS_META, name, meta)
            self.meta[name] = meta  # only once stored: a failed write leaves no trace
        report["series"] = meta.get("series", [])
        return report

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            for name in list(self.books):
                try:
                    if self.running(name):
                        await self.look(name)
                except StoreUnavailableError:
                    break  # no look until the store is back (it logs the outage once)
                except Exception:  # a bad look must not stop counting
                    log.exception("experiment %s: look failed", name)

    async def finish(self, name: str, actor: str, winner: str | None) -> dict[str, Any]:
        """Stop (``winner`` None) or conclude an experiment; audited."""
        store, audit = self._state.store, self._state.audit
        assert store is not None and audit is not None
        rr = self._route_of(name)
        if winner is not None and winner not in rr.config.variants:
            raise InvalidInputError(f"{winner!r} is not a variant of {rr.config.name!r}",
                                    field="winner")
        report = await self.look(name)
        async with self._lock:
            meta = self.meta[name]
            if meta["state"] == "concluded" or (meta["state"] == "stopped" and winner is None):
                raise ConflictError(f"experiment {name!r} is already {meta['state']}")
            meta = {**meta, "state": "concluded" if winner else "stopped", "winner": winner,
                    "decided_by": actor, "ended_at": self._clock()}
            kind = "experiment.concluded" if winner else "experiment.stopped"
            async with store.transaction() as tx:
                await store.kv_put(NS_META, name, meta, tx=tx)
                await audit.append(tx, kind, actor, f"experiment/{name}",
                                   {"winner": winner, "route": rr.config.name,
                                    "comparisons": report["comparisons"]})
            self.meta[name] = meta  # counting stops only once the decision is stored
        return {**report, "state": meta["state"], "winner": winner, "decided_by": actor}
