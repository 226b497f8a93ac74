"""The configuration file: YAML -> frozen pydantic models -> cross-checked ``Settings``.

Every model is frozen and forbids unknown keys, so a typo in the YAML is an error that
names its field path rather than a silently ignored setting. Checks that span several
fields (weights naming variants, variants naming backends...) live in
:func:`cross_check`, which returns every problem at once so that ``splitway check``
can print them all.

The loader (:func:`load_settings`) is the only place that turns text into settings;
``${ENV}`` interpolation takes an environment mapping from its caller, because only the
CLI reads the process environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxy.errors import ConfigError, ConfigProblem

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
HASH_ON_RE = re.compile(r"^(header|cookie|query):[A-Za-z0-9!#$%&'*+.^_`|~-]+$|^client_ip$")

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str) -> HostPort:
    """Parse ``host:port`` / ``[v6]:port``; raise ``ValueError`` naming the problem."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r} is not [ipv6]:port")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not host:port")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} in {value!r} is not 0..65535")
    return HostPort(host, int(port_text))


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has a bad port") from exc
    return value.rstrip("/")


class TLS(Model):
    cert: Path
    key: Path


class Admin(Model):
    listen: str = "127.0.0.1:9901"
    tokens_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v


class Notifications(Model):
    webhooks: tuple[str, ...] = ()
    timeout_s: PositiveFloat = 5.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_url(u) for u in v)


class HealthCheck(Model):
    path: str = "/"
    interval_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 2.0
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 2
    healthy_threshold: Annotated[int, Field(ge=1)] = 1

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class OutlierDetection(Model):
    """Passive ejection: ``consecutive_failures`` 5xx/connect failures eject an endpoint
    for ``base_ejection_s`` x times ejected, capped at ``max_ejection_s``."""

    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    base_ejection_s: PositiveFloat = 30.0
    max_ejection_s: PositiveFloat = 300.0


class Backend(Model):
    endpoints: Annotated[tuple[str, ...], Field(min_length=1)]
    timeout_s: PositiveFloat = 30.0
    connect_timeout_s: PositiveFloat = 2.0
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 256
    health_check: HealthCheck | None = None
    outlier_detection: OutlierDetection = OutlierDetection()

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        urls = tuple(_check_url(u) for u in v)
        if len(set(urls)) != len(urls):
            raise ValueError("endpoints must be unique")
        return urls


class Match(Model):
    path_prefix: str = "/"
    host: str | None = None
    header: dict[str, str] | None = None
    method: tuple[str, ...] | None = None

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            return tuple(str(m).upper() for m in v)
        return v


class Split(Model):
    strategy: Literal["random", "hash"] = "random"
    hash_on: str | None = None
    weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    allow_pin: bool = False

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, v: str | None) -> str | None:
        if v is not None and not HASH_ON_RE.match(v):
            raise ValueError("must be header:NAME, cookie:NAME, query:NAME or client_ip")
        return v


class Compare(Model):
    json_path: str | None = None
    rel_tol: Annotated[float, Field(ge=0)] = 1e-3
    abs_tol: Annotated[float, Field(ge=0)] = 1e-6


class Shadow(Model):
    backend: str
    percent: Percent = 100.0
    max_in_flight: Annotated[int, Field(ge=1)] = 64
    max_body_bytes: Annotated[int, Field(ge=0)] = 1 << 20
    timeout_s: PositiveFloat = 10.0
    methods: tuple[str, ...] | None = None
    compare: Compare = Compare()


class Analysis(Model):
    min_requests: Annotated[int, Field(ge=1)] = 1000
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_latency_ratio: Annotated[float, Field(gt=0)] = 1.5
    latency_quantile: Annotated[float, Field(gt=0, lt=1)] = 0.99
    failed_checks_to_rollback: Annotated[int, Field(ge=1)] = 1


class Rollout(Model):
    strategy: Literal["canary", "blue_green", "rolling"] = "canary"
    baseline: str
    candidate: str
    steps: tuple[Percent, ...] = (5, 10, 25, 50, 100)
    step_interval_s: PositiveFloat = 60.0
    analysis: Analysis = Analysis()


class Success(Model):
    status_below: Annotated[int, Field(ge=100, le=600)] | None = None
    json_field: str | None = None
    header: str | None = None
    equals: str | None = None


class Experiment(Model):
    name: str
    control: str
    success: Success = Success(status_below=500)


class RouteConfig(Model):
    name: str
    match: Match = Match()
    variants: Annotated[dict[str, str], Field(min_length=1)]
    split: Split
    shadow: Shadow | None = None
    rollout: Rollout | None = None
    experiment: Experiment | None = None
    max_body_bytes: Annotated[int, Field(ge=0)] = 1 << 30


class ApprovalPolicy(Model):
    required: Annotated[int, Field(ge=0, le=20)] = 1


