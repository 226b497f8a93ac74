"""The state machine's rollback, hold and gate paths and the one-look seam pinned where
mutation testing found them loose (see "Mutation testing" in docs/rollouts.md): the state
each path leaves, from a clock far from zero, and look() itself."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest

from proxy.config import Rollout
from proxy.rollout import machine as m
from proxy.rollout.analysis import Arm, Check, Judgement, Policy, Verdict
from proxy.rollout.evidence import Evidence
from proxy.rollout.look import judge_policy, look
from proxy.rollout.sequential import fold_ratio

T0 = 1_700_000_000.0  # a real clock: times add up to far more than a deadline
PASS = Judgement(Verdict.PASS, (Check("error_rate", True, "ok"),), reason="ok")
HOLD = Judgement(Verdict.HOLD, (Check("min_requests", None, "3 of 1000"),), reason="3 of 1000")
FAIL = Judgement(Verdict.FAIL, (Check("error_rate", False, "bad"),), reason="bad")
CRIT = Judgement(Verdict.FAIL, (Check("critical", False, "10/20"),), critical=True,
                 reason="10/20")
ARMS = {"baseline": {"requests": 90}, "candidate": {"requests": 10}}


def policy(**kw: object) -> Rollout:
    base: dict[str, object] = {"baseline": "stable", "candidate": "canary",
                               "step_interval_s": 10, "progress_deadline_s": 60}
    base.update(kw)
    return Rollout.model_validate(base)


def started(p: Rollout) -> m.RolloutState:
    return m.start("r1", "route", p, T0, version="model@2", candidate_backend="b2")


def test_start_keeps_what_it_was_given() -> None:
    s = started(policy())
    assert (s.id, s.route, s.version, s.candidate_backend) == ("r1", "route", "model@2", "b2")
    assert (s.step_started_at, s.next_judge_at, s.started_at) == (T0, T0 + 10, T0)
    assert s.evidence == Evidence() and s.analyses == () and s.holding_since is None


def test_a_first_pause_step_gives_the_candidate_nothing() -> None:
    p = policy(steps=["pause", 10, 100])
    s = started(p)
    assert s.weights == {"stable": 100.0, "canary": 0.0}
    resumed = m.resume(dataclasses.replace(s, status=m.Status.PAUSED), p, T0 + 5)
    assert (resumed.step, resumed.status, resumed.weights["canary"]) == (
        1, m.Status.PROGRESSING, 10.0)


# -- rollbacks: the state each path leaves --------------------------------------------------
def ended(s: m.RolloutState, status: m.Status, at: float, canary: float) -> None:
    assert s.status is status and s.next_judge_at == at
    assert s.weights == {"stable": 100.0 - canary, "canary": canary}


def test_critical_rollback_records_the_judgement() -> None:
    p = policy()
    s, ev = m.on_tick(started(p), p, CRIT, T0 + 0.5, ARMS)
    assert ev is m.Event.ROLLED_BACK
    ended(s, m.Status.ROLLED_BACK, T0 + 0.5, 0.0)
    assert (s.reason, s.failed_checks) == ("critical: 10/20", 1)
    assert s.analyses == ({"at": m.iso(T0 + 0.5), "step": 0, "decision": "fail",
                           "baseline": {"requests": 90}, "candidate": {"requests": 10},
                           "checks": [{"name": "critical", "passed": False,
                                       "detail": "10/20"}]},)


def test_failed_rollback_and_its_record() -> None:
    p = policy()
    s, ev = m.on_tick(started(p), p, FAIL, T0 + 3, ARMS)
    assert ev is m.Event.ROLLED_BACK and (s.reason, s.failed_checks) == ("bad", 1)
    ended(s, m.Status.ROLLED_BACK, T0 + 3, 0.0)
    assert s.analyses[-1]["decision"] == "fail" and s.analyses[-1]["baseline"] == ARMS[
        "baseline"]


def test_a_record_without_figures_has_empty_arms() -> None:
    p = policy()
    s, _ = m.on_tick(started(p), p, FAIL, T0 + 3)
    assert (s.analyses[-1]["baseline"], s.analyses[-1]["candidate"]) == ({}, {})


def test_manual_rollback_and_abort_leave_the_baseline_at_100() -> None:
    s = started(policy())
    r = m.rollback(s, T0 + 4, "operator")
    ended(r, m.Status.ROLLED_BACK, T0 + 4, 0.0)
    a = m.abort(s, T0 + 5, "route removed")
    ended(a, m.Status.ABORTED, T0 + 5, 0.0)
    assert a.reason == "route removed"


def test_only_a_finished_blue_green_rollout_can_switch_back() -> None:
    p = policy()
    done = m.promote(started(p), p, T0 + 1, to_end=True)
    assert done.status is m.Status.SUCCEEDED
    with pytest.raises(m.InvalidTransition, match="cannot roll back a rollout that is "
                                                  "succeeded"):
        m.rollback(done, T0 + 2, "too late")
    blue = policy(strategy="blue_green")
    with pytest.raises(m.InvalidTransition):
        m.rollback(m.abort(started(blue), T0 + 1, "stop"), T0 + 2, "too late")


def test_gates_say_why_they_refuse() -> None:
    p = policy()
    r = m.rollback(started(p), T0, "x")
    gates: dict[str, Callable[[], object]] = {
        "pause": lambda: m.pause(r, T0), "resume": lambda: m.resume(r, p, T0),
        "promote": lambda: m.promote(r, p, T0), "abort": lambda: m.abort(r, T0, "x")}
    for verb, gate in gates.items():
        with pytest.raises(m.InvalidTransition,
                           match=rf"^cannot {verb} a rollout that is rolled_back$"):
            gate()


# -- holds, the deadline and inconclusive steps ----------------------------------------------
def test_a_hold_is_recorded_and_waits_one_more_interval() -> None:
    p = policy()
    s, ev = m.on_tick(started(p), p, HOLD, T0 + 10, ARMS)
    assert ev is m.Event.HOLD and s.status is m.Status.PROGRESSING
    assert (s.next_judge_at, s.holding_since, s.step_started_at) == (T0 + 20, T0, T0)
    assert [a["decision"] for a in s.analyses] == ["hold"]
    assert m.on_tick(s, p, PASS, T0 + 19.9) == (s, None)  # a pass waits for the timer
    s2, ev = m.on_tick(s, p, PASS, T0 + 20)
    assert ev is m.Event.STEP and s2.step == 1


def test_deadline_counts_from_the_step_start_on_a_real_clock() -> None:
    p = policy(progress_deadline_s=30)
    s = started(p)
    for t in (10, 20):
        s, ev = m.on_tick(s, p, HOLD, T0 + t)
        assert ev is m.Event.HOLD
    s, ev = m.on_tick(s, p, HOLD, T0 + 30)
    assert ev is m.Event.INCONCLUSIVE


def test_inconclusive_pause_records_the_look_and_clears_the_hold() -> None:
    p = policy(progress_deadline_s=20)
    s, ev = m.on_tick(started(p), p, HOLD, T0 + 10, ARMS)
    assert ev is m.Event.HOLD and s.holding_since == T0
    s, ev = m.on_tick(s, p, HOLD, T0 + 20, ARMS)
    assert ev is m.Event.INCONCLUSIVE and s.status is m.Status.PAUSED
    assert s.holding_since is None and s.failed_checks == 0
    assert [a["decision"] for a in s.analyses] == ["hold", "hold"]
    assert s.analyses[-1]["candidate"] == ARMS["candidate"]


def test_inconclusive_rollback_records_the_look_and_is_no_failed_check() -> None:
    p = policy(progress_deadline_s=10, on_inconclusive="rollback")
    s, ev = m.on_tick(started(p), p, HOLD, T0 + 10, ARMS)
    assert ev is m.Event.INCONCLUSIVE
    ended(s, m.Status.ROLLED_BACK, T0 + 10, 0.0)
    assert s.failed_checks == 0 and [a["decision"] for a in s.analyses] == ["hold"]
    assert s.reason == "inconclusive after 10 s: 3 of 1000"


def test_a_new_step_starts_its_own_deadline_and_step_counts() -> None:
    p = policy(progress_deadline_s=25)
    s = dataclasses.replace(started(p), evidence=Evidence().fold(Arm(900, 9), Arm(100, 1), 2))
    s, ev = m.on_tick(s, p, HOLD, T0 + 10)  # holding in step 0 since T0
    s, ev = m.on_tick(s, p, PASS, T0 + 20)
    assert ev is m.Event.STEP
    assert (s.step, s.step_started_at, s.next_judge_at, s.holding_since) == (
        1, T0 + 20, T0 + 30, None)
    assert (s.evidence.step_requests, s.evidence.candidate.requests) == (0, 100)
    assert s.weights == {"stable": 90.0, "canary": 10.0}
    s, ev = m.on_tick(s, p, HOLD, T0 + 30)  # 10 s into step 1: not the old step's 30 s
    assert ev is m.Event.HOLD
    s, ev = m.on_tick(s, p, HOLD, T0 + 40)
    assert ev is m.Event.HOLD
    s, ev = m.on_tick(s, p, HOLD, T0 + 50)  # 30 s into step 1: past its 25 s
    assert ev is m.Event.INCONCLUSIVE


def test_resume_restarts_the_step_clock() -> None:
    p = policy(progress_deadline_s=25)
    s, _ = m.on_tick(started(p), p, HOLD, T0 + 10)
    s = m.resume(m.pause(s, T0 + 11), p, T0 + 100)
    assert (s.step_started_at, s.next_judge_at, s.holding_since) == (T0 + 100, T0 + 110, None)
    s, ev = m.on_tick(s, p, HOLD, T0 + 110)
    assert ev is m.Event.HOLD  # 10 s after resuming, not 110 s after the first hold


@pytest.mark.parametrize("at", [0, 2])
def test_resume_at_a_pause_step_goes_past_it(at: int) -> None:
    steps: list[float | str] = [10, 50, 90]
    steps.insert(at, "pause")
    p = policy(steps=steps)
    s = dataclasses.replace(started(p), step=at, status=m.Status.PAUSED)
    r = m.resume(s, p, T0 + 50)
    assert (r.step, r.status, r.step_started_at, r.next_judge_at) == (
        at + 1, m.Status.PROGRESSING, T0 + 50, T0 + 60)
    assert r.weights["canary"] == {0: 10.0, 2: 90.0}[at]


# -- success -------------------------------------------------------------------------------
def test_steps_that_stop_short_of_100_succeed_after_the_last() -> None:
    p = policy(steps=[10, 50])
    s = started(p)
    s, ev = m.on_tick(s, p, PASS, T0 + 10)
    assert ev is m.Event.STEP and s.weights["canary"] == 50
    s, ev = m.on_tick(s, p, PASS, T0 + 20)
    assert ev is m.Event.SUCCEEDED
    ended(s, m.Status.SUCCEEDED, T0 + 20, 100.0)
    assert s.step == 1


def test_promote_to_the_end_reports_the_last_step_and_clears_old_counters() -> None:
    p = policy(steps=[5, 25, 100])
    old = dataclasses.replace(started(p), failed_checks=1)  # an older proxy's counter
    done = m.promote(old, p, T0 + 7, to_end=True)
    ended(done, m.Status.SUCCEEDED, T0 + 7, 100.0)
    assert (done.step, done.failed_checks) == (2, 0)
    assert m.promote(old, p, T0 + 7).failed_checks == 0


# -- what is stored and shown ----------------------------------------------------------------
@pytest.fixture
def tokyo() -> Iterator[None]:
    """The proxy's local time zone must not leak into the timestamps."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "Asia/Tokyo")
        time.tzset()
        try:
            yield
        finally:
            mp.undo()
            time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_times_are_utc_iso() -> None:
    assert m.iso(0) == "1970-01-01T00:00:00Z"
    assert m.iso(T0 + 0.5) == "2023-11-14T22:13:20Z"


