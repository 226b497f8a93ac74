"""The ``splitway`` command: the only place that reads argv and the environment.

Exit codes: 0 ok, 1 operation failed, 2 usage or input error. Client commands talk to
the admin API (``--admin-url`` / ``SPLITWAY_ADMIN_URL``, ``--token`` / ``SPLITWAY_TOKEN``)
and print readable tables, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from control.audit.keys import AuditKeyError
from proxy.admin_client import ClientFailure
from proxy.cliutil import (
    Parser,
    UsageError,
    add_client_options,
    add_config,
    client,
    parse_pairs,
    print_json,
    print_table,
)
from proxy.config import Settings
from proxy.config_load import load_settings_file
from proxy.errors import ConfigError, StoreError

#: Modules adding subcommands with ``register(sub)``, after the data plane's own.
COMMAND_MODULES: tuple[str, ...] = (
    "control.cli_models",
    "control.cli_audit",
    "proxy.rollout.cli",
    "control.cli_ci",
    "proxy.experiment.cli",
)

Command = Callable[[argparse.Namespace], int]


def load_config(args: argparse.Namespace) -> Settings:
    if args.config is None:
        raise UsageError(f"splitway {args.command}: -c FILE (or SPLITWAY_CONFIG) is required")
    return load_settings_file(args.config, os.environ)


# -- check / run ----------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from proxy.config_files import load_config_files

    settings = load_config(args)
    if not args.no_files:
        load_config_files(settings)  # what `run` reads: TLS certificate and key, tokens
    print(f"{args.config}: ok")
    return 0


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def cmd_run(args: argparse.Namespace) -> int:
    from proxy.server import run_workers, serve

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_config(args)
    if args.workers < 1:
        raise UsageError("splitway run: --workers must be >= 1")
    if args.worker is None:  # the files named in the config, before any listener or worker
        from proxy.config_files import load_config_files

        load_config_files(settings)
    if args.workers > 1 and args.worker is None:
        if any(a.port == 0 for a in settings.listen_addresses):
            raise UsageError("splitway run: --workers needs a fixed listen port")
        return run_workers(["run", "-c", str(args.config), "--log-level", args.log_level],
                           args.workers)
    try:
        return _run_loop(serve(settings, config_path=args.config.resolve(), env=os.environ,
                               worker=args.worker or 0, reuse_port=args.worker is not None))
    except OSError as exc:  # e.g. the address is in use
        print(f"splitway run: {exc}", file=sys.stderr)
        return 1
    except AuditKeyError as exc:  # the key given is not the one the audit chain needs
        print(f"splitway run: {exc.detail}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"splitway run: state store {settings.state!r}: {exc.detail}", file=sys.stderr)
        return 1


# -- routes / weights -----------------------------------------------------------------------
def cmd_routes(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/api/v1/routes")
    if args.json:
        print_json(data)
        return 0
    rows = [(r["name"], r["split"]["strategy"],
             ", ".join(f"{v}={w:g}" for v, w in r["weights"].items()), r["weights_source"])
            for r in data["routes"]]
    print_table(rows, ("ROUTE", "SPLIT", "WEIGHTS", "SOURCE"))
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    weights = parse_pairs(args.pairs)
    data = client(args).call("PUT", f"/api/v1/routes/{args.route}/weights",
                             {"weights": weights})
    if args.json:
        print_json(data)
    else:
        print(f"{args.route}: " + ", ".join(f"{v}={w:g}" for v, w in data["weights"].items()))
    return 0


# -- token ----------------------------------------------------------------------------------
def cmd_shadow_report(args: argparse.Namespace) -> int:
    r = client(args).call("GET", f"/api/v1/routes/{args.route}/shadow")
    if args.json:
        print_json(r)
        return 0
    lo, hi = r["mismatch_rate_ci95"]
    lat, paired = r["latency_ms"], r["paired_latency_ms"]
    print(f"route {r['route']} -> shadow {r['backend']}")
    print(f"  sent {r['sent']}  dropped {r['dropped']}  skipped {r['skipped']}  "
          f"errors {r['errors']}")
    print(f"  compared {r['compared']}  matched {r['matched']}  mismatched {r['mismatched']}  "
          f"mismatch rate {r['mismatch_rate']:.2%} (95% CI {lo:.2%}..{hi:.2%})")
    for side in ("primary", "shadow"):
        q = lat[side]
        print(f"  {side:>7} p50 {q['p50']:.1f} ms  p95 {q['p95']:.1f} ms  p99 {q['p99']:.1f} ms")
    print(f"  paired: shadow - primary median {paired['median_diff']:+.1f} ms over "
          f"{paired['n']} requests, shadow slower in {paired['shadow_slower_fraction']:.0%} "
          f"(Wilcoxon p={paired['wilcoxon_p_value']:.3g})")
    for m in r["recent_mismatches"][:5]:
        print(f"  mismatch {m['request_id']}: {m['detail']}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from control.auth import Role, create_token

    path: Path | None = args.tokens_file
    if path is None and args.config is not None:
        path = load_config(args).admin.tokens_file  # made absolute by the loader
    if path is None:
        raise UsageError("splitway token create: give --tokens-file FILE or -c CONFIG "
                         "with admin.tokens_file")
    try:
        token = create_token(path, args.user, [Role(r) for r in args.role])
    except ValueError as exc:
        raise UsageError(f"splitway token create: {exc}") from None
    except ConfigError as exc:
        raise UsageError("\n".join(f"{path}: {p}" for p in exc.problems)) from None
    except OSError as exc:
        print(f"splitway token create: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(token)
    print(f"(shown once; its SHA-256 was added to {path})", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    try:
        return _run_loop(run_demo(duration_s=args.duration, rate=args.rate))
    except KeyboardInterrupt:
        print("\nsplitway demo: stopped", file=sys.stderr)
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="splitway", description="traffic splitting for ML model versions")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("check", help="validate a config file and the files it names")
    add_config(p)
    p.add_argument("--no-files", action="store_true",
                   help="skip the TLS and tokens files (e.g. in CI, where they do not exist)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="serve the data plane and the admin API")
    add_config(p)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the data port")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default=os.environ.get("SPLITWAY_LOG_LEVEL", "INFO"))
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="sample model servers, the proxy and a live canary")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("routes", help="routes with their live weights")
    add_client_options(p)
    p.set_defaults(func=cmd_routes)

    p = sub.add_parser("weights", help="set a route's weights: ROUTE VARIANT=W ...")
    add_client_options(p)
    p.add_argument("route")
    p.add_argument("pairs", nargs="+", metavar="VARIANT=WEIGHT")
    p.set_defaults(func=cmd_weights)

    shadow = sub.add_parser("shadow", help="shadow traffic").add_subparsers(
        dest="shadow_command", required=True, parser_class=Parser)
    p = shadow.add_parser("report", help="how the shadow version compares")
    add_client_options(p)
    p.add_argument("route")
    p.set_defaults(func=cmd_shadow_report)

    token = sub.add_parser("token", help="admin API tokens").add_subparsers(
        dest="token_command", required=True, parser_class=Parser)
    p = token.add_parser("create", help="make a token; print it once, store its hash")
    add_config(p)
    p.add_argument("--tokens-file", type=Path, default=None)
    p.add_argument("--user", required=True)
    p.add_argument("--role", action="append", required=True,
                   choices=["viewer", "operator", "approver", "admin"],
                   help="repeatable")
    p.set_defaults(func=cmd_token_create)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ConfigError as exc:
        where = f"{args.config}: " if getattr(args, "config", None) else ""
        for problem in exc.problems:
            print(f"{where}{problem}", file=sys.stderr)
        return 2
    except ClientFailure as exc:
        print(f"splitway {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
