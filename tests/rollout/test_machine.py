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


def test_hold_until_progress_deadline_then_not_enough_data() -> None:
    p = policy(progress_deadline_s=30)
    s = m.start("r1", "route", p, now=0)
    t = 10.0
    s, ev = m.on_tick(s, p, HOLD, t)
    assert ev is m.Event.HOLD and s.status is m.Status.PROGRESSING
    while s.status is m.Status.PROGRESSING:
        t += 10
        s, ev = m.on_tick(s, p, HOLD, t)
    assert t == 30 and s.status is m.Status.ROLLED_BACK
    assert (s.reason or "").startswith("not enough data")


def test_consecutive_failed_checks_counter_resets_on_pass() -> None:
    p = policy(analysis=Analysis(failed_checks_to_rollback=2))
    s = m.start("r1", "route", p, now=0)
    s, ev = m.on_tick(s, p, FAIL, 10)
    assert ev is m.Event.CHECK_FAILED and s.failed_checks == 1 and s.step == 0
    s, ev = m.on_tick(s, p, HOLD, 20)  # a hold does not reset the count
    assert s.failed_checks == 1
    s, ev = m.on_tick(s, p, PASS, 30)
    assert s.failed_checks == 0 and s.step == 1
    s, _ = m.on_tick(s, p, FAIL, 40)
    s, ev = m.on_tick(s, p, FAIL, 50)
    assert ev is m.Event.ROLLED_BACK and s.failed_checks == 2


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
    doc = s.document()
    assert doc["state"] == "paused" and doc["steps"] == [5, "pause", 100]
    assert doc["analyses"][0]["decision"] == "pass"