def test_state_round_trips_with_evidence_and_reads_older_shapes() -> None:
    p = policy()
    s = dataclasses.replace(started(p), evidence=Evidence().fold(
        Arm(900, 9, ((20.0, 900),)), Arm(100, 3, ((30.0, 100),)), 2.0))
    s, _ = m.on_tick(s, p, HOLD, T0 + 10, ARMS)
    doc = s.to_json()
    assert doc["evidence"] == s.evidence.to_json()
    assert m.RolloutState.from_json(doc) == s
    older = {k: v for k, v in doc.items() if k not in ("analyses", "evidence")}
    back = m.RolloutState.from_json(older)
    assert back.analyses == () and back.evidence == Evidence()


def test_document_shape() -> None:
    s = started(policy(steps=[5, 100]))
    assert s.document() == {
        "route": "route", "id": "r1", "strategy": "canary", "state": "progressing",
        "baseline": "stable", "candidate": "canary", "step": 0, "steps": [5, 100],
        "weights": {"stable": 95.0, "canary": 5.0}, "reason": None, "version": "model@2",
        "candidate_backend": "b2", "failed_checks": 0, "started_at": m.iso(T0),
        "analyses": []}


# -- look(): the seam the controller and the simulator share -----------------------------------
def test_judge_policy_reads_every_setting() -> None:
    p = policy(analysis={"min_requests": 7, "max_error_rate": 0.02, "max_error_ratio": 3.0,
                         "max_latency_ratio": 1.7, "latency_quantile": 0.95, "alpha": 0.02,
                         "critical_error_rate": 0.4, "critical_min_requests": 30,
                         "json_metric": {"path": "score", "max_drop": 0.1}})
    assert judge_policy(p) == Policy(min_requests=7, max_error_rate=0.02, max_error_ratio=3.0,
                                     max_latency_ratio=1.7, latency_quantile=0.95,
                                     alpha=0.02, critical_error_rate=0.4,
                                     critical_min_requests=30, health_only=False,
                                     json_path="score", json_max_drop=0.1)
    plain = judge_policy(policy())
    assert (plain.json_path, plain.json_max_drop, plain.health_only) == (None, 0.0, False)
    for strategy in ("rolling", "blue_green"):
        assert judge_policy(policy(strategy=strategy)).health_only is True


