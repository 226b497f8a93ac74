"""The issue's acceptance scenarios, seeded, through the real look() (judge and state
machine): a rollout of 30 steps of 3 % then 100 % (``[3, 6, ..., 90, 100]``), 30 s per
step, 400 req/s, ``min_requests`` 300, default alpha (0.01) and progress deadline (600 s,
then pause). Small runs, so the suite stays fast; the figures of 1,000-run simulations are
in docs/rollouts.md."""

from __future__ import annotations

import numpy as np
import pytest

from proxy.config import Rollout
from proxy.rollout import machine as m
from proxy.rollout.analysis import Verdict
from proxy.rollout.look import look
from proxy.rollout.traffic import ArmModel, arm

RPS = 400


def policy(**analysis: object) -> Rollout:
    return Rollout.model_validate({
        "baseline": "stable", "candidate": "canary", "step_interval_s": 30,
        "steps": [3 * i for i in range(1, 31)] + [100],
        "analysis": {"min_requests": 300, **analysis}})


def run(p: Rollout, seed: int, base: ArmModel, cand: ArmModel, every: float,
        ) -> tuple[m.RolloutState, m.Event | None, float]:
    """One rollout; looks every ``every`` seconds of simulated time with that interval's
    traffic (Poisson arrivals at the weights in force)."""
    rng = np.random.default_rng(seed)
    s = m.start("sim", "r", p, 0.0)
    t, last = 0.0, None
    while s.status is m.Status.PROGRESSING:
        t += every
        w = s.weights["canary"] / 100
        n_c, n_b = int(rng.poisson(RPS * w * every)), int(rng.poisson(RPS * (1 - w) * every))
        looked = look(s, p, arm(rng, base, n_b, int(rng.binomial(n_b, base.error_rate))),
                      arm(rng, cand, n_c, int(rng.binomial(n_c, cand.error_rate))), t)
        s, last = looked.state, looked.event or last
        assert t < 40_000, "a rollout that never ends"
    return s, last, t


def rolled_back(p: Rollout, runs: int, base: ArmModel, cand: ArmModel,
                every: float = 30.0) -> list[m.RolloutState]:
    ends = [run(p, seed, base, cand, every)[0] for seed in range(runs)]
    return [s for s in ends if s.status is m.Status.ROLLED_BACK]


def test_identical_candidate_at_the_limit_is_not_rolled_back() -> None:
    at = ArmModel(0.01, 50, 0.3)
    runs = 60
    assert len(rolled_back(policy(), runs, at, at)) <= 0.01 * runs


def test_candidate_at_0_8_percent_under_a_1_percent_limit_is_not_rolled_back() -> None:
    runs = 60
    bad = rolled_back(policy(), runs, ArmModel(0.005, 50, 0.3), ArmModel(0.008, 50, 0.3))
    assert len(bad) <= 0.01 * runs


def test_1_3x_slower_under_a_1_5_limit_is_rolled_back_in_at_most_5_percent() -> None:
    runs = 40
    bad = rolled_back(policy(max_latency_ratio=1.5), runs, ArmModel(0.005, 50, 0.6),
                      ArmModel(0.005, 50, 0.6, scale=1.3))
    assert len(bad) <= 0.05 * runs


@pytest.mark.parametrize(("name", "cand", "check"), [
    ("10% errors", ArmModel(0.10, 50, 0.3), "error_rate"),
    ("+80 ms on 50 ms", ArmModel(0.005, 50, 0.3, add_ms=80), "latency"),
])
def test_a_bad_candidate_is_caught_at_its_first_step(name: str, cand: ArmModel,
                                                     check: str) -> None:
    for seed in range(20):
        s, event, t = run(policy(), seed, ArmModel(0.005, 50, 0.3), cand, every=5.0)
        assert s.status is m.Status.ROLLED_BACK and event is m.Event.ROLLED_BACK, name
        assert s.step == 0 and s.weights["canary"] == 0
        # at the first look with min_requests (3 % of 400 req/s: 300 requests by 25 s)
        assert t <= 30.0, (name, t)
        failed = [c["name"] for c in s.analyses[-1]["checks"] if c["passed"] is False]
        assert check in failed, (name, s.reason)


def test_a_healthy_candidate_is_promoted_on_evidence() -> None:
    for seed in range(10):
        s, event, t = run(policy(), seed, ArmModel(0.005, 50, 0.3),
                          ArmModel(0.001, 50, 0.3), every=30.0)
        assert s.status is m.Status.SUCCEEDED and event is m.Event.SUCCEEDED
        assert t < 31 * 30 + 600
        assert all(a["decision"] in ("pass", "hold") for a in s.analyses)


@pytest.mark.parametrize("limit", [0.01, 0.05, 0.1])
def test_24_requests_of_a_15_percent_failing_candidate_never_pass(limit: float) -> None:
    """Whatever its 24 requests did (every error count), a candidate judged on them alone
    — even under a policy that judges from 20 requests — is never passed."""
    p = policy(min_requests=20, max_error_rate=limit, latency_quantile=0.5)
    rng = np.random.default_rng(4)
    base = ArmModel(0.01, 50, 0.3)
    for errors in range(25):
        s = m.start("sim", "r", p, 0.0)
        b = arm(rng, base, 776, 8)
        c = arm(rng, ArmModel(0.15, 50, 0.3), 24, errors)
        looked = look(s, p, b, c, 30.0)
        assert looked.judgement.verdict is not Verdict.PASS, (errors, looked.judgement)
        assert looked.state.step == 0


def test_a_15_percent_failing_candidate_with_24_requests_holds_under_the_issue_policy(
) -> None:
    rng = np.random.default_rng(8)
    s = m.start("sim", "r", policy(), 0.0)
    looked = look(s, policy(), arm(rng, ArmModel(0.01, 50, 0.3), 776, 8),
                  arm(rng, ArmModel(0.15, 50, 0.3), 24, 4), 30.0)
    assert looked.event is m.Event.HOLD and looked.state.step == 0
    assert "24 of 300" in looked.judgement.reason
