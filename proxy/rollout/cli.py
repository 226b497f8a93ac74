"""``splitway rollout start|status|pause|resume|promote|rollback|abort ROUTE`` and
``splitway rollout simulate`` (:mod:`proxy.rollout.simulate_cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from proxy.cliutil import Parser, UsageError, add_client_options, client, print_json, print_table
from proxy.rollout import simulate_cli

_MARK = {True: "ok", False: "FAIL", None: "hold"}


def _print(doc: dict[str, Any]) -> None:
    weights = ", ".join(f"{v}={w:g}" for v, w in doc["weights"].items())
    version = f" ({doc['version']})" if doc.get("version") else ""
    print(f"rollout {doc['id']} on {doc['route']}: {doc['strategy']} {doc['baseline']} -> "
          f"{doc['candidate']}{version}")
    print(f"  state {doc['state']}  step {doc['step']} of {doc['steps']}  weights {weights}")
    if doc.get("reason"):
        print(f"  reason: {doc['reason']}")
    rows = []
    for a in doc["analyses"][-10:]:
        checks = "; ".join(f"{c['name']}={_MARK[c['passed']]}" for c in a["checks"])
        cand = a.get("candidate") or {}
        rows.append((a["at"], a["step"], a["decision"], cand.get("requests", "-"),
                     f"{cand.get('error_rate', 0):.2%}" if cand else "-", checks))
    if rows:
        print_table(rows, ("AT", "STEP", "DECISION", "CAND REQ", "CAND ERR", "CHECKS"))


def cmd_start(args: argparse.Namespace) -> int:
    if args.force and not args.justification:
        raise UsageError("splitway rollout start: --force needs --justification")
    body: dict[str, Any] = {"force": args.force}
    for key in ("candidate", "version", "strategy", "justification"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    doc = client(args).call("POST", f"/api/v1/routes/{args.route}/rollouts", body)
    print_json(doc) if args.json else _print(doc)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    doc = client(args).call("GET", f"/api/v1/routes/{args.route}/rollout")
    print_json(doc) if args.json else _print(doc)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if getattr(args, "reason", None):
        body["reason"] = args.reason
    if getattr(args, "to_end", False):
        body["to_end"] = True
    doc = client(args).call("POST", f"/api/v1/routes/{args.route}/rollout/{args.action}", body)
    print_json(doc) if args.json else _print(doc)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    rollout = sub.add_parser("rollout", help="canary, blue-green and rolling rollouts")
    verbs = rollout.add_subparsers(dest="rollout_command", required=True, parser_class=Parser)
    p = verbs.add_parser("start", help="start a rollout on ROUTE")
    add_client_options(p)
    p.add_argument("route")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--candidate", help="the candidate variant (default: the route's policy)")
    who.add_argument("--version", help="a registered MODEL@SEMVER")
    p.add_argument("--strategy", choices=["canary", "blue_green", "rolling"])
    p.add_argument("--force", action="store_true", help="start a quarantined candidate")
    p.add_argument("--justification", help="why (required with --force; audited)")
    p.set_defaults(func=cmd_start)
    p = verbs.add_parser("status", help="state, step, weights and analyses")
    add_client_options(p)
    p.add_argument("route")
    p.set_defaults(func=cmd_status)
    for action, text in (("pause", "stop judging and stepping"), ("resume", "carry on"),
                         ("promote", "next step without judging (--to-end: finish)"),
                         ("rollback", "back to the baseline now"),
                         ("abort", "stop, back to the baseline, no quarantine")):
        p = verbs.add_parser(action, help=text)
        add_client_options(p)
        p.add_argument("route")
        if action == "promote":
            p.add_argument("--to-end", action="store_true")
        if action in ("rollback", "abort"):
            p.add_argument("--reason")
        p.set_defaults(func=cmd_gate, action=action)
    simulate_cli.add_parser(verbs)
