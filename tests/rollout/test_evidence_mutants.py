"""The evidence's arithmetic pinned where mutation testing found it loose (see "Mutation
testing" in docs/rollouts.md): the mixtures' prior, the ratio test's state, quantile ranks
exactly at their thresholds, and the evidence folded, reset and persisted."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from proxy.rollout import sequential
from proxy.rollout.analysis import Arm
from proxy.rollout.evidence import Evidence, merge
from proxy.rollout.quantiles import bucket_edges, order_statistic, quantile_bounds, rank_bounds
from proxy.rollout.sequential import (
    RATIO_GRID,
    fold_ratio,
    log_e_above,
    log_e_below,
    mean_cs,
    prior,
)


# -- the mixtures' prior -------------------------------------------------------------------
@pytest.mark.parametrize(("p0", "want"), [(0.01, (1.0, 99.0)), (0.5, (1.0, 1.0)),
                                          (0.2, (1.0, 4.0)), (0.99, (99.0, 1.0)),
                                          (0.75, (3.0, 1.0))])
def test_prior_has_mean_p0_and_one_pseudo_observation_on_the_rarer_side(
        p0: float, want: tuple[float, float]) -> None:
    a, b = prior(p0)
    assert (a, b) == pytest.approx(want, rel=1e-12)
    assert a / (a + b) == pytest.approx(p0, rel=1e-12)


def test_limit_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="3 events of 2 trials"):
        log_e_above(3, 2, 0.1)
    with pytest.raises(ValueError, match=r"limit 1\.0 is not strictly between 0 and 1"):
        log_e_below(0, 1, 1.0)


def test_tail_masses_below_tiny_read_as_no_evidence_from_tiny_up_as_numbers() -> None:
    assert sequential._log(sequential.TINY) == math.log(sequential.TINY)
    assert sequential._log(math.nextafter(sequential.TINY, 0.0)) == -math.inf
    assert sequential._log(0.0) == -math.inf


# -- the ratio test's state ----------------------------------------------------------------
def test_ratio_boundary_theta_one_is_valid_and_theta_zero_is_refused() -> None:
    assert fold_ratio((), 1.0, 100, 2, 100, 1) != (0.0,) * len(RATIO_GRID)
    for theta in (0.0, -1.0):
        with pytest.raises(ValueError,
                           match=r"^a batch has more errors than requests, or θ <= 0$"):
            fold_ratio((), theta, 100, 2, 100, 1)


@pytest.mark.parametrize(("x_c", "x_b"), [(1, 0), (0, 1), (2, 2), (1, 1)])
def test_any_batch_with_an_error_moves_the_ratio_state(x_c: int, x_b: int) -> None:
    """Only a batch without errors carries no information (one error or equal counts do)."""
    state = fold_ratio((), 2.0, 100, x_c, 900, x_b)
    assert state != (0.0,) * len(RATIO_GRID)
    assert fold_ratio((), 2.0, 100, 0, 900, 0) == (0.0,) * len(RATIO_GRID)


def test_a_stored_ratio_state_of_another_grid_is_refused() -> None:
    with pytest.raises(ValueError):
        fold_ratio((0.0, 0.0, 0.0), 2.0, 100, 1, 900, 1)


def test_mean_cs_without_a_mixture_variance_bounds_nothing() -> None:
    assert mean_cs(0.1, 0.01, 0.0, 0.01) == (-math.inf, math.inf)


# -- quantile ranks exactly at their thresholds ---------------------------------------------
def alpha_hitting(log_e: float) -> float:
    """An alpha whose rank threshold log(2/alpha) is exactly ``log_e``."""
    guess = 2 * math.exp(-log_e)
    for step in range(-200, 201):
        a = guess
        for _ in range(abs(step)):
            a = math.nextafter(a, math.inf if step > 0 else 0.0)
        if math.log(2.0 / a) == log_e:
            return a
    raise AssertionError("no float alpha hits the threshold exactly")


def _first(t: int, found: Callable[[int], bool]) -> int:
    return next(x for x in range(t + 1) if found(x))


def test_lower_rank_counts_an_e_value_exactly_at_the_threshold() -> None:
    t, q = 200, 0.5
    lo, _ = rank_bounds(t, q, 0.01)
    b = lo - 1  # the largest count shown "below q" at 0.01
    a = alpha_hitting(log_e_below(b, t, q))
    assert rank_bounds(t, q, a)[0] == b + 1  # e == 1/α: shown, X_(b+1) bounds it below
    assert rank_bounds(t, q, math.nextafter(a, 0.0))[0] == b  # just short of it


def test_upper_rank_counts_an_e_value_exactly_at_the_threshold() -> None:
    t, q = 200, 0.5
    _, hi = rank_bounds(t, q, 0.01)
    c = _first(t, lambda c: log_e_above(c, t, q) >= math.log(2 / 0.01))
    assert hi == c
    a = alpha_hitting(log_e_above(c, t, q))
    assert rank_bounds(t, q, a)[1] == c  # e == 1/α: the count bounds the quantile
    assert rank_bounds(t, q, math.nextafter(a, 0.0))[1] == c + 1  # just short of it


def test_the_largest_observation_can_be_the_upper_bound() -> None:
    """hi == t: the upper bound is the top bucket's upper edge, not infinity."""
    hist = tuple((float(v), 1) for v in range(1, 12))  # 11 observations
    assert rank_bounds(11, 0.5, 0.01)[1] == 11
    assert quantile_bounds(hist, 0.5, 0.01)[1] == bucket_edges(11.0)[1]
    assert quantile_bounds(hist[:10], 0.5, 0.01)[1] == math.inf  # 10 are not enough


