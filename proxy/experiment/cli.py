"""``splitway experiment report|plan|stop|conclude|list``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from proxy.cliutil import Parser, UsageError, add_client_options, client, print_json, print_table
from proxy.experiment.plot import render_svg


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _print_report(r: dict[str, Any]) -> None:
    print(f"experiment {r['name']} on route {r['route']}: {r['state']} "
          f"(control {r['control']})")
    rows = [(v, a["requests"], a["successes"], _pct(a["rate"]), a["latency_ms"]["p50"],
             a["latency_ms"]["p95"], a["latency_ms"]["p99"]) for v, a in r["variants"].items()]
    print_table(rows, ("VARIANT", "REQUESTS", "SUCCESSES", "RATE", "P50 MS", "P95 MS",
                       "P99 MS"))
    for v, c in r["comparisons"].items():
        lo, hi = c["ci95"]
        print(f"  {v} vs {r['control']}: diff {c['diff']:+.2%} (95% CI {lo:+.2%}..{hi:+.2%}), "
              f"relative {c['rel_diff']:+.1%}, p={c['p_value']:.3g}, "
              f"always-valid p={c['sequential_p_value']:.3g}, latency p="
              f"{c['latency_p_value']:.3g} -> {c['verdict']}")
    srm = r["srm"]
    flag = "SAMPLE RATIO MISMATCH: do not trust the comparison" if srm["flagged"] else "ok"
    print(f"  sample ratio: p={srm['p_value']:.3g} {flag}")


def cmd_report(args: argparse.Namespace) -> int:
    r = client(args).call("GET", f"/api/v1/experiments/{args.name}")
    if args.plot is not None:
        args.plot.write_text(render_svg(r["name"], r["control"], r.get("series", [])))
        print(f"wrote {args.plot}", file=sys.stderr)
    print_json(r) if args.json else _print_report(r)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    r = client(args).call("GET", "/api/v1/experiments")
    if args.json:
        print_json(r)
    else:
        print_table([(e["name"], e["route"], e["control"], e["state"], e["winner"] or "")
                     for e in r["experiments"]], ("NAME", "ROUTE", "CONTROL", "STATE", "WINNER"))
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    if args.action == "stop":
        r = client(args).call("POST", f"/api/v1/experiments/{args.name}/stop", {})
    else:
        r = client(args).call("POST", f"/api/v1/experiments/{args.name}/conclude",
                              {"winner": args.winner, "rollout": args.rollout})
    if args.json:
        print_json(r)
    else:
        print(f"experiment {args.name}: {r['state']}" +
              (f", winner {r['winner']}" if r.get("winner") else ""))
        if r.get("rollout"):
            print(f"rollout {r['rollout']['id']} of {args.winner} started on {r['route']}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from proxy.abstats import sample_size_per_arm

    if not 0 < args.baseline < 1 or not 0 < args.baseline + args.mde < 1 or args.mde == 0:
        raise UsageError("splitway experiment plan: need 0 < baseline < 1, mde != 0 and "
                         "0 < baseline + mde < 1")
    if not 0 < args.alpha < 1 or not 0 < args.power < 1:
        raise UsageError("splitway experiment plan: alpha and power are in (0, 1)")
    n = sample_size_per_arm(args.baseline, args.mde, alpha=args.alpha, power=args.power)
    if args.json:
        print_json({"baseline": args.baseline, "mde": args.mde, "alpha": args.alpha,
                    "power": args.power, "per_arm": n})
    else:
        print(f"{n} units per arm to detect {args.baseline:.2%} -> "
              f"{args.baseline + args.mde:.2%} with power {args.power:.0%} at alpha "
              f"{args.alpha:g} (two-sided)")
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    exp = sub.add_parser("experiment", help="A/B experiments")
    verbs = exp.add_subparsers(dest="experiment_command", required=True, parser_class=Parser)
    p = verbs.add_parser("report", help="counts, rates, tests, sample ratio")
    add_client_options(p)
    p.add_argument("name")
    p.add_argument("--plot", type=Path, help="also write the cumulative difference as SVG")
    p.set_defaults(func=cmd_report)
    p = verbs.add_parser("list", help="experiments and their states")
    add_client_options(p)
    p.set_defaults(func=cmd_list)
    p = verbs.add_parser("stop", help="stop counting")
    add_client_options(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_finish, action="stop")
    p = verbs.add_parser("conclude", help="conclude with a winner")
    add_client_options(p)
    p.add_argument("name")
    p.add_argument("--winner", required=True)
    p.add_argument("--rollout", action="store_true", help="start a rollout of the winner")
    p.set_defaults(func=cmd_finish, action="conclude")
    p = verbs.add_parser("plan", help="sample size per arm for a two-proportion test")
    p.add_argument("--baseline", type=float, required=True, help="control success rate")
    p.add_argument("--mde", type=float, required=True, help="absolute effect to detect")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
