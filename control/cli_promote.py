"""``splitway promote request|approve|reject|comment|cancel|list|show`` (contract §10).

``request`` prints the new promotion's id (and, on stderr, where it stands), so
``id=$(splitway promote request sentiment 1.2.0 --stage production --justification ...)``
works in a script. Reviews print the request's state afterwards, e.g.
``prm-...: pending, 1/2 approvals`` or ``prm-...: approved; sentiment@1.2.0 is now
production``. Registered from :func:`control.cli_models.register`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from control.cli_models import add_command, local_check, version_path
from control.promotion_record import check_promotion_id
from control.versions import check_name
from proxy.cliutil import (
    Parser,
    UsageError,
    client,
    print_json,
    print_table,
)
from proxy.errors import InvalidInputError

STATES = ("pending", "approved", "rejected", "cancelled")


def _pid(args: argparse.Namespace) -> str:
    try:
        return check_promotion_id(args.id)
    except InvalidInputError as exc:
        raise UsageError(exc.detail) from None


def _status(doc: dict[str, Any]) -> str:
    head = f"{doc['id']}: {doc['state']}"
    if doc["state"] == "pending":
        return f"{head}, {doc['approvals']}/{doc['required']} approvals"
    if doc["state"] == "approved":
        return f"{head}; {doc['model']}@{doc['version']} is now {doc['to_stage']}"
    return f"{head} by {doc['closed_by']}"


def _print(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if args.json:
        print_json(doc)
    else:
        print(_status(doc))
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    doc = client(args).call("POST", version_path(args) + "/promotions",
                            {"stage": args.stage, "justification": args.justification})
    if args.json:
        print_json(doc)
    else:
        print(doc["id"])
        print(_status(doc), file=sys.stderr)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    body = {"comment": args.comment} if args.comment else None
    action = args.promote_command
    return _print(args, client(args).call("POST", f"/api/v1/promotions/{_pid(args)}/{action}",
                                          body))


def cmd_comment(args: argparse.Namespace) -> int:
    doc = client(args).call("POST", f"/api/v1/promotions/{_pid(args)}/comment",
                            {"comment": args.text})
    if args.json:
        print_json(doc)
    else:
        print(f"{doc['id']}: comment #{len(doc['comments'])} added")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return _print(args, client(args).call("POST", f"/api/v1/promotions/{_pid(args)}/cancel"))


def cmd_list(args: argparse.Namespace) -> int:
    params = {"state": args.state or "", "model": args.model or ""}
    if args.model:
        local_check(check_name, args.model, "model")
    data = client(args).call("GET", "/api/v1/promotions",
                             params={k: v for k, v in params.items() if v})
    if args.json:
        print_json(data)
        return 0
    print_table([(p["id"], f"{p['model']}@{p['version']}", p["from_stage"], p["to_stage"],
                  p["state"], f"{p['approvals']}/{p['required']}", p["requested_by"],
                  p["requested_at"][:19]) for p in data["promotions"]],
                ("ID", "VERSION", "FROM", "TO", "STATE", "APPROVALS", "REQUESTED_BY", "AT"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    doc = client(args).call("GET", f"/api/v1/promotions/{_pid(args)}")
    if args.json:
        print_json(doc)
        return 0
    print(_status(doc))
    print(f"  {doc['model']}@{doc['version']}: {doc['from_stage']} -> {doc['to_stage']}")
    print(f"  requested by {doc['requested_by']} at {doc['requested_at']}")
    print(f"  justification: {doc['justification']}")
    for r in doc["reviews"]:
        note = f": {r['comment']}" if r["comment"] else ""
        print(f"  {r['decision']}d by {r['reviewer']} at {r['at']}{note}")
    for c in doc["comments"]:
        print(f"  #{c['seq']} {c['author']} at {c['at']}: {c['body']}")
    return 0


def register_promote(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``promote``."""
    promote = sub.add_parser("promote", help="promotion requests and approvals").add_subparsers(
        dest="promote_command", required=True, parser_class=Parser)

    def cmd(name: str, func: Any, help: str, *positional: str) -> argparse.ArgumentParser:
        return add_command(promote, name, func, help, *positional)

    p = cmd("request", cmd_request, "request a promotion; prints its id", "name", "version")
    p.add_argument("--stage", required=True, choices=("staging", "production", "archived"))
    p.add_argument("--justification", required=True)
    for action in ("approve", "reject"):
        p = cmd(action, cmd_review, f"{action} a promotion (approvers)", "id")
        p.add_argument("--comment")
    cmd("comment", cmd_comment, "comment on a promotion", "id", "text")
    cmd("cancel", cmd_cancel, "cancel your pending request", "id")
    p = cmd("list", cmd_list, "promotions, newest first")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--model")
    cmd("show", cmd_show, "one promotion with its reviews and comments", "id")
