"""``splitway audit query|verify|export|report``: the audit log through the admin API.

- ``query``: a table of SEQ/TS/TYPE/ACTOR/RESOURCE (``--json``: the API's page, or every
  page with ``--all``); ``--limit`` is the page size, ``--cursor`` resumes.
- ``verify``: exit 0 when the chain is intact, 1 when it is broken, printing the first
  bad event, the reason and the event as stored (a row that is not a well-formed event
  comes back as stored, marked ``unreadable``).
- ``export --format json|jsonl|yaml|csv [-o FILE]``: streamed to the file (written to a
  temporary name and renamed when complete, so an interrupted export never looks whole)
  or to stdout.
- ``report [--since] [--until]``: the compliance report as Markdown (``--json``: as
  the API returns it).
- ``rotate-key``: offline, against the state store (:mod:`control.cli_audit_key`).

Exit codes: 0 ok, 1 the operation failed (broken chain, refused, unreachable), 2 bad
input: a date that is not ``YYYY-MM-DD`` or an RFC 3339 time names its option, and the
API's 422s name their field. Dates without an offset are UTC.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp

from control import cli_audit_key
from control.audit import parse_cli_time
from control.compliance_markdown import render_markdown
from proxy.admin_client import ClientFailure
from proxy.cliutil import Parser, UsageError, add_client_options, client, print_json, print_table
from proxy.errors import InvalidInputError

FORMATS = ("json", "jsonl", "yaml", "csv")


def _add_filters(p: argparse.ArgumentParser, *, all_filters: bool = True) -> None:
    if all_filters:
        p.add_argument("--type", help="event type or family prefix, e.g. rollout.")
        p.add_argument("--actor", help="who caused the event")
        p.add_argument("--resource", help="exact resource, e.g. route/sentiment")
        p.add_argument("--severity", choices=("info", "warning", "critical"))
    p.add_argument("--since", help="YYYY-MM-DD or RFC 3339 time, inclusive")
    p.add_argument("--until", help="YYYY-MM-DD or RFC 3339 time, exclusive")


def _params(args: argparse.Namespace) -> dict[str, str]:
    """The filters given on the command line as query parameters; dates are checked here."""
    params: dict[str, str] = {}
    for name in ("type", "actor", "resource", "severity"):
        value = getattr(args, name, None)
        if value is not None:
            params[name] = value
    for name in ("since", "until"):
        value = getattr(args, name)
        if value is not None:
            try:
                params[name] = parse_cli_time(value, name)
            except InvalidInputError:
                raise UsageError(f"splitway audit {args.audit_command}: --{name}: {value!r} is "
                                 "not a date (YYYY-MM-DD) or RFC 3339 time") from None
    return params


def cmd_query(args: argparse.Namespace) -> int:
    params = _params(args)
    if not 1 <= args.limit <= 1000:
        raise UsageError("splitway audit query: --limit must be 1..1000")
    params["limit"] = str(args.limit)
    if args.newest_first:
        params["order"] = "desc"
    api, cursor = client(args), args.cursor
    events: list[dict[str, Any]] = []
    while True:
        page = api.call("GET", "/api/v1/audit",
                        params={**params, **({"cursor": cursor} if cursor else {})})
        events += page["events"]
        cursor = page["next_cursor"]
        if cursor is None or not args.all:
            break
    if args.json:
        print_json({"events": events, "next_cursor": cursor})
        return 0
    print_table([(e.get("seq"), e.get("ts"), _type_cell(e), e.get("actor"), e.get("resource"))
                 for e in events], ("SEQ", "TS", "TYPE", "ACTOR", "RESOURCE"))
    if cursor is not None:
        print(f"(more events: --cursor {cursor}, or --all)", file=sys.stderr)
    return 0


def _type_cell(event: dict[str, Any]) -> str:
    """The TYPE cell; a row that is not a well-formed event says so (tampering)."""
    if event.get("unreadable"):
        return f"UNREADABLE({str(event.get('type'))[:40]}): {event['unreadable']}"
    return str(event.get("type"))


def cmd_verify(args: argparse.Namespace) -> int:
    api = client(args)
    result = api.call("GET", "/api/v1/audit/verify")
    bad = result.get("first_bad_event")
    event = _event(api, bad) if bad else None
    if args.json:
        print_json({**result, "event": event})
    elif result["ok"]:
        print(f"audit chain ok: {result['checked']} events verified")
    else:
        print(f"audit chain BROKEN: first bad event {bad} "
              f"({result['checked']} events checked)")
        if result.get("reason"):
            print(f"reason: {result['reason']}")
        if event is not None:
            print(json.dumps(event, indent=2, sort_keys=True))
    return 0 if result["ok"] else 1


def _event(api: Any, event_id: str) -> dict[str, Any] | None:
    """The stored event named ``event_id`` (``evt-<seq>``), if it can still be read."""
    _, _, num = event_id.partition("-")
    if not num.isdigit():
        return None
    try:
        page = api.call("GET", "/api/v1/audit",
                        params={"cursor": str(int(num) - 1), "limit": "1"})
    except ClientFailure:  # e.g. the row is too damaged to read
        return None
    found = [e for e in page["events"] if e.get("id") == event_id]
    return found[0] if found else None


def cmd_export(args: argparse.Namespace) -> int:
    params = {**_params(args), "format": args.format}
    out: Path | None = args.output
    if out is None:
        asyncio.run(_download(args, params, sys.stdout.buffer))
        sys.stdout.flush()
        return 0
    tmp = out.with_name(f".{out.name}.part")
    try:
        with tmp.open("wb") as f:
            asyncio.run(_download(args, params, f))
        os.replace(tmp, out)
    except OSError as exc:
        raise ClientFailure(f"{out}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    print(f"exported to {out}", file=sys.stderr)
    return 0


async def _download(args: argparse.Namespace, params: dict[str, str], sink: IO[bytes]) -> None:
    """Stream ``GET /api/v1/audit/export`` into ``sink``; failures as :class:`ClientFailure`."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = args.admin_url.rstrip("/") + "/api/v1/audit/export"
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=60)
        ) as session, session.get(url, params=params, headers=headers) as resp:
            if resp.status >= 400:
                text = await resp.text()
                try:
                    data = json.loads(text)
                except ValueError:
                    data = {"detail": text}
                field = f" ({data['field']})" if data.get("field") else ""
                raise ClientFailure(f"{resp.status} {data.get('detail')}{field}",
                                    2 if resp.status in (400, 422) else 1)
            async for chunk in resp.content.iter_chunked(64 * 1024):
                sink.write(chunk)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise ClientFailure(f"the export was cut short: {exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ClientFailure(f"cannot reach the admin API at {args.admin_url}: "
                            f"{exc or type(exc).__name__}") from exc


def cmd_report(args: argparse.Namespace) -> int:
    report = client(args).call("GET", "/api/v1/reports/compliance", params=_params(args))
    if args.json:
        print_json(report)
    else:
        print(render_markdown(report), end="")
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``splitway audit ...``."""
    audit = sub.add_parser("audit", help="the audit log: query, verify, export, report")
    verbs = audit.add_subparsers(dest="audit_command", required=True, parser_class=Parser)

    p = verbs.add_parser("query", help="audit events matching filters")
    add_client_options(p)
    _add_filters(p)
    p.add_argument("--limit", type=int, default=100, help="events per page (1..1000)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.add_argument("--newest-first", action="store_true")
    p.set_defaults(func=cmd_query)

    p = verbs.add_parser("verify", help="verify the hash chain (exit 1 when broken)")
    add_client_options(p)
    p.set_defaults(func=cmd_verify)

    p = verbs.add_parser("export", help="export events as json, jsonl, yaml or csv")
    add_client_options(p)
    _add_filters(p)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("report", help="compliance report for a period (Markdown)")
    add_client_options(p)
    _add_filters(p, all_filters=False)
    p.set_defaults(func=cmd_report)

    cli_audit_key.register(verbs)
