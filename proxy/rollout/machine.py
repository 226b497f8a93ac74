"""The rollout state machine (pure): frozen states, transitions as functions of the clock.

A rollout moves a route from ``baseline`` to ``candidate``:

* ``canary`` — numeric ``steps`` are the candidate's weight; a ``"pause"`` step waits for
  ``promote``; reaching a 100 % step is success. Each step below 100 % is judged on the
  evidence accumulated since the rollout started (:mod:`proxy.rollout.judge`, folded look by
  look by :func:`proxy.rollout.look.look`). A **fail** rolls back at the look that shows it
  (the tests are valid at any look); a **pass** advances no sooner than ``step_interval_s``
  after the step began; a **hold** waits, and a step still inconclusive after
  ``progress_deadline_s`` does what ``on_inconclusive`` says: ``pause`` (the default:
  status paused, event ``inconclusive``, no quarantine) or ``rollback`` (rolled back,
  event ``inconclusive``, no quarantine either).
* ``rolling`` — the same steps, judged on health only (critical and absolute error rate).
* ``blue_green`` — the candidate takes only pinned and shadow traffic (weight 0) while it is
  judged in health mode; on a pass it takes 100 % at once. The baseline keeps its pool, so
  ``rollback`` after the switch is instant.
* an optional **shadow phase** comes first: the candidate's mirrored answers must agree
  (mismatch and error rates under the limits) before it takes live traffic.

A critical breach rolls back on the next tick whatever the step's timer says. The shadow
phase's threshold judge acts only at ``next_judge_at``. A finished
rollout (succeeded, rolled back, aborted) leaves the route at candidate 100 % or baseline
100 %. All times are UNIX seconds from an injected clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from proxy.config import Rollout
from proxy.rollout.analysis import Judgement, Verdict
from proxy.rollout.evidence import Evidence

MAX_ANALYSES = 100


class Status(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE = frozenset({Status.PROGRESSING, Status.PAUSED})
SHADOW_STEP = -1


class Event(StrEnum):
    """What a transition did; each is audited and announced (``rollout.<value>``)."""

    STARTED = "started"
    STEP = "step"
    PAUSED = "paused"
    RESUMED = "resumed"
    PROMOTED = "promoted"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    HOLD = "hold"
    INCONCLUSIVE = "inconclusive"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RolloutState:
    id: str
    route: str
    strategy: str
    baseline: str
    candidate: str
    steps: tuple[float | str, ...]
    status: Status
    step: int
    weights: dict[str, float]
    step_started_at: float
    next_judge_at: float
    started_at: float
    holding_since: float | None = None
    failed_checks: int = 0
    reason: str | None = None
    version: str | None = None
    candidate_backend: str | None = None
    analyses: tuple[dict[str, Any], ...] = field(default=())
    evidence: Evidence = field(default_factory=Evidence)  # the judge's input, whole rollout

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["status"] = str(self.status)
        data["steps"] = list(self.steps)
        data["weights"] = dict(self.weights)
        data["analyses"] = list(self.analyses)
        data["evidence"] = self.evidence.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        """Read :meth:`to_json`'s shape; a state stored before evidence was kept resumes
        with empty evidence."""
        data = dict(data)
        data["status"] = Status(data["status"])
        data["steps"] = tuple(data["steps"])
        data["analyses"] = tuple(data.get("analyses", ()))
        data["evidence"] = Evidence.from_json(data.get("evidence"))
        return cls(**data)

    def document(self) -> dict[str, Any]:
        """The contract §6 shape of ``GET /api/v1/routes/{route}/rollout``."""
        return {"route": self.route, "id": self.id, "strategy": self.strategy,
                "state": str(self.status), "baseline": self.baseline,
                "candidate": self.candidate, "step": self.step, "steps": list(self.steps),
                "weights": dict(self.weights), "reason": self.reason,
                "version": self.version, "candidate_backend": self.candidate_backend,
                "failed_checks": self.failed_checks, "started_at": iso(self.started_at),
                "analyses": list(self.analyses)}


def _weights(baseline: str, candidate: str, candidate_pct: float) -> dict[str, float]:
    return {baseline: 100.0 - candidate_pct, candidate: candidate_pct}


def step_weight(policy: Rollout, step: int) -> float:
    """The candidate's weight at ``step`` (a pause keeps the previous numeric step's)."""
    if step == SHADOW_STEP or policy.strategy == "blue_green":
        return 0.0
    for s in reversed(policy.steps[: step + 1]):
        if not isinstance(s, str):
            return float(s)
    return 0.0


def start(rollout_id: str, route: str, policy: Rollout, now: float, *,
          version: str | None = None, candidate_backend: str | None = None,
          candidate: str | None = None) -> RolloutState:
    cand = candidate or policy.candidate
    step = SHADOW_STEP if policy.shadow_phase is not None else 0
    return RolloutState(
        id=rollout_id, route=route, strategy=policy.strategy, baseline=policy.baseline,
        candidate=cand, steps=tuple(policy.steps), status=Status.PROGRESSING, step=step,
        weights=_weights(policy.baseline, cand, step_weight(policy, step)),
        step_started_at=now, next_judge_at=now + policy.step_interval_s, started_at=now,
        version=version, candidate_backend=candidate_backend,
    )


def _record(state: RolloutState, j: Judgement, now: float,
            arms: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    entry = {"at": iso(now), "step": state.step, "decision": str(j.verdict),
             "baseline": arms.get("baseline", {}), "candidate": arms.get("candidate", {}),
             "checks": [c.to_json() for c in j.checks]}
    return (*state.analyses, entry)[-MAX_ANALYSES:]


def _end(state: RolloutState, status: Status, reason: str | None, now: float,
         **changes: Any) -> RolloutState:
    pct = 100.0 if status is Status.SUCCEEDED else 0.0
    return dataclasses.replace(state, status=status, reason=reason,
                               weights=_weights(state.baseline, state.candidate, pct),
                               next_judge_at=now, **changes)


def _enter_step(state: RolloutState, policy: Rollout, step: int, now: float) -> RolloutState:
    # Reaching 100 % is the promotion itself: no baseline traffic is left to judge against.
    if (step >= len(policy.steps) or policy.strategy == "blue_green"
            or step_weight(policy, step) >= 100):
        return _end(state, Status.SUCCEEDED, None, now, step=min(step, len(policy.steps) - 1))
    status = Status.PAUSED if policy.steps[step] == "pause" else Status.PROGRESSING
    return dataclasses.replace(
        state, step=step, status=status, holding_since=None, step_started_at=now,
        next_judge_at=now + policy.step_interval_s, evidence=state.evidence.new_step(),
        weights=_weights(state.baseline, state.candidate, step_weight(policy, step)))


def on_tick(state: RolloutState, policy: Rollout, j: Judgement, now: float,
            arms: dict[str, dict[str, Any]] | None = None) -> tuple[RolloutState, Event | None]:
    """Apply one judgement; returns the new state and what happened (``None``: nothing
    worth recording)."""
    if state.status is not Status.PROGRESSING:
        return state, None
    arms = arms or {}
    if j.critical:
        rolled = _end(state, Status.ROLLED_BACK, f"critical: {j.reason}", now,
                      analyses=_record(state, j, now, arms), failed_checks=1)
        return rolled, Event.ROLLED_BACK
    # A live step's tests are anytime-valid: a fail counts at any look. The shadow phase's
    # thresholds are read only when the step's timer says so.
    live_fail = j.verdict is Verdict.FAIL and state.step != SHADOW_STEP
    if now < state.next_judge_at and not live_fail:
        return state, None
    analyses = _record(state, j, now, arms)
    if j.verdict is Verdict.FAIL:
        return _end(state, Status.ROLLED_BACK, j.reason, now, analyses=analyses,
                    failed_checks=1), Event.ROLLED_BACK
    if j.verdict is Verdict.PASS:
        nxt = _enter_step(dataclasses.replace(state, analyses=analyses), policy,
                          state.step + 1, now)
        event = {Status.SUCCEEDED: Event.SUCCEEDED, Status.PAUSED: Event.PAUSED}.get(
            nxt.status, Event.STEP)
        return nxt, event
    since = state.holding_since if state.holding_since is not None else state.step_started_at
    if now - since >= policy.progress_deadline_s:
        return _inconclusive(state, policy, j, now, analyses), Event.INCONCLUSIVE
    return dataclasses.replace(state, analyses=analyses, holding_since=since,
                               next_judge_at=now + policy.step_interval_s), Event.HOLD


def _inconclusive(state: RolloutState, policy: Rollout, j: Judgement, now: float,
                  analyses: tuple[dict[str, Any], ...]) -> RolloutState:
    """A step neither failed nor passed by its deadline: pause (wait for a person) or roll
    back, as ``on_inconclusive`` says; never quarantined (nothing was shown wrong)."""
    reason = f"inconclusive after {policy.progress_deadline_s:g} s: {j.reason}"
    if policy.on_inconclusive == "rollback":
        return _end(state, Status.ROLLED_BACK, reason, now, analyses=analyses)
    return dataclasses.replace(state, status=Status.PAUSED, reason=reason, analyses=analyses,
                               holding_since=None)


class InvalidTransition(Exception):
    """A manual gate that does not apply to the rollout's state."""


