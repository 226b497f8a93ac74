"""The rollout policy simulator (pure): many seeded rollouts over the real judge and state
machine, on synthetic traffic, with an injected clock — no sleeping, no network.

One run is what the controller does for a rollout on a route: :func:`machine.start`, then
:func:`proxy.rollout.look.look` with what each arm did since the previous look, until the
rollout leaves ``progressing``. Simulated time advances in the controller's ticks
(:data:`proxy.rollout.controller.TICK_S`); the traffic of each tick comes from
:mod:`proxy.rollout.traffic` at the weights in force.

**When it looks.** The controller looks every tick; between the times the machine records
(``next_judge_at``) a look matters only through the critical rule or a ``fail``. Calling
the judge 60 times per 30-second step would make 1,000 runs take half an hour, so the
simulator draws every tick's request and error counts (cheap) and looks

* at the first tick at or after ``next_judge_at``,
* earlier, at the first tick where the candidate's counts could meet the critical rule —
  ``critical_error_rate`` of errors over at least ``critical_min_requests`` requests, over
  the step so far or since the previous look — so a critical rollback happens at the same
  tick as under the controller, and
* with ``look_every_s``, that often too (``TICK_S``: the controller's own schedule).

So a ``fail`` is found at the judge time after the tick the controller would find it at;
the tests being anytime-valid, fewer looks can only make a false rollback rarer.

Latencies are drawn for the requests of the whole interval since the previous look (the
histogram of a sum of ticks is the histogram of all their requests).

**Operator steps.** A ``"pause"`` step is resumed at once (as if an operator resumed it);
a shadow phase, ``confirm_webhook``, ``json_metric`` and ``prometheus`` checks are outside
the model and left out of the policy (:func:`simulation_policy`).

**Cap.** Every step ends by its ``progress_deadline_s`` (one interval later at most), so a
rollout takes at most ``steps × (progress_deadline_s + step_interval_s)``; the simulator
stops a run at twice that (:func:`time_cap`) and counts it ``unfinished`` — it only happens
if the machine's rules change.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from proxy.config import Rollout
from proxy.rollout import machine as m
from proxy.rollout.controller import TICK_S
from proxy.rollout.look import look
from proxy.rollout.traffic import ArmModel, arm
from proxy.stats import wilson_interval


class Outcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    INCONCLUSIVE = "inconclusive"  # undecided at the progress deadline (paused or rolled back)
    UNFINISHED = "unfinished"  # still progressing at the time cap


@dataclass(frozen=True, slots=True)
class Scenario:
    """The traffic of a simulated route: total ``rps`` split by the rollout's weights."""

    rps: float
    baseline: ArmModel
    candidate: ArmModel

    def __post_init__(self) -> None:
        if not 0.0 < self.rps < math.inf:
            raise ValueError(f"rps {self.rps:g} is not a positive number")


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    seconds: float  # simulated time from start to the decision (or the cap)
    step: int  # the step the rollout was at when it was decided
    rule: str  # what decided it: critical, error_rate, latency, inconclusive, ...
    reason: str | None


def simulation_policy(policy: Rollout) -> Rollout:
    """The policy as simulated: no shadow phase, webhook, JSON-field or PromQL check (they
    are outside the traffic model). Raises ``ValueError`` for a policy it cannot run."""
    if policy.strategy == "blue_green":
        raise ValueError("a blue_green candidate takes only pinned traffic, which the "
                         "simulator does not model (canary and rolling can be simulated)")
    analysis = policy.analysis.model_copy(update={"json_metric": None, "prometheus": ()})
    return policy.model_copy(update={"shadow_phase": None, "confirm_webhook": None,
                                     "analysis": analysis})


def time_cap(policy: Rollout) -> float:
    """Simulated seconds after which a run stops (see the module docstring)."""
    return 2.0 * len(policy.steps) * (policy.progress_deadline_s + policy.step_interval_s)


def _rule(state: m.RolloutState, outcome: Outcome) -> str:
    reason = state.reason or ""
    if outcome is Outcome.PROMOTED:
        return "passed"
    if outcome is Outcome.UNFINISHED:
        return "cap"
    if outcome is Outcome.INCONCLUSIVE:
        return "inconclusive"
    if reason.startswith("critical"):
        return "critical"
    last = state.analyses[-1] if state.analyses else None
    failed = [str(c["name"]) for c in last["checks"] if c["passed"] is False] if last else []
    return failed[0] if failed else "failed_check"


def _outcome(state: m.RolloutState, event: m.Event | None) -> Outcome:
    # Inconclusive at the deadline pauses (or, with on_inconclusive: rollback, rolls
    # back): either way it is no evidence against the candidate, so it is counted apart.
    if event is m.Event.INCONCLUSIVE:
        return Outcome.INCONCLUSIVE
    if state.status is m.Status.SUCCEEDED:
        return Outcome.PROMOTED
    if state.status is m.Status.ROLLED_BACK:
        return Outcome.ROLLED_BACK
    if state.status is m.Status.PAUSED:
        return Outcome.INCONCLUSIVE
    return Outcome.UNFINISHED


def _critical_tick(n: np.ndarray[Any, Any], e: np.ndarray[Any, Any], before: tuple[int, int],
                   min_requests: int, rate: float) -> int | None:
    """The first tick (index) at which the candidate's counts could meet the critical
    rule, over the step so far (``before`` = its counts up to the previous look) or since
    the previous look; None if at none."""
    cn, ce = np.cumsum(n), np.cumsum(e)
    sn, se = cn + before[0], ce + before[1]
    # A hair of slack: a look too many costs time, a look too few changes the result.
    hit = ((cn >= min_requests) & (ce >= rate * cn - 1e-9)) | \
          ((sn >= min_requests) & (se >= rate * sn - 1e-9))
    return int(np.argmax(hit)) if hit.any() else None


