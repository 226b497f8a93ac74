"""Helpers shared by every ``splitway`` subcommand module (parsers, output, errors).

A command module (``proxy.cli`` and the control plane's ``control.cli_*``) exposes
``register(sub)`` adding its subparsers with ``set_defaults(func=...)``; a command returns
its exit code or raises :class:`UsageError` (exit 2) or
:class:`~proxy.admin_client.ClientFailure`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from proxy.admin_client import AdminClient


class UsageError(Exception):
    """Bad arguments found after parsing; exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 already; keep it short
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=os.environ.get("SPLITWAY_CONFIG"),
                   help="config file (default $SPLITWAY_CONFIG)")


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin-url", default=os.environ.get("SPLITWAY_ADMIN_URL",
                                                         "http://127.0.0.1:9901"),
                   help="admin API base URL (default $SPLITWAY_ADMIN_URL)")
    p.add_argument("--token", default=os.environ.get("SPLITWAY_TOKEN"),
                   help="bearer token (default $SPLITWAY_TOKEN)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.admin_url, args.token)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def parse_pairs(pairs: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"{pair!r} is not VARIANT=NUMBER") from None
    return out
