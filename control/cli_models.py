"""``splitway models ...`` and ``splitway promote ...``: the registry and promotions from
the command line, through the admin API (contract §10).

Names, versions and promotion ids are checked before any request, so bad local input
exits 2 with one line naming it; the server's answers map to exit codes in
:class:`proxy.admin_client.AdminClient` (2 for 400/422, 1 otherwise). ``--json`` prints
the API's documents; otherwise readable tables. ``promote request`` prints just the
promotion id on stdout, so a script can capture it.

``models register --artifact-file F`` uploads F's bytes first (``POST /api/v1/artifacts``,
raw body: the shared JSON client cannot send one) and registers the version with the
returned SHA-256.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control.artifacts import MAX_ARTIFACT_BYTES
from control.versions import check_name, check_version
from proxy.cliutil import Parser, UsageError, add_client_options, client, print_json, print_table
from proxy.errors import InvalidInputError

STAGES = ("development", "staging", "production", "archived")


def local_check(fn: Callable[[str, str], object], value: str, what: str) -> str:
    """``fn(value, what)`` (a validator from :mod:`control.versions`); bad input exits 2."""
    try:
        return str(fn(value, what))
    except InvalidInputError as exc:
        raise UsageError(f"{what}: {exc.detail}") from None


def version_path(args: argparse.Namespace) -> str:
    """The API path of ``args.name``/``args.version``, both checked locally."""
    model = local_check(check_name, args.name, "model")
    version = local_check(check_version, args.version, "version")
    return f"/api/v1/models/{model}/versions/{version}"


def _pairs(pairs: list[str], what: str, *, number: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--{what} {pair!r}: use KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        if number and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UsageError(f"--{what} {pair!r}: the value is not a number")
        out[key] = value
    return out


def _upload(args: argparse.Namespace, path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_ARTIFACT_BYTES:
            raise UsageError(f"{path}: larger than {MAX_ARTIFACT_BYTES} bytes; register it "
                             "by --artifact-uri instead")
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None

    return str(client(args).call("POST", "/api/v1/artifacts", raw=data)["sha256"])


def cmd_register(args: argparse.Namespace) -> int:
    model = local_check(check_name, args.name, "model")
    version = local_check(check_version, args.version, "version")
    if args.parent is not None:
        local_check(check_version, args.parent, "parent")
    body: dict[str, Any] = {
        "version": version, "backend": args.backend, "description": args.description,
        "metrics": _pairs(args.metric, "metric", number=True),
        "params": _pairs(args.param, "param", number=False), "tags": args.tag,
        "lineage": {"parent": args.parent, "commit": args.commit,
                    "dataset_digest": args.dataset_digest},
    }  # fmt: skip
    if args.artifact_uri is not None:
        body["artifact"] = {"uri": args.artifact_uri}
    elif args.artifact_file is not None:
        body["artifact"] = {"sha256": _upload(args, args.artifact_file)}
    doc = client(args).call("POST", f"/api/v1/models/{model}/versions", body)
    if args.json:
        print_json(doc)
    else:
        print(f"registered {doc['model']}@{doc['version']} ({doc['stage']})")
    return 0


def _version_rows(versions: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(v["version"], v["stage"], v["backend"], ",".join(v["tags"]) or "-",
             v["created_at"][:19], v["created_by"]) for v in versions]


def cmd_list(args: argparse.Namespace) -> int:
    if args.name is None:
        data = client(args).call("GET", "/api/v1/models")
        rows = [(m["name"], m["versions"], m["latest"] or "-", m["production"] or "-")
                for m in data["models"]]
        header: tuple[str, ...] = ("MODEL", "VERSIONS", "LATEST", "PRODUCTION")
    else:
        model = local_check(check_name, args.name, "model")
        params = {k: v for k, v in (("stage", args.stage), ("tag", args.tag)) if v}
        data = client(args).call("GET", f"/api/v1/models/{model}/versions", params=params)
        rows, header = _version_rows(data["versions"]), (
            "VERSION", "STAGE", "BACKEND", "TAGS", "CREATED", "BY")
    if args.json:
        print_json(data)
    else:
        print_table(rows, header)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    doc = client(args).call("GET", version_path(args))
    if args.json:
        print_json(doc)
        return 0
    art = doc["artifact"] or {}
    lin = doc["lineage"]
    for key, value in (
        ("version", f"{doc['model']}@{doc['version']}"), ("stage", doc["stage"]),
        ("promotion", doc["stage_promotion_id"] or "-"), ("backend", doc["backend"]),
        ("description", doc["description"] or "-"),
        ("artifact", art.get("uri") or (f"sha256:{art['sha256']} ({art['size']} bytes)"
                                        if art else "-")),
        ("lineage", f"parent={lin['parent'] or '-'} commit={lin['commit'] or '-'} "
                    f"dataset={lin['dataset_digest'] or '-'}"),
        ("tags", ", ".join(doc["tags"]) or "-"),
        ("metrics", ", ".join(f"{k}={v:g}" for k, v in doc["metrics"].items()) or "-"),
        ("params", json.dumps(doc["params"], sort_keys=True)),
        ("registered", f"{doc['created_at']} by {doc['created_by']}"),
    ):
        print(f"{key + ':':<13}{value}")
    return 0


def cmd_latest(args: argparse.Namespace) -> int:
    model = local_check(check_name, args.name, "model")
    params = {"stage": args.stage} if args.stage else None
    data = client(args).call("GET", f"/api/v1/models/{model}/latest", params=params)
    if args.json:
        print_json(data)
    else:
        print_table([(s, v["version"] if v else "-") for s, v in data["latest"].items()],
                    ("STAGE", "LATEST"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    model = local_check(check_name, args.name, "model")
    a, b = local_check(check_version, args.a, "a"), local_check(check_version, args.b, "b")
    data = client(args).call("GET", f"/api/v1/models/{model}/compare",
                             params={"a": a, "b": b})
    if args.json:
        print_json(data)
        return 0

    def fmt(x: float | None, pct: bool = False) -> str:
        return "-" if x is None else (f"{x:+.2%}" if pct else f"{x:g}")

    print_table([(k, fmt(m["a"]), fmt(m["b"]), fmt(m["diff"]), fmt(m["rel_diff"], True))
                 for k, m in data["metrics"].items()],
                ("METRIC", a, b, "DIFF", "REL_DIFF"))
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    data = client(args).call("GET", version_path(args) + "/gate", params={"stage": args.stage})
    if args.json:
        print_json(data)
    else:
        print(("allowed: " if data["allowed"] else "refused: ") + data["reason"])
    return 0 if data["allowed"] else 1


def add_command(group: argparse._SubParsersAction[Any], name: str, func: Any, help: str,
                *positional: str) -> argparse.ArgumentParser:
    """A client subcommand: the admin API options, ``positional`` arguments, ``func``."""
    p: argparse.ArgumentParser = group.add_parser(name, help=help)
    add_client_options(p)
    for arg in positional:
        p.add_argument(arg)
    p.set_defaults(func=func)
    return p


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``models`` and ``promote``."""
    from control.cli_promote import register_promote

    models = sub.add_parser("models", help="the model registry").add_subparsers(
        dest="models_command", required=True, parser_class=Parser)

    def cmd(name: str, func: Any, help: str, *positional: str) -> argparse.ArgumentParser:
        return add_command(models, name, func, help, *positional)

    p = cmd("register", cmd_register, "register a model version", "name", "version")
    p.add_argument("--backend", required=True, help="the config backend serving it")
    art = p.add_mutually_exclusive_group()
    art.add_argument("--artifact-uri", help="where the artifact lives (s3://, https://...)")
    art.add_argument("--artifact-file", type=Path,
                     help=f"upload this file (at most {MAX_ARTIFACT_BYTES >> 20} MiB)")
    p.add_argument("--description", default="")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=NUMBER")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="VALUE is JSON when it parses, else a string")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--parent", help="parent version (lineage)")
    p.add_argument("--commit", help="source commit (lineage)")
    p.add_argument("--dataset-digest", help="dataset digest (lineage)")
    p = cmd("list", cmd_list, "models, or one model's versions")
    p.add_argument("name", nargs="?")
    p.add_argument("--stage", choices=STAGES)
    p.add_argument("--tag")
    cmd("show", cmd_show, "one version", "name", "version")
    p = cmd("latest", cmd_latest, "the newest version in each stage", "name")
    p.add_argument("--stage", choices=STAGES)
    cmd("compare", cmd_compare, "metric differences (b - a)", "name", "a", "b")
    p = cmd("gate", cmd_gate, "may this version serve a route requiring --stage? "
            "(exit 0 yes, 1 no)", "name", "version")
    p.add_argument("--stage", default="production", choices=STAGES[:3])
    register_promote(sub)
