"""The policy simulator: its synthetic traffic is what the proxy would record, its runs are
reproducible, and it drives the real judge and state machine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from proxy.config import Rollout
from proxy.errors import Cause
from proxy.observe import HIGHEST_US, VariantStats, new_histogram
from proxy.rollout import controller, simulate_cli, traffic
from proxy.rollout.analysis import Arm
from proxy.rollout.simulate import Outcome, Scenario, run_once, simulate, simulation_policy
from proxy.rollout.traffic import ArmModel, arm, histogram, latency_histogram

#: The issue's rollout: 30 steps of 3 % (3, 6, ... 90), then 100 %; 30 s per step. (Its
#: decisions under the judge are tested in test_policy_simulation.py.)
STEPS = [3 * i for i in range(1, 31)] + [100]


def policy(**analysis: object) -> Rollout:
    return Rollout.model_validate({
        "baseline": "stable", "candidate": "canary", "steps": STEPS, "step_interval_s": 30,
        "analysis": {"min_requests": 300, "max_error_rate": 0.01, **analysis}})


def scenario(base_err: float = 0.01, cand_err: float = 0.01, *, rps: float = 400,
             sigma: float = 0.3, scale: float = 1.0, add_ms: float = 0.0) -> Scenario:
    return Scenario(rps, ArmModel(base_err, 50, sigma),
                    ArmModel(cand_err, 50, sigma, scale, add_ms))


def recorded(latencies_ms: np.ndarray) -> tuple[tuple[float, int], ...]:
    """The same latencies through the proxy's own recording and the controller's Arm."""
    stats_ = VariantStats("r", "v")
    for ms in latencies_ms.tolist():
        stats_.record(200, ms / 1000.0, None, cause=Cause.BACKEND)
    return controller.arm(stats_.snapshot()).latency


# -- the traffic ----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 17, 3999, 4000, 25_000])  # both sides of the bincount switch
def test_buckets_are_exactly_those_the_proxy_records(n: int) -> None:
    x = ArmModel(0.0, 50, 1.5).latencies_ms(np.random.default_rng(n), n)
    # the edges: 0, under half a microsecond, half-way roundings, bucket edges, over an hour
    edges = [0.0, 0.0004, 0.0005, 2.0475, 2.0485, 4.095, 4.097, 1234.5675, 1e8]
    x[: min(n, len(edges))] = edges[: min(n, len(edges))]
    assert histogram(x) == recorded(x)


def test_the_bucket_table_is_hdrhistograms() -> None:
    h = new_histogram()
    assert traffic._highest_ms().tolist() == [
        h.get_highest_equivalent_value(h.get_value_from_index(i)) / 1000.0
        for i in range(h.counts_len)]


def test_a_long_interval_is_drawn_in_chunks_with_every_request_counted() -> None:
    rng = np.random.default_rng(5)
    n = traffic._CHUNK + 1234
    h = latency_histogram(rng, ArmModel(0.0, 50, 0.3), n)
    assert sum(c for _, c in h) == n
    assert [v for v, _ in h] == sorted({v for v, _ in h})
    assert Arm(n, 0, h).quantile(0.5) == pytest.approx(50, rel=0.005)


def test_an_arm_counts_every_request_once_failed_ones_in_the_latencies_too() -> None:
    rng = np.random.default_rng(1)
    a = arm(rng, ArmModel(0.3, 50, 0.3), 1000, 300)
    assert (a.requests, a.errors) == (1000, 300)
    assert sum(c for _, c in a.latency) == 1000
    assert arm(rng, ArmModel(0.3, 50, 0.3), 0, 0) == Arm(0, 0)


@pytest.mark.parametrize(("sigma", "scale", "add_ms"), [(0.3, 1.0, 0.0), (0.6, 1.3, 0.0),
                                                        (0.3, 1.0, 80.0), (1.0, 2.0, 5.0)])
def test_latency_quantiles_match_the_lognormal(sigma: float, scale: float, add_ms: float,
                                               ) -> None:
    n = 200_000
    model = ArmModel(0.0, 50, sigma, scale, add_ms)
    a = arm(np.random.default_rng(2), model, n, 0)
    for q in (0.5, 0.9, 0.99):
        exact = 50 * math.exp(sigma * stats.norm.ppf(q)) * scale + add_ms
        got = a.quantile(q)
        # the quantile's sampling error: the empirical CDF at the exact quantile is within
        # 5 standard errors of q; plus HdrHistogram's bucket width (0.1 %) either way
        below = sum(c for v, c in a.latency if v <= exact * 1.001) / n
        above = sum(c for v, c in a.latency if v < exact * 0.999) / n
        tol = 5 * math.sqrt(q * (1 - q) / n)
        assert above - tol <= q <= below + tol, (q, got, exact)
        assert got == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("bad", [
    {"error_rate": -0.01}, {"error_rate": 1.01}, {"error_rate": math.nan},
    {"median_ms": 0}, {"median_ms": math.inf}, {"sigma": 0}, {"sigma": -1},
    {"scale": 0}, {"add_ms": -1},
])
def test_a_bad_distribution_is_refused(bad: dict[str, float]) -> None:
    kw = {"error_rate": 0.01, "median_ms": 50.0, "sigma": 0.3, **bad}
    with pytest.raises(ValueError, match="not"):
        ArmModel(**kw)


def test_a_huge_sigma_is_clamped_like_the_proxy_clamps_not_a_warning() -> None:
    x = ArmModel(0.0, 50, 400).latencies_ms(np.random.default_rng(0), 1000)
    h = histogram(x)
    assert h[-1][0] >= HIGHEST_US / 1000 and sum(c for _, c in h) == 1000


# -- the runs -------------------------------------------------------------------------------
def test_a_seed_reproduces_a_simulation_and_another_seed_does_not() -> None:
    p, s = policy(), scenario(0.01, 0.02)
    one, again = simulate("r", p, s, 20, seed=7), simulate("r", p, s, 20, seed=7)
    assert one.to_json() == again.to_json()
    assert one.results != simulate("r", p, s, 20, seed=8).results


def test_run_i_depends_only_on_the_seed_and_i() -> None:
    p, s = policy(), scenario(0.01, 0.02)
    assert simulate("r", p, s, 5, seed=3).results == simulate("r", p, s, 12, seed=3).results[:5]


def test_a_critical_breach_rolls_back_at_the_tick_the_controller_would() -> None:
    """12 candidate requests a second, 60 % failing: the critical rule (>= 50 % over >= 20
    requests) holds after ~2 s, long before the step's 30 s judge time."""
    summary = simulate("r", policy(), scenario(0.01, 0.6), 30, seed=1)
    assert summary.count(Outcome.ROLLED_BACK) == 30
    assert summary.to_json()["rolled_back_by"] == {"critical": 30}
    assert all(r.seconds < 10 and r.step == 0 for r in summary.results)


