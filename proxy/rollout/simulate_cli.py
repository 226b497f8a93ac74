"""``splitway rollout simulate``: run a route's rollout policy many times on synthetic
traffic before going live (see :mod:`proxy.rollout.simulate` and ``docs/rollouts.md``).

Numbers are parsed here rather than by argparse, so that a bad one is a single line naming
the option (argparse would print its usage first); exit 2 either way. The simulator (numpy,
scipy, the judge) is imported when the command runs, not when ``splitway`` builds its parser.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING, Any

from proxy.cliutil import UsageError, add_config, print_json, print_table
from proxy.config_load import load_settings_file

if TYPE_CHECKING:
    from proxy.rollout.simulate import Scenario, Summary

PROG = "splitway rollout simulate"
MAX_RUNS = 1_000_000
TICK_S = 0.5  # proxy.rollout.controller.TICK_S (a test checks they agree)

# option -> (default, lowest, lowest allowed?, highest or None, what it must be)
_NUMBERS: dict[str, tuple[str, float, bool, float | None, str]] = {
    "--baseline-error": ("0.01", 0.0, True, 1.0, "an error rate between 0 and 1"),
    "--candidate-error": ("0.01", 0.0, True, 1.0, "an error rate between 0 and 1"),
    "--baseline-latency-ms": ("50", 0.0, False, None, "a median latency above 0 ms"),
    "--latency-sigma": ("0.3", 0.0, False, None, "a lognormal sigma above 0"),
    "--candidate-latency-scale": ("1.0", 0.0, False, None, "a factor above 0"),
    "--candidate-latency-add-ms": ("0", 0.0, True, None, "a latency of 0 ms or more"),
    "--rps": ("200", 0.0, False, 1e6, "a request rate above 0 and at most 1e6 per second"),
}

_HELP = {
    "--baseline-error": "the baseline's error rate, 0..1",
    "--candidate-error": "the candidate's error rate, 0..1",
    "--baseline-latency-ms": "median latency in ms (lognormal), both arms before scaling",
    "--latency-sigma": "the lognormal's sigma, > 0",
    "--candidate-latency-scale": "the candidate's latency is the baseline's times this",
    "--candidate-latency-add-ms": "... plus this many ms",
    "--rps": "the route's total request rate, split by the rollout's weights",
}


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def _number(option: str, text: str) -> float:
    _, low, closed, high, what = _NUMBERS[option]
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    inside = (x >= low if closed else x > low) and (high is None or x <= high)
    if not (math.isfinite(x) and inside):  # NaN is neither inside nor finite
        raise UsageError(f"{PROG}: {option} {text!r} is not {what}")
    return x


def _integer(option: str, text: str, low: int, high: int) -> int:
    try:
        n = int(text)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise UsageError(f"{PROG}: {option} {text!r} is not a whole number from {low} to "
                         f"{high:,}")
    return n


def _number_at_least(option: str, text: str, low: float) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x >= low):
        raise UsageError(f"{PROG}: {option} {text!r} is not a number of seconds >= {low:g}")
    return x


def _scenario(x: dict[str, float]) -> Scenario:
    from proxy.rollout.simulate import Scenario
    from proxy.rollout.traffic import ArmModel

    median, sigma = x["--baseline-latency-ms"], x["--latency-sigma"]
    return Scenario(
        x["--rps"],
        ArmModel(x["--baseline-error"], median, sigma),
        ArmModel(x["--candidate-error"], median, sigma, x["--candidate-latency-scale"],
                 x["--candidate-latency-add-ms"]))


def cmd_simulate(args: argparse.Namespace) -> int:
    # Everything the user typed is checked before the simulator is imported (~1 s).
    numbers = {option: _number(option, getattr(args, _dest(option))) for option in _NUMBERS}
    runs = _integer("--runs", args.runs, 1, MAX_RUNS)
    seed = _integer("--seed", args.seed, 0, 2**63 - 1)
    every = None
    if args.look_every is not None:
        every = _number_at_least("--look-every", args.look_every, TICK_S)
    if args.config is None:
        raise UsageError(f"{PROG}: -c FILE (or SPLITWAY_CONFIG) is required")
    settings = load_settings_file(args.config, os.environ)
    routes = {r.name: r for r in settings.routes}
    route = routes.get(args.route)
    if route is None:
        raise UsageError(f"{PROG}: {args.config} has no route {args.route!r} "
                         f"(routes: {', '.join(routes) or 'none'})")
    if route.rollout is None:
        raise UsageError(f"{PROG}: route {args.route!r} has no rollout policy to simulate")
    from proxy.rollout.simulate import simulate

    try:
        summary = simulate(route.name, route.rollout, _scenario(numbers), runs, seed, every)
    except ValueError as exc:
        raise UsageError(f"{PROG}: route {args.route!r}: {exc}") from None
    if args.json:
        print_json(summary.to_json())
    else:
        _print(summary)
    return 0


def _print(s: Summary) -> None:
    from proxy.rollout.simulate import Outcome

    doc = s.to_json()
    sc = doc["scenario"]
    print(f"{s.runs} simulated rollouts of route {s.route}'s policy at {sc['rps']:g} req/s "
          f"(seed {s.seed})")
    print(f"  baseline   {sc['baseline_error']:.2%} errors, latency lognormal median "
          f"{sc['baseline_latency_ms']:g} ms, sigma {sc['latency_sigma']:g}")
    print(f"  candidate  {sc['candidate_error']:.2%} errors, latency x "
          f"{sc['candidate_latency_scale']:g} + {sc['candidate_latency_add_ms']:g} ms")
    rows = []
    for o in Outcome:
        low, high = doc[f"{o}_ci95"]
        rows.append((str(o).replace("_", " "), doc[str(o)], f"{doc[f'{o}_rate']:.1%}",
                     f"{low:.1%} .. {high:.1%}"))
    print_table(rows, ("OUTCOME", "RUNS", "RATE", "95% CI (WILSON)"))
    median = doc["median_seconds_to_decision"]
    print(f"median time to a decision: {'-' if median is None else f'{median:g} s'}")
    if doc["rolled_back_by"]:
        by = ", ".join(f"{rule} {n}" for rule, n in doc["rolled_back_by"].items())
        print(f"rolled back by: {by}")


def add_parser(verbs: argparse._SubParsersAction[Any]) -> None:
    """``simulate`` under ``splitway rollout``."""
    p = verbs.add_parser("simulate", help="run a route's rollout policy on simulated "
                                          "traffic: how often it promotes or rolls back")
    add_config(p)
    p.add_argument("--route", required=True, help="the route whose rollout policy to run")
    for option, (default, *_rest) in _NUMBERS.items():
        p.add_argument(option, default=default, metavar="X",
                       help=f"{_HELP[option]} (default {default})")
    p.add_argument("--runs", default="1000", metavar="N", help="rollouts (default 1000)")
    p.add_argument("--seed", default="1", metavar="N", help="random seed (default 1)")
    p.add_argument("--look-every", default=None, metavar="S",
                   help="also look every S seconds (>= the controller's 0.5 s tick; default: "
                        "at the judge times and wherever the critical rule could fire)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_simulate)
