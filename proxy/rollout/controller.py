"""The rollout controller: feeds each look's traffic to the pure :func:`look`, persists and
applies what it decides.

Every tick, the leader takes each arm's counters and subtracts the snapshot it took when
the rollout's state was last committed: these increments are what :func:`look` folds into
the evidence carried by the stored state. A look that records nothing is not written, so
the next tick folds the larger increment into the same stored evidence; every committed
look moves the snapshot. The evidence (whole rollout) is persisted with the state, so a
restarted or new leader resumes it and adds what it sees from its own first look on.

Every proxy sharing a state store runs one controller, and exactly one of them **leads**:
it holds a lease row in the store (taken and renewed every tick under the store's
cross-process lock — an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which
expires ``LEASE_S`` after its holder stops renewing it, so a dead leader is replaced within a
few seconds. Only the leader judges; it writes each transition — rollout state, the route's
weights and the audit event — in one transaction, so the other proxies (and the other
workers of this one) apply the new weights through the weight sync within a second, and a
restarted proxy resumes at the step it had reached.

Concurrent writers (a leader's tick, an operator's ``pause`` on another proxy) are ordered
by a revision number: a write whose revision is no longer the stored one is dropped, and
the next tick starts again from what is stored.

When the store is unavailable the controller **freezes**: a tick that cannot renew the
lease, read the rollouts or commit a transition changes nothing here (a decision is applied
only after its transaction commits), so no step, promotion or rollback happens on what
could not be read or written, and this proxy stops counting itself leader. Once the store
answers again, the first tick restarts every progressing rollout's step timer at its
persisted step (as after a restart): the traffic proxied during the outage is not judged,
the evidence stored before it is kept, and ``progress_deadline_s`` counts from the return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from control.gate import GateRefusedError
from proxy.config import Rollout
from proxy.errors import ConflictError, StoreUnavailableError
from proxy.notify import Notifier
from proxy.observe import VariantSnapshot, buckets_ms, delta
from proxy.rollout import machine as m
from proxy.rollout.analysis import Arm, Check, Judgement, judge_shadow
from proxy.rollout.look import look
from proxy.rollout.promql import prometheus_checks
from proxy.rollout.registry_link import record_outcome

if TYPE_CHECKING:
    from proxy.app import ProxyState
    from proxy.runtime import RouteRuntime

log = logging.getLogger("splitway.rollout")

NS_ROLLOUTS = "rollouts"
NS_LEASES = "leases"
NS_QUARANTINE = "quarantine"
LEASE_LOCK_KEY = 0x5357_0010
CONTROLLER = "rollout-controller"
TICK_S = 0.5
LEASE_S = 3.0


def arm(snap: VariantSnapshot) -> Arm:
    """A judge's view of one variant's window: counts and latency buckets in ms."""
    return Arm(snap.requests, snap.errors, buckets_ms(snap.latency), snap.field_values)


class RolloutController:
    def __init__(self, state: ProxyState, notifier: Notifier, *,
                 clock: Callable[[], float] = time.time, tick_s: float = TICK_S) -> None:
        self._state = state
        self._notifier = notifier
        self._clock = clock
        self._tick_s = tick_s
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.is_leader = False
        self._states: dict[str, tuple[int, m.RolloutState]] = {}
        self._http: aiohttp.ClientSession | None = None
        self.frozen = False  # the last tick found the store unavailable
        # route -> (revision of the stored state, the arms' snapshots when it was committed)
        self._windows: dict[str, tuple[int, dict[str, VariantSnapshot]]] = {}

    def now(self) -> float:
        return self._clock()

    # -- reading ------------------------------------------------------------------------------
    def states(self) -> dict[str, m.RolloutState]:
        return {route: st for route, (_, st) in self._states.items()}

    async def load(self) -> dict[str, tuple[int, m.RolloutState]]:
        store = self._state.store
        assert store is not None
        raw = await store.kv_list(NS_ROLLOUTS)
        self._states = {route: (v["rev"], m.RolloutState.from_json(v["state"]))
                        for route, v in raw.items()}
        return self._states

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StoreUnavailableError:
                self._freeze()
            except Exception:  # keep leading: one bad tick must not end the loop
                log.exception("rollout tick failed")
            await asyncio.sleep(self._tick_s)

    def _freeze(self) -> None:
        """The store is away: lead nothing, and judge no window that spans the outage."""
        self.is_leader = False
        self._windows.clear()
        if not self.frozen:
            log.warning("rollouts frozen at their steps: the state store is unavailable")
        self.frozen = True

    async def tick(self) -> None:
        self.is_leader = False  # until the lease is renewed
        self.is_leader = await self._hold_lease()
        states = await self.load()
        for rev, st in states.values():
            self._ensure_backend(st)
            self._ensure_field(st)
            if self.is_leader and st.status is m.Status.PROGRESSING:
                try:
                    await self._advance(rev, st)
                except StoreUnavailableError:
                    raise  # the whole controller freezes (run)
                except Exception:  # one broken rollout must not starve the others
                    log.exception("rollout on route %s: tick failed", st.route)
        if self.frozen:
            log.warning("rollouts resume at their persisted steps: the state store is back")
        self.frozen = False

    async def _hold_lease(self) -> bool:
        store = self._state.store
        assert store is not None
        now = self._clock()
        async with store.transaction() as tx:
            await tx.lock(LEASE_LOCK_KEY)
            lease = await store.kv_get(NS_LEASES, "rollouts", tx=tx)
            if lease is None or lease["holder"] == self.identity or lease["expires"] < now:
                await store.kv_put(NS_LEASES, "rollouts",
                                   {"holder": self.identity, "expires": now + LEASE_S}, tx=tx)
                return True
        return False

    def _ensure_field(self, st: m.RolloutState) -> None:
        """Ask the request path to read the policy's JSON field while the rollout runs."""
        rr = self._state.current.routes.get(st.route)
        if rr is None:
            return
        metric = rr.config.rollout.analysis.json_metric if rr.config.rollout else None
        rr.json_field = metric.path if metric is not None and st.status in m.ACTIVE else None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _ensure_backend(self, st: m.RolloutState) -> None:
        """Point the candidate variant at the version's backend while it is not finished
        (or finished as the winner)."""
        if st.candidate_backend is None:
            return
        rt = self._state.current
        rr, pool = rt.routes.get(st.route), rt.pools.get(st.candidate_backend)
        if rr is not None and pool is not None and rr.pools.get(st.candidate) is not pool:
            rr.pools[st.candidate] = pool

    # -- judging ------------------------------------------------------------------------------
    def _shadow(self, st: m.RolloutState, rr: RouteRuntime, policy: Rollout) -> Judgement:
        phase = policy.shadow_phase
        assert phase is not None
        if rr.shadow is None:
            return judge_shadow(phase.min_compared, 0, 0, sent=0, errors=0, compared=0,
                                mismatched=0)
        b = rr.shadow.book
        return judge_shadow(phase.min_compared, phase.max_mismatch_rate, phase.max_error_rate,
                            sent=b.sent, errors=b.errors, compared=b.compared,
                            mismatched=b.compared - b.matched)

    async def _look(self, st: m.RolloutState, rr: RouteRuntime, policy: Rollout, now: float,
                    now_snaps: dict[str, VariantSnapshot],
                    ) -> tuple[m.RolloutState, m.Event | None]:
        if st.step == m.SHADOW_STEP:
            return m.on_tick(st, policy, self._shadow(st, rr, policy), now)
        window = self._windows[st.route]
        base = arm(delta(now_snaps[st.baseline], window[1][st.baseline]))
        cand = arm(delta(now_snaps[st.candidate], window[1][st.candidate]))
        extra: list[Check] = []
        if policy.analysis.prometheus and now >= st.next_judge_at:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            extra = await prometheus_checks(self._http, policy, st)
        looked = look(st, policy, base, cand, now, extra)
        return looked.state, looked.event

    async def _advance(self, rev: int, st: m.RolloutState) -> None:
        rr = self._state.current.routes.get(st.route)
        if rr is None or rr.config.rollout is None:
            await self.commit(rev, st, m.abort(st, self._clock(), "route or policy removed"),
                              m.Event.ABORTED, CONTROLLER)
            return
        policy = rr.config.rollout
        now = self._clock()
        window = self._windows.get(st.route)
        if (st.step != m.SHADOW_STEP and (window is None or window[0] != rev)) or self.frozen:
            # No snapshot of this stored state here (a restart, a takeover, a command on
            # another proxy, the store back after an outage): count from now. The stored
            # evidence is kept; the step's timer restarts.
            fresh = dataclasses.replace(st, step_started_at=now, holding_since=None,
                                        next_judge_at=now + policy.step_interval_s)
            await self.commit(rev, st, fresh, m.Event.HOLD, CONTROLLER)
            return
        now_snaps = self._snapshots(st, rr)
        new, event = await self._look(st, rr, policy, now, now_snaps)
        if event is None:
            return
        if event in (m.Event.STEP, m.Event.SUCCEEDED) and policy.confirm_webhook:
            ok, why = await self._notifier.confirm(policy.confirm_webhook, self._fields(new))
            if not ok:  # stay at this step; ask again after another interval (its request
                # count starts again: the evidence itself is kept)
                new = dataclasses.replace(st, analyses=new.analyses, reason=why,
                                          evidence=new.evidence,
                                          next_judge_at=now + policy.step_interval_s)
                event = m.Event.HOLD
        try:
            await self.commit(rev, st, new, event, CONTROLLER, snapshots=now_snaps)
        except GateRefusedError as exc:
            if event is not m.Event.SUCCEEDED:
                raise
            # The version lost the stage the route requires while its canary ran (demoted,
            # archived): do not promote it, and do not roll a healthy version back either.
            # Paused with the reason, for a person to decide (resume asks the gate again).
            held = dataclasses.replace(st, status=m.Status.PAUSED, analyses=new.analyses,
                                       evidence=new.evidence,
                                       reason=f"promotion refused by the gate: {exc.detail}")
            await self.commit(rev, st, held, m.Event.PAUSED, CONTROLLER, snapshots=now_snaps)

    @staticmethod
    def _snapshots(st: m.RolloutState, rr: RouteRuntime) -> dict[str, VariantSnapshot]:
        return {v: rr.stats.variant(v).snapshot() for v in (st.baseline, st.candidate)}

    # -- writing ------------------------------------------------------------------------------
    def _fields(self, st: m.RolloutState) -> dict[str, Any]:
        return {"route": st.route, "rollout_id": st.id, "strategy": st.strategy,
                "state": str(st.status), "step": st.step, "weights": dict(st.weights),
                "baseline": st.baseline, "candidate": st.candidate, "version": st.version,
                "reason": st.reason}

    def quarantine_key(self, st: m.RolloutState) -> str:
        """A rolled-back candidate is quarantined per route and backend."""
        backend = st.candidate_backend
        if backend is None:
            rr = self._state.current.routes.get(st.route)
            backend = rr.config.variants.get(st.candidate, st.candidate) if rr else st.candidate
        return f"{st.route}:{backend}"

    def route_weights(self, st: m.RolloutState) -> dict[str, float] | None:
        """The route's weights under ``st`` (None: the route is no longer configured)."""
        rr = self._state.current.routes.get(st.route)
        if rr is None:
            return None
        return {v: float(st.weights.get(v, 0.0)) for v in rr.config.variants}

    async def commit(self, rev: int | None, old: m.RolloutState | None, new: m.RolloutState,
                     event: m.Event, actor: str, details: dict[str, Any] | None = None, *,
                     snapshots: dict[str, VariantSnapshot] | None = None) -> int:
        """Persist a transition (state, weights, audit event) in one transaction and apply
        it here; ``rev`` is the revision ``old`` was read at (None: a new rollout).
        ``snapshots``: the arms' counters the evidence in ``new`` was folded up to (taken
        now when not given)."""
        store, audit = self._state.store, self._state.audit
        assert store is not None and audit is not None
        weights = self.route_weights(new)
        async with store.transaction() as tx:
            await tx.lock(LEASE_LOCK_KEY + 1)
            current = await store.kv_get(NS_ROLLOUTS, new.route, tx=tx)
            stored_rev = current["rev"] if current else None
            if rev is not None and stored_rev != rev:
                raise ConflictError(f"rollout on {new.route!r} changed meanwhile; try again")
            if rev is None and current is not None and \
                    m.Status(current["state"]["status"]) in m.ACTIVE:
                raise ConflictError(f"route {new.route!r} already has a rollout in progress")
            new_rev = (stored_rev or 0) + 1
            await store.kv_put(NS_ROLLOUTS, new.route, {"rev": new_rev, "state": new.to_json()},
                               tx=tx)
            if weights is not None and (old is None or weights != self.route_weights(old)):
                await store.set_route_weights(new.route, weights, f"rollout:{new.id}", tx=tx)
            if event is m.Event.ROLLED_BACK:  # not an inconclusive rollback: nothing shown
                await store.kv_put(NS_QUARANTINE, self.quarantine_key(new),
                                   {"reason": new.reason, "rollout_id": new.id,
                                    "version": new.version, "by": actor}, tx=tx)
            ended = new.status in (m.Status.SUCCEEDED, m.Status.ROLLED_BACK)
            if new.version is not None and ended and event in (
                    m.Event.SUCCEEDED, m.Event.ROLLED_BACK, m.Event.INCONCLUSIVE):
                route_rt = self._state.current.routes.get(new.route)
                rollout_cfg = route_rt.config.rollout if route_rt else None
                await record_outcome(store, tx, new.version, new.route, actor,
                                     rollout_cfg.require_stage if rollout_cfg else None,
                                     succeeded=event is m.Event.SUCCEEDED, reason=new.reason)
            if event is not m.Event.HOLD:
                info = {**self._fields(new), **(details or {})}
                if new.analyses and event is not m.Event.STARTED:
                    info["analysis"] = new.analyses[-1]
                severity = "warning" if event in (m.Event.ROLLED_BACK,
                                                  m.Event.INCONCLUSIVE) else "info"
                await audit.append(tx, f"rollout.{event}", actor, f"route/{new.route}", info,
                                   severity=severity)
        self._states[new.route] = (new_rev, new)
        rr = self._state.current.routes.get(new.route)
        if rr is None or weights is None:  # the route was removed: nothing here to apply
            self._windows.pop(new.route, None)
            if event is not m.Event.HOLD:
                self._notifier.notify(_text(new, event), {"event": f"rollout.{event}",
                                                          **self._fields(new)})
            return new_rev
        if new.status is m.Status.PROGRESSING and new.step != m.SHADOW_STEP:
            # The next look folds what the arms do from here on into the stored evidence.
            self._windows[new.route] = (new_rev, snapshots or self._snapshots(new, rr))
        else:
            self._windows.pop(new.route, None)
        self._ensure_backend(new)
        self._state.current.apply_weights(new.route, weights, "rollout")
        if new.status is m.Status.ROLLED_BACK and event in (m.Event.ROLLED_BACK,
                                                            m.Event.INCONCLUSIVE):
            rr.stats.record_rollback(
                _reason_code(new) if actor == CONTROLLER else "manual")
        if event is not m.Event.HOLD:
            self._notifier.notify(_text(new, event), {"event": f"rollout.{event}",
                                                      **self._fields(new)})
        return new_rev


