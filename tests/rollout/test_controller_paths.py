"""The controller's rollback paths, run in-process on a real SQLite store with an injected
clock and a real loopback webhook (the end-to-end tests run the controller in another
process, out of mutation testing's reach; see "Mutation testing" in docs/rollouts.md):
critical, failed-check, manual and inconclusive rollbacks with what each writes (state,
weights, quarantine, audit, metric reason, notification), the route's policy removed, a
concurrent change, a new leader or an outage that must not judge what it did not see, the
confirm hook, and a tick that fails."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from control.model_version import NewVersion
from control.registry import Registry
from control.store import Store, open_store
from proxy.app import ProxyState
from proxy.config_load import parse_settings
from proxy.errors import Cause, ConflictError
from proxy.notify import Notifier
from proxy.rollout import machine as m
from proxy.rollout.controller import CONTROLLER, NS_QUARANTINE, NS_ROLLOUTS, RolloutController

T0 = 1_700_000_000.0
VERSION = "sentiment@1.2.0"


@dataclass
class Hook:
    """A real HTTP server for the notifications and the confirm hook."""

    url: str = ""
    status: int = 200
    during: Callable[[], None] = lambda: None  # runs while a confirmation is pending
    notified: list[dict[str, Any]] = field(default_factory=list)
    confirms: list[dict[str, Any]] = field(default_factory=list)

    async def notify(self, request: web.Request) -> web.Response:
        self.notified.append(await request.json())
        return web.Response()

    async def confirm(self, request: web.Request) -> web.Response:
        self.confirms.append(await request.json())
        self.during()
        return web.Response(status=self.status)


@contextlib.asynccontextmanager
async def hook_server() -> AsyncIterator[Hook]:
    hook = Hook()
    app = web.Application()
    app.router.add_post("/notify", hook.notify)
    app.router.add_post("/confirm", hook.confirm)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield hook
    finally:
        await runner.cleanup()


def settings(tmp_path: Path, rollout: dict[str, Any] | None) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "r", "variants": {"stable": "a", "canary": "b"},
                             "split": {"weights": {"stable": 100}}}
    if rollout is not None and rollout.get("strategy") == "blue_green":  # judged on pins
        route["split"].update(allow_pin=True, trusted_pins={"sources": ["127.0.0.1/32"]})
    if rollout is not None:
        route["rollout"] = {"baseline": "stable", "candidate": "canary", "steps": [10, 100],
                            "step_interval_s": 10, "progress_deadline_s": 30,
                            "analysis": {"min_requests": 50}, **rollout}
    return {"version": 1, "state": f"sqlite:///{tmp_path}/s.db",
            "backends": {"a": {"endpoints": ["http://127.0.0.1:9"]},
                         "b": {"endpoints": ["http://127.0.0.1:9"]}},
            "routes": [route]}


@dataclass
class Env:
    state: ProxyState
    store: Store
    ctl: RolloutController
    clock: list[float]
    path: Path
    hook: Hook
    notifier: Notifier

    async def start(self, version: str | None = VERSION) -> m.RolloutState:
        rr = self.state.current.routes["r"]
        assert rr.config.rollout is not None
        st = m.start("r1", "r", rr.config.rollout, self.clock[0], version=version)
        await self.ctl.commit(None, None, st, m.Event.STARTED, "test")
        return st

    def traffic(self, variant: str, ok: int, failed: int = 0, ms: float = 20.0) -> None:
        stats = self.state.current.routes["r"].stats.variant(variant)
        for status, n in ((200, ok), (500, failed)):
            for _ in range(n):
                stats.record(status, ms / 1000, ms / 1000, cause=Cause.BACKEND)

    async def row(self) -> dict[str, Any]:
        return dict(await self.store.kv_get(NS_ROLLOUTS, "r"))

    async def stored(self) -> m.RolloutState:
        return m.RolloutState.from_json((await self.row())["state"])

    async def tick_at(self, t: float, ctl: RolloutController | None = None) -> m.RolloutState:
        self.clock[0] = T0 + t
        await (ctl or self.ctl).tick()
        return await self.stored()

    def other(self) -> RolloutController:
        """Another proxy's controller (or this one restarted): no window of its own."""
        return RolloutController(self.state, self.notifier, clock=lambda: self.clock[0])

    async def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(str(e.type), str(e.severity), e.details)
                async for e in self.store.audit.iter_events()]

    async def types(self) -> list[str]:
        return [t for t, _, _ in await self.events()]


