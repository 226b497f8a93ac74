"""One look at a rollout: fold what each arm did since the previous look into the
rollout's evidence, judge it and apply the judgement to the state machine (pure).

This is the seam the controller (live traffic) and the policy simulator (synthetic traffic)
share: both call :func:`look` and nothing else to judge and advance a rollout, so the
simulator runs the real judge and state machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.config import Rollout
from proxy.rollout import machine as m
from proxy.rollout.analysis import Arm, Check, Judgement, Policy, Verdict
from proxy.rollout.judge import judge


@dataclass(frozen=True, slots=True)
class Looked:
    """What one look produced."""

    state: m.RolloutState  # the new state (evidence folded in, machine applied)
    event: m.Event | None  # what the machine did (None: nothing worth recording)
    judgement: Judgement


def judge_policy(policy: Rollout) -> Policy:
    """The judge's view of a route's ``rollout`` policy."""
    a = policy.analysis
    return Policy(min_requests=a.min_requests, max_error_rate=a.max_error_rate,
                  max_error_ratio=a.max_error_ratio, max_latency_ratio=a.max_latency_ratio,
                  latency_quantile=a.latency_quantile, alpha=a.alpha,
                  critical_error_rate=a.critical_error_rate,
                  critical_min_requests=a.critical_min_requests,
                  health_only=policy.strategy in ("rolling", "blue_green"),
                  json_path=a.json_metric.path if a.json_metric else None,
                  json_max_drop=a.json_metric.max_drop if a.json_metric else 0.0)


_IDLE = Judgement(Verdict.HOLD, (), reason="not judging: the rollout is not progressing "
                                           "at a live step")


def look(state: m.RolloutState, policy: Rollout, base: Arm, cand: Arm, now: float,
         extra: Sequence[Check] = ()) -> Looked:
    """One look: ``base``/``cand`` are what each arm did SINCE THE PREVIOUS LOOK
    (increments, not cumulative); the evidence carried in ``state`` accumulates them.
    ``extra`` are checks made elsewhere (PromQL queries) that join the verdict.

    A rollout that is not progressing, or is in its shadow phase (judged by the controller
    on the shadow report), is returned unchanged with no event."""
    if state.status is not m.Status.PROGRESSING or state.step == m.SHADOW_STEP:
        return Looked(state, None, _IDLE)
    evidence = state.evidence.fold(base, cand, policy.analysis.max_error_ratio)
    j = judge(judge_policy(policy), evidence, extra)
    # The figures recorded with an analysis, built only for a look the machine records.
    recorded = j.verdict is Verdict.FAIL or now >= state.next_judge_at
    arms = {"baseline": evidence.baseline.summary(),
            "candidate": evidence.candidate.summary()} if recorded else None
    new, event = m.on_tick(dataclasses.replace(state, evidence=evidence), policy, j, now, arms)
    return Looked(new, event, j)
