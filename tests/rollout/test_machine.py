"""The rollout state machine driven by an injected clock: no sleeping."""

from __future__ import annotations

import pytest

from proxy.config import Analysis, Rollout, ShadowPhase
from proxy.rollout import machine as m
from proxy.rollout.analysis import Check, Judgement, Verdict, judge_shadow

PASS = Judgement(Verdict.PASS, (Check("error_rate", True, "ok"),))
HOLD = Judgement(Verdict.HOLD, (Check("min_requests", None, "3 of 1000"),), reason="3 of 1000")
FAIL = Judgement(Verdict.FAIL, (Check("error_rate", False, "bad"),), reason="bad")
CRIT = Judgement(Verdict.FAIL, (Check("critical", False, "10/20"),), critical=True,
                 reason="10/20")


def policy(**kw: object) -> Rollout:
    base: dict[str, object] = {"baseline": "stable", "candidate": "canary",
                               "step_interval_s": 10, "progress_deadline_s": 60}
    base.update(kw)
    return Rollout.model_validate(base)


def test_healthy_canary_walks_every_step_and_succeeds() -> None:
    p = policy()
    s = m.start("r1", "route", p, now=0)
    seen = [s.weights["canary"]]
    t = 0.0
    events = []
    while s.status is m.Status.PROGRESSING:
        t += 1
        s, ev = m.on_tick(s, p, PASS, t)
        if ev:
            events.append(ev)
            seen.append(s.weights["canary"])
    assert seen == [5, 10, 25, 50, 100]
    assert events == [m.Event.STEP] * 3 + [m.Event.SUCCEEDED]  # 100 % is the promotion
    assert s.status is m.Status.SUCCEEDED and s.weights == {"stable": 0, "canary": 100}
    assert len(s.analyses) == 4 and s.analyses[0]["decision"] == "pass"
    assert t == 40  # one judgement per step_interval_s


def test_judging_waits_for_the_step_interval() -> None:
    p = policy()
    s = m.start("r1", "route", p, now=0)
    s2, ev = m.on_tick(s, p, PASS, 9.9)
    assert ev is None and s2 == s


def test_critical_breach_rolls_back_at_once() -> None:
    p = policy()
    s = m.start("r1", "route", p, now=0)
    s, ev = m.on_tick(s, p, CRIT, 0.5)
    assert ev is m.Event.ROLLED_BACK and s.status is m.Status.ROLLED_BACK
    assert s.weights == {"stable": 100, "canary": 0} and "critical" in (s.reason or "")


def test_hold_until_progress_deadline_then_pause_as_inconclusive() -> None:
    p = policy(progress_deadline_s=30)
    s = m.start("r1", "route", p, now=0)
    t = 10.0
    s, ev = m.on_tick(s, p, HOLD, t)
    assert ev is m.Event.HOLD and s.status is m.Status.PROGRESSING
    while s.status is m.Status.PROGRESSING:
        t += 10
        s, ev = m.on_tick(s, p, HOLD, t)
    assert t == 30 and ev is m.Event.INCONCLUSIVE
    assert s.status is m.Status.PAUSED and s.weights["canary"] == 5  # stays where it was
    assert (s.reason or "").startswith("inconclusive after 30 s: 3 of 1000")
    resumed = m.resume(s, p, 40)
    assert resumed.status is m.Status.PROGRESSING and resumed.reason is None


def test_a_deadline_just_after_the_look_is_still_a_hold() -> None:
    p = policy(progress_deadline_s=30.001)
    s = m.start("r1", "route", p, now=0)
    for t in (10, 20, 30):
        s, ev = m.on_tick(s, p, HOLD, t)
        assert ev is m.Event.HOLD
    s, ev = m.on_tick(s, p, HOLD, 40)
    assert ev is m.Event.INCONCLUSIVE


def test_inconclusive_rollback_policy_rolls_back() -> None:
    p = policy(progress_deadline_s=10, on_inconclusive="rollback")
    s = m.start("r1", "route", p, now=0)
    s, ev = m.on_tick(s, p, HOLD, 10)
    assert ev is m.Event.INCONCLUSIVE and s.status is m.Status.ROLLED_BACK
    assert s.weights == {"stable": 100, "canary": 0}
    assert (s.reason or "").startswith("inconclusive")


def test_a_failed_live_check_rolls_back_at_once_whatever_the_timer() -> None:
    p = policy()
    s = m.start("r1", "route", p, now=0)
    s, ev = m.on_tick(s, p, FAIL, 0.5)  # before next_judge_at: anytime-valid
    assert ev is m.Event.ROLLED_BACK and s.status is m.Status.ROLLED_BACK
    assert s.reason == "bad" and s.failed_checks == 1 and s.weights["canary"] == 0
    assert s.analyses[-1]["decision"] == "fail"


