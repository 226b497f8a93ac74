"""``splitway ci generate``: write a CI/CD pipeline that carries a model from a commit to
production through splitway (contract §10; docs/ci.md).

Every option is checked by :class:`control.ci.CiOptions` before anything is written; a
bad value (a model name with a quote, ``$()``, a backtick or a space; an unknown
environment; a lowercase secret name...) exits 2 with one line naming the option. The
pipeline goes to stdout, or to ``--output FILE`` (parent directories are created).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from control.ci import (
    DEFAULT_PATHS,
    ENVIRONMENTS,
    PLATFORMS,
    CiOptionError,
    CiOptions,
    generate,
    installed_splitway,
    parse_environments,
)
from proxy.cliutil import Parser, UsageError


def options_from(args: argparse.Namespace) -> CiOptions:
    """The validated options (exit 2 through :class:`UsageError` otherwise)."""
    try:
        return CiOptions(
            platform=args.platform, model=args.model, python=args.python, gpu=args.gpu,
            gpu_label=args.gpu_label, environments=parse_environments(args.environments),
            coverage=args.coverage, security=not args.no_security,
            admin_url_var=args.admin_url_var, token_var=args.token_var, route=args.route,
            staging_route=args.staging_route, backend=args.backend, config=args.config,
            version_file=args.version_file, artifact=args.artifact,
            dataset_digest_file=args.dataset_digest_file, validate_hook=args.validate_hook,
            requirements=args.requirements or None, source=args.source,
            approval_timeout_min=args.approval_timeout,
            splitway_requirement=args.splitway_requirement or installed_splitway())
    except CiOptionError as exc:
        raise UsageError(f"splitway ci generate: {exc}") from None


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_generate(args: argparse.Namespace) -> int:
    options = options_from(args)
    text = generate(options)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        _write(args.output, text)
    except OSError as exc:
        print(f"splitway ci generate: {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({options.platform})", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``ci generate``."""
    ci = sub.add_parser("ci", help="CI/CD pipelines").add_subparsers(
        dest="ci_command", required=True, parser_class=Parser)
    paths = ", ".join(f"{k}: {v}" for k, v in DEFAULT_PATHS.items())
    p = ci.add_parser("generate", help="write a pipeline: test, validate, security, deploy",
                      description=f"Write a CI/CD pipeline for a model. Usual paths: {paths}. "
                                  "See docs/ci.md.")
    p.add_argument("--platform", required=True, choices=PLATFORMS)
    p.add_argument("--model", required=True, help="the registry model name")
    p.add_argument("--output", "-o", type=Path, default=None, help="file (default stdout)")
    p.add_argument("--python", default="3.11", help="Python version (default 3.11)")
    p.add_argument("--gpu", action="store_true",
                   help="run test and validate on a GPU runner (--gpu-label)")
    p.add_argument("--gpu-label", default="gpu",
                   help="GPU runner label / tag / agent pool (default gpu)")
    p.add_argument("--environments", default=",".join(ENVIRONMENTS),
                   help="deploy environments, in order (default staging,production)")
    p.add_argument("--coverage", action="store_true", help="pytest with a coverage report")
    p.add_argument("--no-security", action="store_true", help="leave out bandit and pip-audit")
    p.add_argument("--admin-url-var", default="SPLITWAY_ADMIN_URL",
                   help="CI secret holding the admin API URL (default SPLITWAY_ADMIN_URL)")
    p.add_argument("--token-var", default="SPLITWAY_TOKEN",
                   help="CI secret holding an operator token (default SPLITWAY_TOKEN)")
    p.add_argument("--route", help="production route (default: the model name)")
    p.add_argument("--staging-route", help="staging route (default: ROUTE-staging)")
    p.add_argument("--backend", help="config backend serving the new version "
                                     "(default: MODEL-candidate)")
    p.add_argument("--config", default="splitway.yaml", help="splitway config to check")
    p.add_argument("--version-file", default="VERSION",
                   help="file holding MAJOR.MINOR.PATCH (default VERSION)")
    p.add_argument("--artifact", help="model artifact file to upload with the version")
    p.add_argument("--dataset-digest-file", help="file holding the dataset digest (lineage)")
    p.add_argument("--validate-hook", help="Python script validating the model "
                                           "(run as: python HOOK [ARTIFACT])")
    p.add_argument("--requirements", default="requirements.txt",
                   help="pip requirements file ('' for none)")
    p.add_argument("--source", default=".", help="what ruff, mypy and bandit check")
    p.add_argument("--approval-timeout", type=int, default=60, metavar="MINUTES",
                   help="how long a deploy waits for the promotion's approval (default 60)")
    p.add_argument("--splitway-requirement", default=None,
                   help="pip requirement installing splitway in the pipeline "
                        "(default: splitway==THIS_VERSION)")
    p.set_defaults(func=cmd_generate)
