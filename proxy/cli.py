"""The ``splitway`` command: the only place that reads argv and the environment.

Exit codes: 0 ok, 1 operation failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from proxy.config import Settings, load_settings_file
from proxy.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=os.environ.get("SPLITWAY_CONFIG"),
                   help="config file (default $SPLITWAY_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="splitway", description="traffic splitting for ML model versions")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = sub.add_parser("check", help="validate a config file")
    _add_config(check)
    run = sub.add_parser("run", help="serve the data plane and the admin API")
    _add_config(run)
    run.add_argument("--workers", type=int, default=1, help="processes sharing the data port")
    run.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--log-level", default=os.environ.get("SPLITWAY_LOG_LEVEL", "INFO"))
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    if args.config is None:
        print("splitway check: -c FILE is required", file=sys.stderr)
        return 2
    try:
        load_settings_file(args.config, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    print(f"{args.config}: ok")
    return 0


def _load(args: argparse.Namespace) -> Settings | int:
    if args.config is None:
        print(f"splitway {args.command}: -c FILE (or SPLITWAY_CONFIG) is required",
              file=sys.stderr)
        return 2
    try:
        return load_settings_file(args.config, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2


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
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _load(args)
    if isinstance(settings, int):
        return settings
    if args.workers < 1:
        print("splitway run: --workers must be >= 1", file=sys.stderr)
        return 2
    from proxy.server import run_workers, serve

    if args.workers > 1 and args.worker is None:
        if any(a.port == 0 for a in settings.listen_addresses):
            print("splitway run: --workers needs a fixed listen port", file=sys.stderr)
            return 2
        argv = ["run", "-c", str(args.config), "--log-level", args.log_level]
        return run_workers(argv, args.workers)
    try:
        return _run_loop(serve(settings, config_path=args.config.resolve(), env=os.environ,
                               worker=args.worker or 0, reuse_port=args.worker is not None))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"splitway run: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"check": cmd_check, "run": cmd_run}
    return handlers[args.command](args)