class Settings(Model):
    version: Literal[1]
    listen: str | tuple[str, ...] = "127.0.0.1:8080"
    tls: TLS | None = None
    admin: Admin = Admin()
    state: str = "sqlite:///splitway-state.db"
    notifications: Notifications = Notifications()
    grace_period_s: Annotated[float, Field(ge=0)] = 30.0
    backends: Annotated[dict[str, Backend], Field(min_length=1)]
    routes: Annotated[tuple[RouteConfig, ...], Field(min_length=1)]
    approvals: dict[Literal["staging", "production"], ApprovalPolicy] = {
        "staging": ApprovalPolicy(required=1),
        "production": ApprovalPolicy(required=2),
    }

    @property
    def listen_addresses(self) -> tuple[HostPort, ...]:
        items = (self.listen,) if isinstance(self.listen, str) else self.listen
        return tuple(parse_listen(x) for x in items)

    def route(self, name: str) -> RouteConfig:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


def cross_check(s: Settings) -> list[ConfigProblem]:
    """Checks that span fields; returns every problem (empty when the settings are sound)."""
    problems: list[ConfigProblem] = []

    def bad(path: str, message: str) -> None:
        problems.append(ConfigProblem(path, message))

    items = (s.listen,) if isinstance(s.listen, str) else s.listen
    for i, item in enumerate(items):
        try:
            parse_listen(item)
        except ValueError as exc:
            bad("listen" if isinstance(s.listen, str) else f"listen[{i}]", str(exc))
    if not (s.state.startswith("sqlite://") or s.state.startswith(("postgresql://", "postgres://"))):
        bad("state", f"{s.state!r} is neither sqlite:///PATH nor postgresql://...")
    for name in s.backends:
        if not NAME_RE.match(name):
            bad(f"backends.{name}", "backend names are [a-z0-9][a-z0-9._-]{0,63}")
    seen: set[str] = set()
    for i, r in enumerate(s.routes):
        at = f"routes[{i}]"
        if not NAME_RE.match(r.name):
            bad(f"{at}.name", f"{r.name!r} is not [a-z0-9][a-z0-9._-]{{0,63}}")
        if r.name in seen:
            bad(f"{at}.name", f"route name {r.name!r} is used twice")
        seen.add(r.name)
        for variant, backend in r.variants.items():
            if not NAME_RE.match(variant):
                bad(f"{at}.variants.{variant}", "variant names are [a-z0-9][a-z0-9._-]{0,63}")
            if backend not in s.backends:
                bad(f"{at}.variants.{variant}", f"backend {backend!r} is not defined")
        for variant in r.split.weights:
            if variant not in r.variants:
                bad(f"{at}.split.weights.{variant}", f"{variant!r} is not a variant of this route")
        if r.split.weights and not any(w > 0 for w in r.split.weights.values()):
            bad(f"{at}.split.weights", "weights must not all be zero")
        if r.split.strategy == "hash" and r.split.hash_on is None:
            bad(f"{at}.split.hash_on", "strategy 'hash' needs hash_on")
        if r.shadow is not None and r.shadow.backend not in s.backends:
            bad(f"{at}.shadow.backend", f"backend {r.shadow.backend!r} is not defined")
        if r.rollout is not None:
            for key in ("baseline", "candidate"):
                if getattr(r.rollout, key) not in r.variants:
                    bad(f"{at}.rollout.{key}", f"{getattr(r.rollout, key)!r} is not a variant")
            if r.rollout.baseline == r.rollout.candidate:
                bad(f"{at}.rollout.candidate", "candidate and baseline must differ")
            if list(r.rollout.steps) != sorted(r.rollout.steps):
                bad(f"{at}.rollout.steps", "steps must not decrease")
        if r.experiment is not None:
            if r.experiment.control not in r.variants:
                bad(f"{at}.experiment.control", f"{r.experiment.control!r} is not a variant")
            chosen = [
                k for k in ("status_below", "json_field", "header")
                if getattr(r.experiment.success, k) is not None
            ]
            if len(chosen) != 1:
                bad(f"{at}.experiment.success", "give exactly one of status_below, json_field, header")
    return problems


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; an unset name without default is an error."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _ENV_RE.sub(sub, text)
    if missing:
        raise ConfigError([ConfigProblem("${" + n + "}", "environment variable is not set")
                           for n in dict.fromkeys(missing)])
    return out


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union", "union[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_settings(data: Any) -> Settings:
    """Validate already-parsed YAML data; raise :class:`ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("(top level)", "the config must be a YAML mapping")])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems: dict[tuple[str, str], None] = {}
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if p not in ("str", "tuple[str, ...]"))
            msg = err["msg"].removeprefix("Value error, ")
            problems[(_loc(loc), msg)] = None
        raise ConfigError([ConfigProblem(p, m) for p, m in problems]) from None
    found = cross_check(settings)
    if found:
        raise ConfigError(found)
    return settings


def load_settings(text: str, env: Mapping[str, str] | None = None) -> Settings:
    """Parse YAML text (after ``${ENV}`` interpolation) into checked :class:`Settings`."""
    text = interpolate(text, env or {})
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(where, f"YAML syntax error: {problem}")]) from None
    return parse_settings(data)


def load_settings_file(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), f"cannot read: {exc.strerror}")]) from exc
    return load_settings(text, env)


def effective_weights(route: RouteConfig) -> dict[str, float]:
    """The config's weights for every variant (a variant missing from ``weights`` gets 0)."""
    return {v: float(route.split.weights.get(v, 0.0)) for v in route.variants}