def pause(state: RolloutState, now: float) -> RolloutState:
    if state.status is not Status.PROGRESSING:
        raise InvalidTransition(f"cannot pause a rollout that is {state.status}")
    return dataclasses.replace(state, status=Status.PAUSED)


def resume(state: RolloutState, policy: Rollout, now: float) -> RolloutState:
    if state.status is not Status.PAUSED:
        raise InvalidTransition(f"cannot resume a rollout that is {state.status}")
    if state.step >= 0 and policy.steps[state.step] == "pause":
        return _enter_step(state, policy, state.step + 1, now)  # a pause step: go past it
    return dataclasses.replace(state, status=Status.PROGRESSING, step_started_at=now,
                               holding_since=None, reason=None,
                               next_judge_at=now + policy.step_interval_s)


def promote(state: RolloutState, policy: Rollout, now: float, *, to_end: bool = False,
            ) -> RolloutState:
    """Skip judging: the next step, or straight to success with ``to_end``."""
    if state.status not in ACTIVE:
        raise InvalidTransition(f"cannot promote a rollout that is {state.status}")
    target = len(policy.steps) if to_end else state.step + 1
    return _enter_step(dataclasses.replace(state, failed_checks=0), policy, target, now)


def rollback(state: RolloutState, now: float, reason: str) -> RolloutState:
    """Back to the baseline. A finished blue-green rollout may switch back too."""
    switch_back = state.status is Status.SUCCEEDED and state.strategy == "blue_green"
    if state.status not in ACTIVE and not switch_back:
        raise InvalidTransition(f"cannot roll back a rollout that is {state.status}")
    return _end(state, Status.ROLLED_BACK, reason, now)


def abort(state: RolloutState, now: float, reason: str) -> RolloutState:
    if state.status not in ACTIVE:
        raise InvalidTransition(f"cannot abort a rollout that is {state.status}")
    return _end(state, Status.ABORTED, reason, now)