def test_looking_every_tick_is_the_controllers_schedule() -> None:
    rng = np.random.default_rng(4)
    r = run_once(rng, "r", simulation_policy(policy()), scenario(0.01, 0.6), look_every_s=0.5)
    assert r.outcome is Outcome.ROLLED_BACK and r.rule == "critical" and r.seconds < 10


def test_a_pause_step_is_resumed_as_an_operator_would() -> None:
    p = Rollout.model_validate({"baseline": "stable", "candidate": "canary",
                                "steps": [5, "pause", 100], "step_interval_s": 30,
                                "analysis": {"min_requests": 100}})
    r = run_once(np.random.default_rng(1), "r", p, scenario(0.0, 0.0, rps=10_000))
    assert r.outcome is Outcome.PROMOTED and r.step == 2


def test_the_simulated_policy_leaves_out_what_traffic_cannot_show() -> None:
    p = Rollout.model_validate({
        "baseline": "stable", "candidate": "canary", "confirm_webhook": "https://ci.example/ok",
        "shadow_phase": {"min_compared": 10},
        "analysis": {"json_metric": {"path": "score", "max_drop": 0.1},
                     "prometheus": [{"url": "http://prom:9090", "query": "up", "max": 1}]}})
    sim = simulation_policy(p)
    assert sim.shadow_phase is None and sim.confirm_webhook is None
    assert sim.analysis.json_metric is None and sim.analysis.prometheus == ()
    with pytest.raises(ValueError, match="blue_green"):
        simulation_policy(p.model_copy(update={"strategy": "blue_green"}))


@pytest.mark.parametrize("action", ["pause", "rollback"])
def test_an_inconclusive_step_is_counted_apart_from_rollbacks_on_evidence(action: str,
                                                                          ) -> None:
    """A candidate exactly at the limit can never be shown inside it: its first step
    reaches the deadline undecided, whatever on_inconclusive then does."""
    p = policy().model_copy(update={"on_inconclusive": action})
    s = simulate("r", p, scenario(0.01, 0.01), 10, seed=2)
    assert s.count(Outcome.INCONCLUSIVE) == 10
    doc = s.to_json()
    assert doc["rolled_back"] == 0 and doc["rolled_back_by"] == {}
    assert doc["median_seconds_to_decision"] == p.progress_deadline_s


def test_the_cli_knows_the_controllers_tick() -> None:
    assert simulate_cli.TICK_S == controller.TICK_S


def test_summary_rates_and_wilson_intervals() -> None:
    doc = simulate("r", policy(), scenario(0.01, 0.6), 10, seed=1).to_json()
    assert doc["runs"] == 10 and doc["rolled_back"] == 10 and doc["rolled_back_rate"] == 1.0
    low, high = doc["rolled_back_ci95"]
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)  # Wilson, 10 of 10
    assert doc["promoted"] + doc["rolled_back"] + doc["inconclusive"] + doc["unfinished"] == 10
    assert doc["median_seconds_to_decision"] == doc["median_seconds_to_rollback"]
    assert doc["rolled_back_at_step"] == {"0": 10}