@pytest.fixture
async def env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    rollout = dict(getattr(request, "param", {}))
    async with hook_server() as hook:
        if rollout.pop("confirm", False):
            rollout["confirm_webhook"] = f"{hook.url}/confirm"
        path = tmp_path / "splitway.yaml"
        path.write_text(yaml.safe_dump(settings(tmp_path, rollout)))
        state = ProxyState(parse_settings(settings(tmp_path, rollout)), config_path=path)
        clock = [T0]
        notifier = Notifier([f"{hook.url}/notify"], retries=0)
        async with open_store(state.settings.state) as store:
            state.store, state.audit = store, store.audit
            await state.start_runtime()
            ctl = RolloutController(state, notifier, clock=lambda: clock[0], tick_s=0.01)
            state.rollouts = ctl
            try:
                yield Env(state, store, ctl, clock, path, hook, notifier)
            finally:
                await ctl.close()
                await notifier.close()
                await state.cancel_tasks()


async def quarantined(e: Env) -> dict[str, Any]:
    return dict(await e.store.kv_list(NS_QUARANTINE))


def rollbacks(e: Env) -> dict[str, int]:
    return dict(e.state.current.routes["r"].stats.rollbacks)


async def notified(e: Env, event: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while not any(n["event"] == event for n in e.hook.notified):
            await asyncio.sleep(0.01)
    return next(n for n in e.hook.notified if n["event"] == event)


# -- rollbacks and what each one writes -------------------------------------------------------
async def test_a_critical_breach_rolls_back_and_writes_everything_once(env: Env) -> None:
    await env.start()
    assert (await env.row())["rev"] == 1
    env.traffic("stable", 200)
    env.traffic("canary", 10, 10)  # 50 % of 20: critical, before min_requests (50)
    st = await env.tick_at(0.5)
    assert st.status is m.Status.ROLLED_BACK and (st.reason or "").startswith("critical")
    assert (await env.row())["rev"] == 2 and env.ctl.states()["r"] == st
    assert await env.store.get_route_weights() == {"r": {"stable": 100.0, "canary": 0.0}}
    rr = env.state.current.routes["r"]
    assert rr.weights == {"stable": 100.0, "canary": 0.0} and rr.weights_source == "rollout"
    assert await quarantined(env) == {"r:b": {"reason": st.reason, "rollout_id": "r1",
                                              "version": VERSION, "by": CONTROLLER}}
    assert rollbacks(env) == {"critical": 1}
    events = await env.events()
    assert [t for t, _, _ in events] == ["weights.changed", "rollout.started",
                                         "weights.changed", "model.rolled_back",
                                         "rollout.rolled_back"]
    _, severity, details = events[4]
    assert severity == "warning" and details["reason"] == st.reason
    assert details["analysis"] == st.analyses[-1] and details["state"] == "rolled_back"
    assert events[1][1] == "info" and "analysis" not in events[1][2]
    assert events[3][1:] == ("warning", {"model": "sentiment", "version": "1.2.0",
                                         "route": "r", "reason": st.reason})
    note = await notified(env, "rollout.rolled_back")
    assert note["text"].startswith(":rotating_light: splitway rolled back canary (")
    assert note["reason"] == st.reason


async def test_a_failed_check_rolls_back_with_its_name_as_the_reason(env: Env) -> None:
    await env.start(version=None)
    env.traffic("stable", 2000)
    env.traffic("canary", 180, 20)  # 10 % of 200 against a 1 % limit, under critical
    st = await env.tick_at(0.5)  # anytime-valid: before the step's timer
    assert st.status is m.Status.ROLLED_BACK and st.failed_checks == 1
    assert "above the 1.00% limit" in (st.reason or "")
    assert (await quarantined(env))["r:b"]["reason"] == st.reason
    assert rollbacks(env) == {"error_rate": 1}
    assert "model.rolled_back" not in await env.types()  # no version, nothing to record


async def test_a_manual_rollback_counts_as_manual(env: Env) -> None:
    st = await env.start()
    rev = (await env.row())["rev"]
    await env.ctl.commit(rev, st, m.rollback(st, T0 + 1, "by alice"), m.Event.ROLLED_BACK,
                         "alice")
    assert rollbacks(env) == {"manual": 1}
    assert (await quarantined(env))["r:b"]["by"] == "alice"


@pytest.mark.parametrize("env", [{"on_inconclusive": "rollback"}], indirect=True)
async def test_an_inconclusive_rollback_is_not_quarantined(env: Env) -> None:
    await env.start()
    statuses = [(await env.tick_at(t)).status for t in (10, 20)]
    assert statuses == [m.Status.PROGRESSING] * 2  # holds: too few requests
    types = await env.types()  # a hold is stored, not audited, and moves no weight
    assert "rollout.hold" not in types and types.count("weights.changed") == 1
    st = await env.tick_at(30)
    assert st.status is m.Status.ROLLED_BACK and (st.reason or "").startswith("inconclusive")
    assert await quarantined(env) == {}
    assert rollbacks(env) == {"inconclusive": 1}
    assert await env.store.get_route_weights() == {"r": {"stable": 100.0, "canary": 0.0}}
    events = await env.events()
    assert [(t, s) for t, s, _ in events[-2:]] == [("model.rolled_back", "warning"),
                                                   ("rollout.inconclusive", "warning")]


async def test_an_inconclusive_pause_keeps_the_weights_and_quarantines_nothing(env: Env) -> None:
    await env.start()
    for t in (10, 20):
        await env.tick_at(t)
    st = await env.tick_at(30)
    assert st.status is m.Status.PAUSED and (st.reason or "").startswith("inconclusive")
    assert await quarantined(env) == {} and rollbacks(env) == {}
    assert env.state.current.routes["r"].weights == {"stable": 90.0, "canary": 10.0}
    assert "model.rolled_back" not in await env.types()  # paused: not ended


async def test_a_promoted_registered_version_is_recorded_as_deployed(env: Env) -> None:
    await Registry(env.store).register(NewVersion("sentiment", "1.2.0", backend="b"), "test")
    st = await env.start()
    rev = (await env.row())["rev"]
    policy = env.state.current.routes["r"].config.rollout
    assert policy is not None
    await env.ctl.commit(rev, st, m.promote(st, policy, T0 + 1, to_end=True),
                         m.Event.SUCCEEDED, "alice")
    events = await env.events()
    assert [t for t, _, _ in events[-3:]] == ["weights.changed", "model.deployed",
                                              "rollout.succeeded"]
    assert events[-2][2]["route"] == "r" and "model.rolled_back" not in await env.types()
    assert rollbacks(env) == {} and await quarantined(env) == {}


# -- the policy removed, concurrent changes ------------------------------------------------
async def test_a_route_whose_policy_was_removed_aborts_its_rollout(env: Env) -> None:
    await env.start()
    env.path.write_text(yaml.safe_dump(settings(env.path.parent, None)))
    await env.state.reload("test")
    st = await env.tick_at(1)
    assert st.status is m.Status.ABORTED and st.reason == "route or policy removed"
    assert st.next_judge_at == T0 + 1
    assert env.state.current.routes["r"].weights == {"stable": 100.0, "canary": 0.0}
    assert await quarantined(env) == {} and rollbacks(env) == {}


@pytest.mark.parametrize("env", [{"strategy": "blue_green"}], indirect=True)
async def test_an_abort_that_changes_no_weight_writes_none(env: Env) -> None:
    await env.start()  # blue-green: the candidate waits at 0 %
    written = (await env.types()).count("weights.changed")
    env.path.write_text(yaml.safe_dump(settings(env.path.parent, None)))
    await env.state.reload("test")
    assert (await env.tick_at(1)).status is m.Status.ABORTED
    assert (await env.types()).count("weights.changed") == written


async def test_a_rollout_on_a_removed_route_is_aborted(env: Env) -> None:
    # Found by mutation testing: commit() read the removed route's runtime, so every tick
    # raised and rollouts later in the same tick were never judged.
    await env.start()
    other = settings(env.path.parent, None)
    other["routes"][0]["name"] = "other"
    env.path.write_text(yaml.safe_dump(other))
    await env.state.reload("test")
    st = await env.tick_at(1)
    assert st.status is m.Status.ABORTED and st.reason == "route or policy removed"


async def test_a_concurrent_change_wins_and_the_leader_starts_again_from_it(env: Env) -> None:
    await env.start()
    rev, st = (await env.ctl.load())["r"]
    await env.other().commit(rev, st, m.pause(st, T0 + 1), m.Event.PAUSED, "operator")
    with pytest.raises(ConflictError, match="rollout on 'r' changed meanwhile"):
        await env.ctl.commit(rev, st, m.rollback(st, T0 + 2, "stale"), m.Event.ROLLED_BACK,
                             "test")
    env.traffic("canary", 10, 10)  # critical, but the rollout is paused now
    assert (await env.tick_at(3)).status is m.Status.PAUSED
    assert await quarantined(env) == {}
    with pytest.raises(ConflictError, match="route 'r' already has a rollout in progress"):
        await env.start()


# -- what a leader did not see is not judged ---------------------------------------------------
async def test_a_new_leader_restarts_the_step_and_judges_only_what_it_sees(env: Env) -> None:
    await env.start()
    held = await env.tick_at(10)
    assert held.holding_since == T0  # a hold: the deadline runs from T0
    before = await env.types()
    env.traffic("stable", 200)
    env.traffic("canary", 10, 10)  # seen by no leader's window
    new = env.other()  # a restarted proxy, or another one taking the lease over
    st = await env.tick_at(25, new)
    assert st.status is m.Status.PROGRESSING and (await env.row())["rev"] == 3
    assert (st.step_started_at, st.next_judge_at, st.holding_since) == (T0 + 25, T0 + 35, None)
    assert st.evidence == held.evidence  # the stored evidence is kept
    assert await env.types() == before  # a restart of the timer is no audited event
    # the deadline (30 s) counts from the restart, not from the first hold
    assert (await env.tick_at(35, new)).status is m.Status.PROGRESSING
    assert (await env.tick_at(45, new)).status is m.Status.PROGRESSING
    env.traffic("canary", 10, 10)  # now seen
    assert (await env.tick_at(46, new)).status is m.Status.ROLLED_BACK


async def test_a_window_another_proxy_wrote_over_is_not_judged(env: Env) -> None:
    st = await env.start()
    rev = (await env.row())["rev"]
    policy = env.state.current.routes["r"].config.rollout
    assert policy is not None
    paused = m.pause(st, T0 + 1)
    await env.other().commit(rev, st, paused, m.Event.PAUSED, "operator")
    await env.other().commit(rev + 1, paused, m.resume(paused, policy, T0 + 2),
                             m.Event.RESUMED, "operator")
    env.traffic("canary", 10, 10)  # this controller's window is of revision 1
    st = await env.tick_at(3)
    assert st.status is m.Status.PROGRESSING and st.step_started_at == T0 + 3
    assert (await env.row())["rev"] == rev + 3


async def test_after_a_store_outage_the_first_tick_judges_nothing(env: Env) -> None:
    await env.start()
    env.ctl._freeze()  # what run() does when the store is unavailable
    env.traffic("canary", 10, 10)  # proxied during the outage
    st = await env.tick_at(2)
    assert st.status is m.Status.PROGRESSING and st.step_started_at == T0 + 2
    assert env.ctl.frozen is False
    env.traffic("canary", 10, 10)
    assert (await env.tick_at(3)).status is m.Status.ROLLED_BACK


@pytest.mark.parametrize("env", [{"shadow_phase": {"min_compared": 10}}], indirect=True)
async def test_the_shadow_phase_is_judged_on_the_shadow_report(env: Env) -> None:
    await env.start()
    env.traffic("canary", 10, 10)  # no live traffic is judged in the shadow phase
    st = await env.tick_at(10)
    assert (st.status, st.step) == (m.Status.PROGRESSING, m.SHADOW_STEP)
    assert st.analyses[-1]["checks"][0] == {"name": "shadow_compared", "passed": None,
                                            "detail": "0 of 10 answers compared"}


# -- the confirm hook --------------------------------------------------------------------------
PASSING = {"confirm": True, "analysis": {"min_requests": 50, "max_error_rate": 0.05,
                                         "latency_quantile": 0.5}}


@pytest.mark.parametrize("env", [PASSING], indirect=True)
async def test_a_refused_confirmation_holds_the_step_and_keeps_the_evidence(env: Env) -> None:
    await env.start(version=None)  # a registered version's success goes through the gate
    env.traffic("stable", 2000)
    env.traffic("canary", 200)
    env.hook.status = 503
    env.hook.during = lambda: env.traffic("canary", 7)  # served while the hook decides
    st = await env.tick_at(10)
    assert (st.status, st.step, st.reason) == (m.Status.PROGRESSING, 0,
                                               "confirm hook answered 503")
    assert st.next_judge_at == T0 + 20 and st.analyses[-1]["decision"] == "pass"
    assert st.evidence.candidate.requests == 200
    assert env.hook.confirms[0]["step"] == 1 and env.hook.confirms[0]["route"] == "r"
    assert "rollout.step" not in await env.types()
    env.hook.status, env.hook.during = 200, lambda: None
    st = await env.tick_at(20)
    assert (st.status, st.step) == (m.Status.SUCCEEDED, 1)
    assert st.evidence.candidate.requests == 207  # what came during the refusal counts


@pytest.mark.parametrize("env", [PASSING], indirect=True)
async def test_only_steps_ask_the_confirm_hook(env: Env) -> None:
    await env.start()
    st = await env.tick_at(10)  # a hold: nothing to confirm
    assert st.status is m.Status.PROGRESSING and env.hook.confirms == []


# -- the loop ----------------------------------------------------------------------------------
async def test_a_failing_tick_does_not_end_the_loop(env: Env,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    await env.start()
    await env.store.kv_put(NS_ROLLOUTS, "ghost", {"rev": 1, "state": {"status": "nonsense"}})
    task = asyncio.get_running_loop().create_task(env.ctl.run())
    try:
        async with asyncio.timeout(20):
            while sum(r.message == "rollout tick failed" for r in caplog.records) < 2:
                await asyncio.sleep(0.01)
            await env.store.kv_delete(NS_ROLLOUTS, "ghost")
            env.traffic("stable", 200)
            env.traffic("canary", 10, 10)
            while (await env.stored()).status is m.Status.PROGRESSING:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (await env.stored()).status is m.Status.ROLLED_BACK  # the loop kept judging


@pytest.mark.parametrize("env", [{"require_stage": "staging"}], indirect=True)
async def test_a_version_that_lost_its_stage_is_paused_not_promoted(env: Env) -> None:
    # The gate refuses the deployment at promotion time (the version never reached staging,
    # as if demoted while its canary ran): paused with the reason, nothing rolled back,
    # nothing quarantined, and the tick does not fail.
    await Registry(env.store).register(NewVersion("sentiment", "1.2.0", backend="b"), "test")
    await env.start()
    assert (await env.tick_at(1)).status is m.Status.PROGRESSING  # the window starts here
    env.traffic("stable", 3000)
    env.traffic("canary", 3000)
    st = await env.tick_at(12)
    assert st.status is m.Status.PAUSED, (st.status, st.reason, st.analyses[-1:])
    assert st.reason is not None and st.reason.startswith("promotion refused by the gate")
    assert st.weights == {"stable": 90.0, "canary": 10.0}
    types = await env.types()
    assert "model.deployed" not in types and "rollout.succeeded" not in types
    assert types[-1] == "rollout.paused"
    assert await quarantined(env) == {} and rollbacks(env) == {}


async def test_a_rollout_of_a_removed_route_does_not_starve_the_others(env: Env) -> None:
    # Stored before "r" (keys are read in order): a rollout whose route is gone is aborted,
    # and "r" is still judged in the same tick (a critical breach rolls it back).
    await env.start()
    ghost = dict((await env.row())["state"])
    ghost.update(route="ghost", id="g1")
    await env.store.kv_put(NS_ROLLOUTS, "ghost", {"rev": 1, "state": ghost})
    env.traffic("canary", 10, 10)
    st = await env.tick_at(1)
    assert st.status is m.Status.ROLLED_BACK and st.reason is not None
    gone = m.RolloutState.from_json((await env.store.kv_get(NS_ROLLOUTS, "ghost"))["state"])
    assert gone.status is m.Status.ABORTED and gone.reason == "route or policy removed"


# -- leadership, failures by route, and what the exceptional branches write -------------------
async def test_only_the_leader_judges(env: Env) -> None:
    await env.start()
    assert (await env.tick_at(1)).status is m.Status.PROGRESSING and env.ctl.is_leader
    rev = (await env.row())["rev"]
    env.traffic("canary", 10, 10)
    follower = env.other()
    await env.tick_at(2, follower)  # the lease is held: this proxy only follows
    assert follower.is_leader is False and (await env.row())["rev"] == rev


async def test_a_broken_rollout_is_logged_with_its_route(env: Env,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    await env.start()
    row = await env.row()
    row["state"]["evidence"] = {**row["state"]["evidence"], "ratio_loglr": [0.0] * 3}
    await env.store.kv_put(NS_ROLLOUTS, "r", row)  # another grid's ratio state
    env.traffic("stable", 200)
    env.traffic("canary", 10, 10)
    st = await env.tick_at(1)
    assert st.status is m.Status.PROGRESSING  # not judged, and the tick went on
    failed = [r for r in caplog.records if "tick failed" in r.getMessage()]
    assert [r.getMessage() for r in failed] == ["rollout on route r: tick failed"]


async def test_the_store_coming_back_is_logged(env: Env,
                                               caplog: pytest.LogCaptureFixture) -> None:
    await env.start()
    env.ctl._freeze()
    await env.tick_at(1)
    assert "rollouts resume at their persisted steps: the state store is back" in [
        r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("env", [{"require_stage": "staging"}], indirect=True)
async def test_a_refused_promotion_keeps_the_looks_figures(env: Env,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    await Registry(env.store).register(NewVersion("sentiment", "1.2.0", backend="b"), "test")
    await env.start()
    await env.tick_at(1)
    written = (await env.types()).count("weights.changed")
    env.traffic("stable", 3000)
    env.traffic("canary", 3000)
    st = await env.tick_at(12)
    assert st.status is m.Status.PAUSED and st.analyses[-1]["decision"] == "pass"
    assert st.evidence.candidate.requests == 3000
    assert (await env.types()).count("weights.changed") == written
    assert not [r for r in caplog.records if "tick failed" in r.getMessage()]


async def test_the_abort_of_a_removed_route_is_announced_without_error(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.start()
    ghost = dict((await env.row())["state"])
    ghost.update(route="ghost", id="g1")
    await env.store.kv_put(NS_ROLLOUTS, "ghost", {"rev": 1, "state": ghost})
    await env.tick_at(1)
    note = await notified(env, "rollout.aborted")
    assert note["route"] == "ghost" and note["reason"] == "route or policy removed"
    assert note["text"] == ("splitway rollout aborted on ghost: canary (sentiment@1.2.0) at "
                            "0% (aborted)")
    assert not [r for r in caplog.records if "tick failed" in r.getMessage()]