def test_order_statistic_errors_name_the_rank_and_the_count() -> None:
    hist = ((1.0, 1), (2.0, 1), (3.0, 1))
    with pytest.raises(ValueError, match=r"^rank 4 of a histogram of 3 observations$"):
        order_statistic(hist, 4)
    with pytest.raises(ValueError, match=r"^rank 1 of a histogram of 0 observations$"):
        order_statistic((), 1)
    with pytest.raises(ValueError, match=r"^rank 0 of a histogram of 3 observations$"):
        order_statistic(hist, 0)


# -- the evidence: folded, reset, persisted -----------------------------------------------
def test_merge_adds_counts_and_keeps_the_buckets_sorted() -> None:
    a = ((2.0, 3), (5.0, 1))
    assert merge(a, ((2.0, 2), (5.0, 4))) == ((2.0, 5), (5.0, 5))
    assert merge(a, ((1.0, 1),)) == ((1.0, 1), (2.0, 3), (5.0, 1))  # a new lower bucket
    assert merge(a, ((2.0, 1), (1.0, 1))) == ((1.0, 1), (2.0, 4), (5.0, 1))
    assert merge(a, ((3.0, 0),)) == a  # an empty bucket is no bucket
    assert merge((), ((4.0, 1), (3.0, 2))) == ((3.0, 2), (4.0, 1))


BASE1 = Arm(1000, 10, ((10.0, 600), (20.0, 400)), (900, 810.0, 750.0))
CAND1 = Arm(100, 3, ((10.0, 50), (30.0, 50)), (90, 63.0, 50.0))
BASE2 = Arm(500, 4, ((5.0, 100), (20.0, 400)), (450, 400.0, 370.0))
CAND2 = Arm(50, 2, ((10.0, 50),), (45, 30.0, 21.0))


def test_fold_accumulates_every_figure_of_both_arms() -> None:
    ev = Evidence().fold(BASE1, CAND1, 2.0).fold(BASE2, CAND2, 2.0)
    assert ev.baseline == Arm(1500, 14, ((5.0, 100), (10.0, 600), (20.0, 800)),
                              (1350, 1210.0, 1120.0))
    assert ev.candidate == Arm(150, 5, ((10.0, 100), (30.0, 50)), (135, 93.0, 71.0))
    assert (ev.step_requests, ev.step_errors) == (150, 5)
    # the ratio test's state carries over looks: two batches, not the last one alone
    assert ev.ratio_loglr == fold_ratio(fold_ratio((), 2.0, 100, 3, 1000, 10), 2.0, 50, 2,
                                        500, 4)


def test_a_new_step_resets_only_the_step_counts() -> None:
    ev = Evidence().fold(BASE1, CAND1, 2.0)
    fresh = ev.new_step()
    assert (fresh.step_requests, fresh.step_errors) == (0, 0)
    assert (fresh.candidate, fresh.baseline, fresh.ratio_loglr) == (
        ev.candidate, ev.baseline, ev.ratio_loglr)


def test_evidence_round_trips_with_every_figure() -> None:
    ev = Evidence().fold(BASE1, CAND1, 2.0).fold(BASE2, CAND2, 2.0).new_step().fold(
        BASE2, CAND2, 2.0)
    doc = ev.to_json()
    assert doc["candidate"] == {"requests": 200, "errors": 7,
                                "latency": [[10.0, 150], [30.0, 50]], "field": [180, 123.0, 92.0]}
    assert (doc["step_requests"], doc["step_errors"]) == (50, 2)
    assert doc["ratio_loglr"] == list(ev.ratio_loglr)
    assert Evidence.from_json(doc) == ev


def test_evidence_stored_without_the_optional_figures_reads_as_zero() -> None:
    """A state stored by an older proxy: arms with counts only."""
    stored = {"candidate": {"requests": 7, "errors": 1}, "baseline": {"requests": 70,
                                                                       "errors": 2}}
    assert Evidence.from_json(stored) == Evidence(Arm(7, 1), Arm(70, 2))
    assert Evidence.from_json(stored).candidate.field == (0, 0.0, 0.0)