BASE = Arm(900, 9, ((20.0, 900),))
CAND = Arm(100, 1, ((20.0, 100),))


@pytest.mark.parametrize("status", [m.Status.PAUSED, m.Status.ROLLED_BACK])
def test_look_leaves_a_rollout_that_is_not_progressing_alone(status: m.Status) -> None:
    s = dataclasses.replace(started(policy()), status=status)
    looked = look(s, policy(), BASE, CAND, T0 + 100)
    assert looked.state is s and looked.event is None
    assert looked.judgement.verdict is Verdict.HOLD and "not judging" in looked.judgement.reason


def test_look_leaves_the_shadow_phase_to_the_controller() -> None:
    p = policy(shadow_phase={"min_compared": 10})
    s = started(p)
    looked = look(s, p, BASE, CAND, T0 + 100)
    assert looked.state is s and looked.event is None


def test_look_folds_every_look_and_records_at_the_judge_time() -> None:
    p = policy(analysis={"min_requests": 1000, "max_error_ratio": 3.0})
    s = started(p)
    first = look(s, p, BASE, CAND, T0 + 5)  # before next_judge_at: nothing recorded
    assert first.event is None and first.judgement.verdict is Verdict.HOLD
    assert first.state.evidence == Evidence().fold(BASE, CAND, 3.0)
    assert first.state.evidence.ratio_loglr == fold_ratio((), 3.0, 100, 1, 900, 9)
    assert first.state.analyses == ()
    second = look(first.state, p, BASE, CAND, T0 + 10)  # exactly at next_judge_at
    assert second.event is m.Event.HOLD
    assert second.state.evidence.candidate.requests == 200
    entry = second.state.analyses[-1]
    assert entry["candidate"] == second.state.evidence.candidate.summary()
    assert entry["baseline"]["requests"] == 1800


def test_look_fails_at_once_with_its_figures_and_extra_checks() -> None:
    p = policy(analysis={"min_requests": 100})
    looked = look(started(p), p, BASE, CAND, T0 + 1, [Check("prom", False, "query high")])
    assert looked.event is m.Event.ROLLED_BACK and looked.judgement.verdict is Verdict.FAIL
    assert looked.state.status is m.Status.ROLLED_BACK
    assert "query high" in (looked.state.reason or "")
    assert looked.state.analyses[-1]["candidate"]["requests"] == 100
    assert looked.state.analyses[-1]["baseline"]["requests"] == 900