def run_once(rng: np.random.Generator, route: str, policy: Rollout, scenario: Scenario,
             look_every_s: float | None = None, tick_s: float = TICK_S) -> RunResult:
    """One simulated rollout of ``policy`` (already :func:`simulation_policy`), looking at
    every ``next_judge_at``, wherever the critical rule could fire and, with
    ``look_every_s``, that often (rounded to whole ticks)."""
    state = m.start("simulated", route, policy, 0.0)
    a = policy.analysis
    cap_ticks = math.ceil(time_cap(policy) / tick_s)
    every = cap_ticks if look_every_s is None else max(1, round(look_every_s / tick_s))
    tick = 0
    event: m.Event | None = None
    step_key, step_counts = (state.step, state.step_started_at), (0, 0)
    while state.status is m.Status.PROGRESSING and tick < cap_ticks:
        due = max(tick + 1, math.ceil(state.next_judge_at / tick_s - 1e-9))
        k = min(due, (tick // every + 1) * every, cap_ticks) - tick
        w_c = state.weights.get(state.candidate, 0.0) / 100.0
        w_b = state.weights.get(state.baseline, 0.0) / 100.0
        n_c = rng.poisson(scenario.rps * w_c * tick_s, k)
        e_c = rng.binomial(n_c, scenario.candidate.error_rate)
        first = None if k == 1 else _critical_tick(
            n_c, e_c, step_counts, a.critical_min_requests, a.critical_error_rate)
        used = k if first is None else first + 1
        tick += used
        cand = arm(rng, scenario.candidate, int(n_c[:used].sum()), int(e_c[:used].sum()))
        base_n = int(rng.poisson(scenario.rps * w_b * tick_s * used))
        base = arm(rng, scenario.baseline, base_n,
                    int(rng.binomial(base_n, scenario.baseline.error_rate)))
        looked = look(state, policy, base, cand, tick * tick_s)
        state, event = looked.state, looked.event
        key = (state.step, state.step_started_at)
        step_counts = (0, 0) if key != step_key else (
            step_counts[0] + cand.requests, step_counts[1] + cand.errors)
        step_key = key
        if state.status is m.Status.PAUSED and event is m.Event.PAUSED \
                and state.steps[state.step] == "pause":
            state = m.resume(state, policy, tick * tick_s)  # an operator's resume, at once
            step_key, step_counts = (state.step, state.step_started_at), (0, 0)
    outcome = _outcome(state, event)
    return RunResult(outcome, tick * tick_s, state.step, _rule(state, outcome), state.reason)


@dataclass(frozen=True, slots=True)
class Summary:
    """Many runs of one scenario."""

    route: str
    scenario: Scenario
    seed: int
    look_every_s: float | None
    cap_s: float
    results: tuple[RunResult, ...]

    @property
    def runs(self) -> int:
        return len(self.results)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    def to_json(self) -> dict[str, Any]:
        """Counts, rates with Wilson 95 % intervals, times and what rolled back."""
        n = self.runs
        decided = [r.seconds for r in self.results if r.outcome is not Outcome.UNFINISHED]
        backs = [r for r in self.results if r.outcome is Outcome.ROLLED_BACK]
        out: dict[str, Any] = {"route": self.route, "runs": n, "seed": self.seed}
        for o in Outcome:
            k = self.count(o)
            out[str(o)] = k
            out[f"{o}_rate"] = k / n
            out[f"{o}_ci95"] = list(wilson_interval(k, n))
        out["median_seconds_to_decision"] = statistics.median(decided) if decided else None
        out["median_seconds_to_rollback"] = (statistics.median(r.seconds for r in backs)
                                             if backs else None)
        out["rolled_back_by"] = dict(sorted(Counter(r.rule for r in backs).items()))
        out["rolled_back_at_step"] = {str(s): c for s, c in
                                      sorted(Counter(r.step for r in backs).items())}
        out["decided_at_step"] = {str(s): c for s, c in
                                  sorted(Counter(r.step for r in self.results).items())}
        sc = self.scenario
        out["scenario"] = {
            "rps": sc.rps, "baseline_error": sc.baseline.error_rate,
            "candidate_error": sc.candidate.error_rate,
            "baseline_latency_ms": sc.baseline.median_ms, "latency_sigma": sc.baseline.sigma,
            "candidate_latency_scale": sc.candidate.scale,
            "candidate_latency_add_ms": sc.candidate.add_ms}
        out["look_every_s"] = self.look_every_s
        out["cap_seconds"] = self.cap_s
        return out


def simulate(route: str, policy: Rollout, scenario: Scenario, runs: int, seed: int,
             look_every_s: float | None = None) -> Summary:
    """``runs`` independent rollouts; run ``i`` draws from its own stream spawned from
    ``seed``, so a result depends only on (seed, i)."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    if look_every_s is not None and not TICK_S <= look_every_s < math.inf:
        raise ValueError(f"looks cannot be more often than the controller's tick ({TICK_S} s)")
    sim = simulation_policy(policy)
    streams: Sequence[np.random.SeedSequence] = np.random.SeedSequence(seed).spawn(runs)
    results = tuple(run_once(np.random.default_rng(s), route, sim, scenario, look_every_s)
                    for s in streams)
    return Summary(route, scenario, seed, look_every_s, time_cap(sim), results)