def _reason_code(st: m.RolloutState) -> str:
    """A short, bounded label for ``splitway_rollbacks_total{reason}``: the rule that
    failed (``critical``, ``inconclusive``, ``error_rate``, ``latency``, ``shadow_*``)."""
    reason = st.reason or ""
    if reason.startswith("critical"):
        return "critical"
    if reason.startswith("inconclusive"):
        return "inconclusive"
    last = st.analyses[-1] if st.analyses else None
    failed = [c["name"] for c in last["checks"] if c["passed"] is False] if last else []
    return str(failed[0]) if failed else "failed_check"


def _text(st: m.RolloutState, event: m.Event) -> str:
    who = f"{st.candidate}" + (f" ({st.version})" if st.version else "")
    if event is m.Event.ROLLED_BACK:
        return f":rotating_light: splitway rolled back {who} on {st.route}: {st.reason}"
    if event is m.Event.INCONCLUSIVE:
        return (f":warning: splitway rollout of {who} on {st.route} is inconclusive "
                f"({st.status}): {st.reason}")
    if event is m.Event.SUCCEEDED:
        return f":white_check_mark: splitway promoted {who} on {st.route} to 100%"
    return (f"splitway rollout {event} on {st.route}: {who} at "
            f"{st.weights.get(st.candidate, 0):g}% ({st.status})")
