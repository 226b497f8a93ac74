"""Application assembly: the proxy's shared state and the data-plane ``web.Application``.

Ownership, in start order (and shut down in reverse by ``cleanup_ctx``):

1. the state store (``open_store``) — persisted weights, audit log;
2. the runtime (compiled config and backend pools) — pools closed last of all requests;
3. background loops (active health checks, the weight sync that lets several workers or
   proxies share weights set through the store).

Reload replaces the runtime atomically; the pools the new config dropped are closed by a
task this state owns once the old runtime's requests have finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from control.audit import AuditLog, keyring_from_env
from control.audit.keys import describe
from control.auth import TokenTable, load_tokens_file, token_changes
from control.store import Store, open_store
from proxy.config import Settings
from proxy.config_load import load_settings_file
from proxy.errors import ConfigError, InvalidInputError, NotFoundError, StoreUnavailableError
from proxy.experiment.service import ExperimentService
from proxy.handler import ProxyHandler
from proxy.mirror import Mirror, ShadowBook
from proxy.notify import Notifier
from proxy.observe import Observatory
from proxy.rollout.controller import RolloutController
from proxy.runtime import Runtime, build_runtime, retired_pools

log = logging.getLogger("splitway")

WEIGHT_SYNC_INTERVAL_S = 1.0


@dataclass(eq=False)
class ProxyState:
    """Everything one proxy process holds; handed to both apps through an ``AppKey``."""

    settings: Settings
    config_path: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    observatory: Observatory = field(default_factory=Observatory)
    mirror: Mirror = field(default_factory=Mirror)
    rollouts: RolloutController | None = None
    experiments: ExperimentService = field(init=False)
    shadow_books: dict[str, ShadowBook] = field(default_factory=dict)
    store: Store | None = None
    audit: AuditLog | None = None
    #: the admin API's tokens (``None``: no tokens file); swapped whole by :meth:`reload`
    tokens: TokenTable | None = None
    _runtime: Runtime | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.experiments = ExperimentService(self)

    @property
    def current(self) -> Runtime:
        assert self._runtime is not None, "runtime used before the app started"
        return self._runtime

    def own(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task this state owns (cancelled at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_health_checks(self, runtime: Runtime, previous: Runtime | None) -> None:
        old = {id(p) for p in previous.pools.values()} if previous else set()
        for pool in runtime.pools.values():
            if pool.config.health_check is not None and id(pool) not in old:
                self.own(pool.health_loop(), f"health:{pool.name}")

    async def start_runtime(self) -> None:
        overrides = await self.store.get_route_weights() if self.store else {}
        self._runtime = build_runtime(self.settings, self.observatory, None, overrides,
                                      self.shadow_books)
        self._start_health_checks(self._runtime, None)
        await self._audit_shadows(None, self._runtime, "startup")

    async def reload(self, actor: str = "signal") -> Settings:
        """Load the config file again and swap the runtime; the old one keeps serving the
        requests it started. The tokens file (``admin.tokens_file`` of the new config) is
        read again too, so a revoked token stops working and a new one starts. Raises
        :class:`ConfigError` (and changes nothing) when the new file or its tokens file is
        invalid."""
        if self.config_path is None:
            raise ConfigError([])
        async with self._reload_lock:
            settings = await asyncio.to_thread(load_settings_file, self.config_path, self.env)
            tokens = await asyncio.to_thread(load_tokens_file, settings.admin.tokens_file)
            overrides = await self.store.get_route_weights() if self.store else {}
            old = self.current
            new = build_runtime(settings, self.observatory, old, overrides, self.shadow_books)
            token_change = token_changes(self.tokens, tokens)
            self.settings, self._runtime, self.tokens = settings, new, tokens
            self._start_health_checks(new, old)
            self.own(self._retire(old, new), "retire-runtime")
            if self.store is not None and self.audit is not None:
                async with self.store.transaction() as tx:
                    await self.audit.append(tx, "config.reloaded", actor, "config",
                                            {"path": str(self.config_path),
                                             "routes": [r.name for r in settings.routes]})
                    if token_change is not None:
                        tokens_path = settings.admin.tokens_file
                        await self.audit.append(
                            tx, "tokens.reloaded", actor, "tokens",
                            {"path": str(tokens_path) if tokens_path else None, **token_change})
            if token_change is not None:
                log.info("admin tokens reloaded: %d tokens, added %s, removed %s",
                         token_change["tokens"], token_change["added"] or "none",
                         token_change["removed"] or "none")
            await self._audit_shadows(old, new, actor)
            await self.experiments.sync(actor)
            log.info("config reloaded from %s", self.config_path)
            return settings

    async def _audit_shadows(self, old: Runtime | None, new: Runtime, actor: str) -> None:
        """``shadow.started`` / ``shadow.stopped`` for every shadow the change adds or ends."""
        if self.store is None or self.audit is None:
            return
        before = {(n, r.shadow.pool.name) for n, r in (old.routes if old else {}).items()
                  if r.shadow is not None}
        after = {(n, r.shadow.pool.name) for n, r in new.routes.items() if r.shadow is not None}
        changes = [("shadow.stopped", x) for x in sorted(before - after)] + [
            ("shadow.started", x) for x in sorted(after - before)]
        if not changes:
            return
        async with self.store.transaction() as tx:
            for kind, (route, backend) in changes:
                await self.audit.append(tx, kind, actor, f"route/{route}",
                                        {"route": route, "backend": backend})

    async def _retire(self, old: Runtime, new: Runtime) -> None:
        await old.wait_idle(self.settings.grace_period_s)
        for pool in retired_pools(old, new):
            await pool.close()

    async def set_weights(self, route: str, weights: Mapping[str, float], actor: str) -> None:
        """Validate, persist (with its audit event) and apply new weights for a route."""
        rr = self.current.routes.get(route)
        if rr is None:
            raise NotFoundError(f"no route named {route!r}")
        for name, w in weights.items():
            if name not in rr.config.variants:
                raise InvalidInputError(f"{name!r} is not a variant of {route!r}",
                                        field=f"weights.{name}")
            if not isinstance(w, int | float) or isinstance(w, bool) or not 0 <= w < 1e9:
                raise InvalidInputError("weights are numbers >= 0", field=f"weights.{name}")
        if not any(w > 0 for w in weights.values()):
            raise InvalidInputError("weights must not all be zero", field="weights")
        full = {v: float(weights.get(v, 0.0)) for v in rr.config.variants}
        if self.store is not None:
            await self.store.set_route_weights(route, full, actor)
        self.current.apply_weights(route, full, "api")

    async def sync_weights_loop(self) -> None:
        """Apply weights other processes stored (workers, a fleet on PostgreSQL)."""
        assert self.store is not None
        while True:
            await asyncio.sleep(WEIGHT_SYNC_INTERVAL_S)
            try:
                stored = await self.store.get_route_weights()
            except StoreUnavailableError:
                continue  # keep serving the last table; the store logs its outage once
            except Exception:
                log.warning("weight sync failed", exc_info=True)
                continue
            rt = self.current
            for route, weights in stored.items():
                rr = rt.routes.get(route)
                if rr is None or not set(weights) <= set(rr.config.variants):
                    continue
                full = {v: float(weights.get(v, 0.0)) for v in rr.config.variants}
                if full != rr.weights and any(w > 0 for w in full.values()):
                    rt.apply_weights(route, full, "api")


STATE = web.AppKey("state", ProxyState)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    keys = keyring_from_env(state.env)
    store = open_store(state.settings.state, hmac_key=keys.current)
    store.audit.set_previous_keys(keys.previous)
    await store.open()
    try:  # before anything appends: a key that is not the chain's refuses to start
        log.info("audit chain signed with %s", describe(await store.audit.check_key()))
    except BaseException:
        await store.close()
        raise
    state.store = store
    state.audit = store.audit
    notify = state.settings.notifications
    notifier = Notifier(notify.webhooks, timeout_s=notify.timeout_s, retries=notify.retries)
    try:
        await state.start_runtime()
        state.rollouts = RolloutController(state, notifier)
        await state.rollouts.load()
        await state.experiments.sync()
        state.own(state.sync_weights_loop(), "weight-sync")
        state.own(state.rollouts.run(), "rollout-controller")
        state.own(state.experiments.loop(), "experiments")
        yield
    finally:
        await state.cancel_tasks()
        if state.store is not None and state._runtime is not None:
            try:
                await state.experiments.flush()  # the last counts of this process
            except StoreUnavailableError as exc:
                log.warning("could not save experiment counts: %s", exc.detail)
            except Exception:
                log.exception("could not save experiment counts")
        await state.mirror.close()
        await notifier.close()
        if state.rollouts is not None:
            await state.rollouts.close()
        if state._runtime is not None:
            for pool in state._runtime.pools.values():
                await pool.close()
        await store.close()


def create_data_app(state: ProxyState) -> web.Application:
    """The data plane: one catch-all handler; ``client_max_size`` is enforced per route."""
    handler = ProxyHandler(state)
    app = web.Application(client_max_size=1 << 62, handler_args={"max_field_size": 16384},
                          middlewares=[_unrouted(handler)])
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def _unrouted(proxy_handler: ProxyHandler) -> Middleware:
    """aiohttp's router only routes paths starting with ``/``: an absolute-form target with
    an empty path (``http://host``) and ``OPTIONS *`` reach the proxy handler through this,
    which judges every target itself (:mod:`proxy.target`)."""

    @web.middleware
    async def unrouted(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await proxy_handler(request)
        return await handler(request)

    return unrouted

