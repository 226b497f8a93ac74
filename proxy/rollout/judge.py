"""Judging a rollout step on the evidence accumulated since the rollout started (pure).

:func:`judge` returns ``pass``, ``fail`` or ``hold`` with every check's figures. Every test
is anytime-valid (:mod:`proxy.rollout.sequential`, :mod:`proxy.rollout.quantiles`) and the
policy's ``alpha`` is split evenly between the tests that can fail a candidate, so the
probability that a candidate within every tolerance is rolled back at ANY look of ANY step
is at most ``alpha`` (union bound):

* **critical** — ``critical_error_rate`` (50 %) of errors over at least
  ``critical_min_requests`` (20) candidate requests in the step fails at once, before
  ``min_requests``: a broken version must not take traffic for a whole step. (Its false
  alarm probability for a candidate within ``max_error_rate`` is negligible; see
  ``docs/rollouts.md``.)
* **enough data** — below ``min_requests`` candidate requests in the step the judge holds.
* **error rate** — *fail* when the beta-binomial mixture shows the candidate's rate above
  ``max_error_rate`` (absolute), or the conditional-binomial mixture shows it above
  ``max_error_ratio`` × the baseline's (relative; a guard that can only fail); *pass* when
  the mixture shows the rate below ``max_error_rate``.
* **latency** — confidence sequences for both arms' ``latency_quantile``: *fail* when the
  ratio's lower bound ``L_cand / U_base`` is above ``max_latency_ratio``, *pass* when its
  upper bound ``U_cand / L_base`` is below it.
* **json_metric** — a normal-mixture confidence sequence for the drop of the field's mean:
  *fail* when the drop is shown above ``max_drop``, *pass* when shown below (approximate:
  the variance is estimated).
* PromQL checks arrive as ``extra`` thresholds.

Anything neither shown failed nor shown passed holds. In ``health`` mode (rolling
updates, blue-green) only the critical and absolute error checks apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter

from proxy.rollout.analysis import Check, Judgement, Policy, Verdict, combine
from proxy.rollout.evidence import Evidence
from proxy.rollout.quantiles import quantile_bounds
from proxy.rollout.sequential import log_e_above, log_e_below, log_e_ratio, mean_cs


def alpha_shares(p: Policy) -> int:
    """How many tests share ``alpha`` (those that can fail a candidate, critical aside)."""
    if p.health_only:
        return 1
    return 3 + (p.json_path is not None)


def _e(log_e: float) -> str:
    return f"{math.exp(min(log_e, 700.0)):.3g}"


def _error_check(p: Policy, ev: Evidence, a: float) -> Check:
    c, b = ev.candidate, ev.baseline
    bar = math.log(1 / a)
    p0 = p.max_error_rate
    label = f"candidate {c.errors}/{c.requests} = {c.error_rate:.2%}"
    if p0 <= 0.0:  # no statistics: one error breaks a zero limit
        above, below, figures = c.errors > 0, c.errors == 0, "limit 0"
    elif p0 >= 1.0:
        above, below, figures = False, True, "no limit"
    else:
        up, down = log_e_above(c.errors, c.requests, p0), log_e_below(c.errors, c.requests, p0)
        above, below = up >= bar, down >= bar
        figures = (f"limit {p0:.2%}: e(above)={_e(up)}, e(below)={_e(down)}, "
                   f"decides at {1 / a:.3g} (α={a:.2g})")
    if above:
        return Check("error_rate", False, f"{label} is above the {p0:.2%} limit ({figures})")
    if not p.health_only:
        ratio = log_e_ratio(ev.ratio_loglr)
        vs = (f"baseline {b.errors}/{b.requests} = {b.error_rate:.2%}, "
              f"e(> {p.max_error_ratio:g}x baseline)={_e(ratio)}")
        if ratio >= bar:
            return Check("error_rate", False,
                         f"{label} is above {p.max_error_ratio:g}x the {vs} ≥ {1 / a:.3g} "
                         f"(α={a:.2g})")
        figures = f"{figures}; {vs}"
    if below:
        return Check("error_rate", True, f"{label} is below the limit ({figures})")
    return Check("error_rate", None, f"{label}: not yet shown below the limit ({figures})")


def _count(hist: Sequence[tuple[float, int]]) -> int:
    return sum(map(itemgetter(1), hist))


def _latency_check(p: Policy, ev: Evidence, a: float) -> Check:
    q, r = p.latency_quantile, p.max_latency_ratio
    lc, uc = quantile_bounds(ev.candidate.latency, q, a)
    lb, ub = quantile_bounds(ev.baseline.latency, q, a)
    low = lc / ub if ub > 0 else 0.0  # ub is infinite until the baseline bounds it
    high = uc / lb if lb > 0 else math.inf
    label = (f"p{q * 100:g} candidate [{lc:.1f}, {uc:.1f}] ms "
             f"(n={_count(ev.candidate.latency)}), baseline [{lb:.1f}, {ub:.1f}] "
             f"ms (n={_count(ev.baseline.latency)}): ratio in [{low:.2f}, "
             f"{high:.2f}], limit {r:g} (α={a:.2g})")
    if low > r:
        return Check("latency", False, f"{label}: above the limit")
    if high < r:
        return Check("latency", True, f"{label}: below the limit")
    return Check("latency", None, f"{label}: not yet decided")


def _sample_variance(n: int, total: float, squares: float) -> float:
    """Sample variance from (n, sum, sum of squares); a variance lost in the rounding of
    ``squares - n * mean**2`` (a constant field) is exactly 0, not a few ulps either way."""
    mean = total / n
    spread = squares - n * mean * mean
    if spread <= 1e-12 * max(squares, 1e-300):
        return 0.0
    return spread / (n - 1)


def _field_check(p: Policy, ev: Evidence, a: float) -> Check:
    (nb, sb, ssb), (nc, sc, ssc) = ev.baseline.field, ev.candidate.field
    name = f"json:{p.json_path}"
    if nb < 2 or nc < 2:
        return Check(name, None, f"field seen in {nc} candidate / {nb} baseline responses")
    mb, mc = sb / nb, sc / nc
    vb, vc = _sample_variance(nb, sb, ssb), _sample_variance(nc, sc, ssc)
    drop = mb - mc
    label = (f"mean candidate {mc:.4g} (n={nc}) vs baseline {mb:.4g} (n={nb}), "
             f"max drop {p.json_max_drop:g}")
    if vb + vc == 0:  # both sides constant so far: the drop is known exactly
        if drop > p.json_max_drop:
            return Check(name, False, f"{label}: dropped by {drop:.4g}, no variance")
        return Check(name, True, f"{label}: no variance")
    # The mixture is tuned to decide near min_requests values per arm.
    tau2 = (vb + vc) / max(p.min_requests, 2)
    lo, hi = mean_cs(drop, vb / nb + vc / nc, tau2, a)
    label = f"{label}: drop in [{lo:.4g}, {hi:.4g}] (α={a:.2g})"
    if lo > p.json_max_drop:
        return Check(name, False, f"{label}, above the limit")
    if hi < p.json_max_drop:
        return Check(name, True, f"{label}, below the limit")
    return Check(name, None, f"{label}, not yet decided")


def judge(p: Policy, ev: Evidence, extra: Sequence[Check] = ()) -> Judgement:
    """Judge the rollout's evidence (see the module docstring for the rules); ``extra`` are
    checks made elsewhere (PromQL queries) that join the verdict."""
    n, k = ev.step_requests, ev.step_errors
    if n >= p.critical_min_requests and k / n >= p.critical_error_rate:
        check = Check("critical", False, f"candidate {k}/{n} errors in this step "
                                         f"≥ {p.critical_error_rate:.0%}")
        return Judgement(Verdict.FAIL, (check,), critical=True, reason=check.detail)
    if n < p.min_requests:
        check = Check("min_requests", None,
                      f"candidate has {n} of {p.min_requests} requests in this step")
        return Judgement(Verdict.HOLD, (check,), reason=check.detail)
    a = p.alpha / alpha_shares(p)
    checks: list[Check] = [_error_check(p, ev, a)]
    if not p.health_only:
        checks.append(_latency_check(p, ev, a))
        if p.json_path is not None:
            checks.append(_field_check(p, ev, a))
    return combine([*checks, *extra])
