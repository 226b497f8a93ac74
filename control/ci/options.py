"""What ``splitway ci generate`` is asked for: one frozen, validated :class:`CiOptions`.

Every value that ever reaches a shell line, a YAML value or the Jenkinsfile is checked
here, up front, against a strict allow-list (a regex or a closed set), so the platform
modules never see an unchecked string. They still quote every shell word with
:func:`shlex.quote`: validation is the first wall, quoting the second.

A bad value raises :class:`CiOptionError` (a ``ValueError``) naming the option; the CLI
turns it into exit 2 and one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata

from control.versions import NAME_RULE, is_valid_name

PLATFORMS = ("github", "gitlab", "jenkins", "azure")
#: The deploy environments, in order; they are the registry's promotion stages.
ENVIRONMENTS = ("staging", "production")
#: The branch deploys run on (production only there, exactly).
MAIN_BRANCH = "main"

PYTHON_RE = re.compile(r"3\.\d{1,2}")
VAR_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
PATH_RE = re.compile(rf"{_PART}(?:/{_PART}){{0,15}}")
REQUIREMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-\[\],<>=!~:/@#]{0,199}")
MAX_APPROVAL_MINUTES = 7 * 24 * 60
#: How often a deploy asks whether its promotion was approved, in seconds.
POLL_INTERVAL_S = 30


class CiOptionError(ValueError):
    """An option value outside its allow-list."""


def _name(value: str | None, option: str) -> None:
    if value is not None and not is_valid_name(value):
        raise CiOptionError(f"{option} {value!r}: use {NAME_RULE}")


def _match(regex: re.Pattern[str], value: str | None, option: str, rule: str) -> None:
    if value is not None and not regex.fullmatch(value):
        raise CiOptionError(f"{option} {value!r}: {rule}")


def _path(value: str | None, option: str) -> None:
    _match(PATH_RE, value, option, "use a relative path of letters, digits and '_.-/' "
           "(no part starting with '.' or '-', no leading '/')")


def installed_splitway() -> str:
    """``splitway==X`` for the version generating the pipeline (its CLI flags match)."""
    try:
        return f"splitway=={metadata.version('splitway')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "splitway"


@dataclass(frozen=True, slots=True)
class CiOptions:
    """The pipeline to generate. Defaults are what ``docs/ci.md`` documents."""

    platform: str
    model: str
    python: str = "3.11"
    gpu: bool = False
    gpu_label: str = "gpu"
    environments: tuple[str, ...] = ENVIRONMENTS
    coverage: bool = False
    security: bool = True
    admin_url_var: str = "SPLITWAY_ADMIN_URL"
    token_var: str = "SPLITWAY_TOKEN"  # noqa: S105 - the secret's name, not a secret
    route: str | None = None
    staging_route: str | None = None
    backend: str | None = None
    config: str = "splitway.yaml"
    version_file: str = "VERSION"
    artifact: str | None = None
    dataset_digest_file: str | None = None
    validate_hook: str | None = None
    requirements: str | None = "requirements.txt"
    source: str = "."
    approval_timeout_min: int = 60
    splitway_requirement: str = field(default_factory=installed_splitway)

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise CiOptionError(f"--platform {self.platform!r}: one of {', '.join(PLATFORMS)}")
        if not is_valid_name(self.model):
            raise CiOptionError(f"--model {self.model!r}: a model name is {NAME_RULE}")
        for value, option in ((self.route, "--route"), (self.staging_route, "--staging-route"),
                              (self.backend, "--backend"), (self.gpu_label, "--gpu-label")):
            _name(value, option)
        _match(PYTHON_RE, self.python, "--python", "use 3.MINOR, e.g. 3.11")
        self._check_environments()
        for var, option in ((self.admin_url_var, "--admin-url-var"),
                            (self.token_var, "--token-var")):
            _match(VAR_RE, var, option, "a secret name is [A-Z_][A-Z0-9_]{0,63}")
            if var.startswith("GITHUB_"):
                raise CiOptionError(f"{option} {var!r}: names starting GITHUB_ are reserved")
        if self.admin_url_var == self.token_var:
            raise CiOptionError("--admin-url-var and --token-var must differ")
        if self.source != ".":
            _path(self.source, "--source")
        for value, option in ((self.config, "--config"), (self.version_file, "--version-file"),
                              (self.artifact, "--artifact"),
                              (self.dataset_digest_file, "--dataset-digest-file"),
                              (self.validate_hook, "--validate-hook"),
                              (self.requirements, "--requirements")):
            _path(value, option)
        if not 1 <= self.approval_timeout_min <= MAX_APPROVAL_MINUTES:
            raise CiOptionError(f"--approval-timeout {self.approval_timeout_min}: "
                                f"1 to {MAX_APPROVAL_MINUTES} minutes")
        _match(REQUIREMENT_RE, self.splitway_requirement, "--splitway-requirement",
               "a pip requirement without spaces or quotes, e.g. splitway==0.1.0")

    def _check_environments(self) -> None:
        envs = self.environments
        unknown = [e for e in envs if e not in ENVIRONMENTS]
        if unknown or not envs:
            raise CiOptionError(f"--environments {','.join(envs)!r}: a list of "
                                f"{' and '.join(ENVIRONMENTS)} (the registry's stages)")
        if len(set(envs)) != len(envs):
            raise CiOptionError(f"--environments {','.join(envs)!r}: an environment twice")
        if "production" in envs and "staging" not in envs:
            raise CiOptionError("--environments: production needs staging before it (the "
                                "registry promotes to production only from staging)")
        if list(envs) != sorted(envs, key=ENVIRONMENTS.index):
            raise CiOptionError("--environments: list staging before production")

    def route_for(self, environment: str) -> str:
        """The route a deploy to ``environment`` rolls out on."""
        base = self.route or self.model
        if environment == "staging":
            return self.staging_route or f"{base}-staging"
        return base

    @property
    def backend_name(self) -> str:
        """The config backend that serves the new version (``--backend``)."""
        return self.backend or f"{self.model}-candidate"

    @property
    def poll_tries(self) -> int:
        """How many times a deploy asks the gate, every :data:`POLL_INTERVAL_S`."""
        return max(1, self.approval_timeout_min * 60 // POLL_INTERVAL_S)


def parse_environments(text: str) -> tuple[str, ...]:
    """``"staging,production"`` -> a tuple (validated later by :class:`CiOptions`)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
