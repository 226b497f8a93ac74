"""The ``splitway`` command: the only place that reads argv and the environment.

Exit codes: 0 ok, 1 operation failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.config import load_settings_file
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"check": cmd_check}
    return handlers[args.command](args)