def test_a_pass_waits_for_the_step_interval_but_not_a_fail() -> None:
    p = policy()
    s = m.start("r1", "route", p, now=0)
    assert m.on_tick(s, p, PASS, 9.999) == (s, None)
    assert m.on_tick(s, p, HOLD, 9.999) == (s, None)
    s2, ev = m.on_tick(s, p, PASS, 10.0)
    assert ev is m.Event.STEP and s2.step == 1


def test_shadow_phase_fail_waits_for_its_timer() -> None:
    p = policy(shadow_phase=ShadowPhase(min_compared=100))
    s = m.start("r1", "route", p, now=0)
    assert m.on_tick(s, p, FAIL, 5) == (s, None)
    s, ev = m.on_tick(s, p, FAIL, 10)
    assert ev is m.Event.ROLLED_BACK


def test_retired_failed_checks_to_rollback_is_a_config_error_saying_why() -> None:
    with pytest.raises(ValueError, match="failed_checks_to_rollback is retired: the evidence"):
        policy(analysis={"failed_checks_to_rollback": 2})
    with pytest.raises(ValueError, match="failed_checks_to_rollback is retired"):
        policy(analysis={"failed_checks_to_rollback": True})
    # 1 (the contract's example) keeps its meaning: one failed check rolls back
    assert policy(analysis={"failed_checks_to_rollback": 1}).analysis == Analysis()
    with pytest.raises(ValueError, match="alpha_vs_baseline is retired"):
        Analysis.model_validate({"alpha_vs_baseline": 0.001})
    with pytest.raises(ValueError, match="on_inconclusive"):
        policy(on_inconclusive="ignore")


def test_pause_step_waits_for_promote() -> None:
    p = policy(steps=[10, "pause", 50, 100])
    s = m.start("r1", "route", p, now=0)
    s, ev = m.on_tick(s, p, PASS, 10)
    assert ev is m.Event.PAUSED and s.status is m.Status.PAUSED and s.weights["canary"] == 10
    s2, ev = m.on_tick(s, p, PASS, 100)
    assert ev is None and s2 == s  # paused: the judge is not consulted
    s = m.promote(s, p, 101)
    assert s.status is m.Status.PROGRESSING and s.step == 2 and s.weights["canary"] == 50


def test_manual_gates() -> None:
    p = policy()
    s = m.start("r1", "route", p, now=0)
    s = m.pause(s, 1)
    with pytest.raises(m.InvalidTransition):
        m.pause(s, 2)
    s = m.resume(s, p, 3)
    assert s.status is m.Status.PROGRESSING and s.next_judge_at == 13
    assert m.promote(s, p, 4, to_end=True).status is m.Status.SUCCEEDED
    r = m.rollback(s, 5, "operator said so")
    assert r.status is m.Status.ROLLED_BACK and r.reason == "operator said so"
    with pytest.raises(m.InvalidTransition):
        m.rollback(r, 6, "again")
    assert m.abort(s, 7, "stop").status is m.Status.ABORTED


def test_blue_green_switches_at_once_and_back() -> None:
    p = policy(strategy="blue_green")
    s = m.start("r1", "route", p, now=0)
    assert s.weights == {"stable": 100, "canary": 0}
    s, ev = m.on_tick(s, p, PASS, 10)
    assert ev is m.Event.SUCCEEDED and s.weights == {"stable": 0, "canary": 100}
    back = m.rollback(s, 11, "switch back")
    assert back.weights == {"stable": 100, "canary": 0}


def test_shadow_phase_comes_first() -> None:
    p = policy(shadow_phase=ShadowPhase(min_compared=100))
    s = m.start("r1", "route", p, now=0)
    assert s.step == m.SHADOW_STEP and s.weights["canary"] == 0
    j = judge_shadow(100, 0.01, 0.01, sent=100, errors=0, compared=100, mismatched=0)
    s, ev = m.on_tick(s, p, j, 10)
    assert ev is m.Event.STEP and s.step == 0 and s.weights["canary"] == 5
    bad = judge_shadow(100, 0.01, 0.01, sent=100, errors=0, compared=100, mismatched=5)
    assert bad.verdict is Verdict.FAIL
    assert judge_shadow(100, 0.01, 0.01, sent=10, errors=0, compared=10,
                        mismatched=0).verdict is Verdict.HOLD


def test_state_round_trips_through_json() -> None:
    p = policy(steps=[5, "pause", 100])
    s = m.start("r1", "route", p, now=0, version="sentiment@2.1.0", candidate_backend="b2")
    s, _ = m.on_tick(s, p, PASS, 10)
    assert m.RolloutState.from_json(s.to_json()) == s
    stored_before = {k: v for k, v in s.to_json().items() if k != "evidence"}
    assert m.RolloutState.from_json(stored_before).evidence == m.Evidence()
    doc = s.document()
    assert doc["state"] == "paused" and doc["steps"] == [5, "pause", 100]
    assert doc["analyses"][0]["decision"] == "pass"
