"""The configuration file: YAML -> frozen pydantic models -> cross-checked ``Settings``.

Every model is frozen and forbids unknown keys, so a typo in the YAML is an error that
names its field path rather than a silently ignored setting. Checks that span several
fields (weights naming variants, variants naming backends...) live in
:func:`cross_check`, which returns every problem at once so that ``splitway check``
can print them all.

The loader (:mod:`proxy.config_load`: ``load_settings``, ``load_settings_file``) is the
only place that turns text into settings; ``${ENV}`` interpolation takes an environment
mapping from its caller, because only the CLI reads the process environment.

Rules worth knowing (also in the docs):

- Every problem is one line, ``PATH: message``; PATH is a field path such as
  ``routes[0].split.weights.canary`` or ``backends.a.endpoints[0]``, or
  ``line N, column M`` for YAML syntax errors, duplicate keys and unset ``${ENV}``
  variables. Schema problems are reported first; the cross-field checks of
  :func:`cross_check` run once the schema is satisfied.
- ``${NAME}`` is replaced by the variable's value; ``${NAME:-default}`` uses the default
  when the variable is unset *or empty* (shell and docker-compose semantics); ``$${``
  is a literal ``${``. Interpolation is textual and happens before YAML parsing, so it
  works inside flow mappings (``{a: ${A}}``); full-line comments are left alone.
- Numbers written as YAML numbers are accepted as strings where a name or header value
  is expected (``equals: 1``), but ``true``/``false`` is never accepted as a number.
- Duplicate keys in a YAML mapping are errors (YAML itself would keep the last one).
- Relative file paths (``admin.tokens_file``, ``tls.cert``, ``tls.key``) are resolved
  against the config file's directory by ``load_settings_file`` (see
  ``proxy.config_load.resolve_relative``). ``state`` is a URL and is passed on unchanged.
- ``approvals`` always holds both stages; a stage left out keeps its default
  (staging 1, production 2).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)

from proxy.errors import BadTargetError, ConfigProblem
from proxy.target import normalize_target

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = "[a-z0-9][a-z0-9._-]{0,63}"
HASH_ON_RE = re.compile(r"^(header|cookie|query):[A-Za-z0-9!#$%&'*+.^_`|~-]+$|^client_ip$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_METHOD_RE = re.compile(r"^[A-Z]+$")
_TOKEN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads true/false as 1/0; in a config file that is always a slip
    # (YAML 1.1 even reads ``yes``/``no``/``on``/``off`` as booleans).
    if isinstance(value, bool):
        raise ValueError("should be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Percent = Annotated[Float, Field(ge=0, le=100)]


class Model(BaseModel):
    """Base of every config model: frozen, unknown keys forbidden, strings stripped."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True
    )


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address; ``str()`` gives ``host:port`` (``[v6]:port`` for IPv6)."""

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
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {value!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not host:port")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address in brackets, [addr]:port")
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"{host!r} in {value!r} is not a host name or address")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
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
    if any(c.isspace() for c in value):
        raise ValueError(f"{value!r} contains white space")
    return value.rstrip("/")


Url = Annotated[str, AfterValidator(_check_url)]


def _methods(value: Any) -> Any:
    """``GET`` or ``[get, post]`` -> ``("GET", "POST")``; other shapes go on to pydantic."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        out = tuple(str(m).strip().upper() for m in value)
        for m in out:
            if not _METHOD_RE.fullmatch(m):
                raise ValueError(f"{m!r} is not an HTTP method")
        return out
    return value


class TLS(Model):
    """Certificate and key files for the data-plane listener."""

    cert: Path
    key: Path


class Limits(Model):
    """What one client connection may hold, on the data and the admin listener alike
    (:mod:`proxy.connection`)."""

    #: from the connection's start, or from the first byte of a keep-alive request, until
    #: its headers are complete; then 408 (silent close if nothing was sent)
    header_read_timeout_s: Annotated[PositiveFloat, Field(le=3600)] = 10.0
    #: an idle keep-alive connection between two requests
    keepalive_timeout_s: Annotated[PositiveFloat, Field(le=86400)] = 75.0
    #: request line and headers together
    max_header_bytes: Annotated[Int, Field(ge=1024, le=1 << 20)] = 64 << 10
    #: warning lines for malformed requests; more are counted and summarised
    malformed_log_per_s: Annotated[Int, Field(ge=1, le=10_000)] = 10
    #: the longest wait for the next piece of a request body (nginx's client_body_timeout);
    #: then 408 ``client_timeout``, charged to nobody
    body_read_timeout_s: Annotated[PositiveFloat, Field(le=3600)] = 30.0


class Admin(Model):
    """The admin API listener and its tokens file (without one, the API is read-only)."""

    listen: str = "127.0.0.1:9901"
    tokens_file: Path | None = None
    # refused calls are written as one security.violation per source and interval
    violation_interval_s: Annotated[PositiveFloat, Field(le=3600)] = 10.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("tokens_file")
    @classmethod
    def _tokens_file(cls, v: Path | None) -> Path | None:
        if v is not None and str(v) in ("", "."):
            raise ValueError("should be a file path")
        return v


class Notifications(Model):
    """Webhooks that receive rollout and approval events."""

    webhooks: tuple[Url, ...] = ()
    timeout_s: PositiveFloat = 5.0
    retries: Annotated[Int, Field(ge=0, le=10)] = 3


class HealthCheck(Model):
    """Active health checking of a backend's endpoints."""

    path: str = "/"
    interval_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 2.0
    unhealthy_threshold: Annotated[Int, Field(ge=1)] = 2
    healthy_threshold: Annotated[Int, Field(ge=1)] = 1

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class OutlierDetection(Model):
    """Passive ejection: ``consecutive_failures`` 5xx/connect failures eject an endpoint
    for ``base_ejection_s`` x times ejected, capped at ``max_ejection_s``."""

    consecutive_failures: Annotated[Int, Field(ge=1)] = 5
    base_ejection_s: PositiveFloat = 30.0
    max_ejection_s: PositiveFloat = 300.0


class Backend(Model):
    """One model version's serving endpoints (load-balanced) and their limits."""

    endpoints: tuple[Url, ...]
    timeout_s: PositiveFloat = 30.0
    connect_timeout_s: PositiveFloat = 2.0
    max_connections: Annotated[Int, Field(ge=1, le=100_000)] = 256
    health_check: HealthCheck | None = None
    outlier_detection: OutlierDetection = OutlierDetection()

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Not Field(min_length=1): on a tuple whose items fail, pydantic also reports a
        # spurious "should have at least 1 item after validation".
        if not v:
            raise ValueError("give at least one endpoint")
        if len(set(v)) != len(v):
            raise ValueError("endpoints must be unique")
        return v


class Match(Model):
    """Which requests a route takes: path prefix, and optionally host, headers, methods."""

    path_prefix: str = "/"
    host: str | None = None
    header: dict[str, str] | None = None
    method: Annotated[tuple[str, ...] | None, BeforeValidator(_methods)] = None

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        # Requests are matched in their normal form (proxy.target), so a prefix in any
        # other form could never match; say so instead of silently serving nothing.
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        try:
            normal = normalize_target("GET", v)
        except BadTargetError as exc:
            raise ValueError(exc.detail) from None
        if normal.path_qs != v:
            raise ValueError(f"write it in normal form, {normal.path_qs!r} (requests are "
                             "matched after dot-segments and percent-encodings are resolved)")
        return v


def _network(value: Any) -> Any:
    """``10.0.0.0/8``, ``::1/128`` or a bare address; the reason when it is none of them."""
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value.strip())
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    return value


class TrustedPins(Model):
    """Where a pin must come from to count toward rollout judgement: every condition given
    must hold (a ``secret`` sent in ``header``, a source address in ``sources``)."""

    header: str = "x-splitway-pin-secret"
    secret: SecretStr | None = None
    sources: tuple[Annotated[IPvAnyNetwork, BeforeValidator(_network)], ...] | None = None

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _TOKEN_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a header name")
        if v.lower() in ("x-splitway-variant", "x-splitway-shadow", "x-request-id", "host"):
            raise ValueError(f"{v!r} is a header splitway uses for something else")
        return v.lower()

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("use at least 16 characters (e.g. ${SPLITWAY_PIN_SECRET})")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if v is not None and not v:
            raise ValueError("give at least one network, or leave sources out")
        return v

    @model_validator(mode="after")
    def _some(self) -> TrustedPins:
        if self.secret is None and self.sources is None:
            raise ValueError("give secret, sources or both")
        return self


class Split(Model):
    """How a route divides traffic between its variants."""

    strategy: Literal["random", "hash"] = "random"
    hash_on: str | None = None
    weights: dict[str, NonNegativeFloat]
    allow_pin: bool = False
    trusted_pins: TrustedPins | None = None

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, v: str | None) -> str | None:
        if v is not None and not HASH_ON_RE.fullmatch(v):
            raise ValueError("must be header:NAME, cookie:NAME, query:NAME or client_ip")
        return v


class Compare(Model):
    """How shadow responses are compared with the primary's."""

    json_path: str | None = None
    rel_tol: NonNegativeFloat = 1e-3
    abs_tol: NonNegativeFloat = 1e-6


class Shadow(Model):
    """Mirroring of a route's requests to another backend."""

    backend: str
    percent: Percent = 100.0
    max_in_flight: Annotated[Int, Field(ge=1)] = 64
    max_body_bytes: Annotated[Int, Field(ge=0)] = 1 << 20
    timeout_s: PositiveFloat = 10.0
    methods: Annotated[tuple[str, ...] | None, BeforeValidator(_methods)] = None
    compare: Compare = Compare()


class JsonMetric(Model):
    """A numeric field of the responses (e.g. a confidence score): the candidate fails when
    its mean is significantly below the baseline's by more than ``max_drop``."""

    path: str
    max_drop: NonNegativeFloat = 0.0


class PromCheck(Model):
    """A PromQL query (fleet-wide figures); ``{route}``, ``{baseline}`` and ``{candidate}``
    are replaced. Fails when the value is above ``max`` or below ``min``."""

    url: Url
    query: str
    max: Float | None = None
    min: Float | None = None
    timeout_s: PositiveFloat = 5.0


#: Analysis keys that no longer exist, and why (a config naming one is refused with this).
#: ``failed_checks_to_rollback: 1`` is still read, as the only value that keeps its meaning.
RETIRED_ANALYSIS_KEYS = {
    "failed_checks_to_rollback": (
        "is retired: the evidence now accumulates over the whole rollout, so one failed "
        "check is already significant at the policy's alpha; remove the key, or leave it "
        "at 1 (see docs/rollouts.md)"),
    "alpha_vs_baseline": (
        "is retired: alpha now bounds false rollbacks over the whole rollout and is split "
        "between the checks; remove the key (see docs/rollouts.md)"),
}


class Analysis(Model):
    """The checks that gate each rollout step (see ``docs/rollouts.md``)."""

    min_requests: Annotated[Int, Field(ge=1)] = 1000
    max_error_rate: Annotated[Float, Field(ge=0, le=1)] = 0.01
    max_error_ratio: Annotated[Float, Field(ge=1)] = 2.0
    max_latency_ratio: PositiveFloat = 1.5
    latency_quantile: Annotated[Float, Field(gt=0, lt=1)] = 0.99
    alpha: Annotated[Float, Field(gt=0, lt=0.5)] = 0.01
    critical_error_rate: Annotated[Float, Field(gt=0, le=1)] = 0.5
    critical_min_requests: Annotated[Int, Field(ge=1)] = 20
    json_metric: JsonMetric | None = None
    prometheus: tuple[PromCheck, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("failed_checks_to_rollback") == 1 and not isinstance(
                    data["failed_checks_to_rollback"], bool):
                del data["failed_checks_to_rollback"]  # what a failed check means now
            for key, why in RETIRED_ANALYSIS_KEYS.items():
                if key in data:
                    raise ValueError(f"{key} {why}")
        return data


class ShadowPhase(Model):
    """A first phase in which the candidate only sees mirrored traffic (``shadow:`` of the
    route must point at the candidate's backend); live steps start when it passes."""

    min_compared: Annotated[Int, Field(ge=1)] = 500
    max_mismatch_rate: Annotated[Float, Field(ge=0, le=1)] = 0.01
    max_error_rate: Annotated[Float, Field(ge=0, le=1)] = 0.01


Step = Percent | Literal["pause"]


class Rollout(Model):
    """The policy a rollout on this route follows."""

    strategy: Literal["canary", "blue_green", "rolling"] = "canary"
    baseline: str
    candidate: str
    steps: tuple[Step, ...] = (5, 10, 25, 50, 100)
    step_interval_s: PositiveFloat = 60.0
    progress_deadline_s: PositiveFloat = 600.0
    on_inconclusive: Literal["pause", "rollback"] = "pause"
    analysis: Analysis = Analysis()
    require_stage: Literal["staging", "production"] | None = None
    confirm_webhook: Url | None = None
    shadow_phase: ShadowPhase | None = None

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: tuple[float | str, ...]) -> tuple[float | str, ...]:
        if not v:
            raise ValueError("give at least one step")
        numbers = [s for s in v if not isinstance(s, str)]
        if not numbers:
            raise ValueError("give at least one percentage step")
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise ValueError("steps must increase")
        return v


class Success(Model):
    """What counts as a success in an experiment: exactly one of the three criteria."""

    status_below: Annotated[Int, Field(ge=100, le=600)] | None = None
    json_field: str | None = None
    header: str | None = None
    equals: str | None = None


class Experiment(Model):
    """An A/B test on a route's split."""

    name: str
    control: str
    success: Success = Success(status_below=500)


class RouteConfig(Model):
    """A route: which requests it matches, its variants and their split."""

    name: str
    match: Match = Match()
    variants: Annotated[dict[str, str], Field(min_length=1)]
    split: Split
    shadow: Shadow | None = None
    rollout: Rollout | None = None
    experiment: Experiment | None = None
    max_body_bytes: Annotated[Int, Field(ge=0)] = 1 << 30
    max_concurrency: Annotated[Int, Field(ge=1)] | None = None  # None: unlimited


class ApprovalPolicy(Model):
    """How many approvals a promotion to a stage needs."""

    required: Annotated[Int, Field(ge=0, le=20)] = 1


Stage = Literal["staging", "production"]
DEFAULT_APPROVALS: dict[Stage, ApprovalPolicy] = {
    "staging": ApprovalPolicy(required=1),
    "production": ApprovalPolicy(required=2),
}


class Settings(Model):
    """The whole config file."""

    version: Literal[1]
    listen: str | tuple[str, ...] = "127.0.0.1:8080"
    tls: TLS | None = None
    admin: Admin = Admin()
    limits: Limits = Limits()
    state: str = "sqlite:///splitway-state.db"
    notifications: Notifications = Notifications()
    grace_period_s: NonNegativeFloat = 30.0
    backends: Annotated[dict[str, Backend], Field(min_length=1)]
    routes: tuple[RouteConfig, ...]
    approvals: dict[Stage, ApprovalPolicy] = dict(DEFAULT_APPROVALS)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if v != 1 or isinstance(v, bool):
            raise ValueError(f"unsupported config version {v!r}; this splitway reads version 1")
        return 1

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_shape(cls, v: Any) -> Any:
        # Settle the shape here, so that pydantic's str|tuple union never fails and its
        # member names ("constrained-str", "tuple[...]") never reach an error path.
        # Each address is parsed in cross_check, which can name ``listen[i]``.
        if isinstance(v, str):
            return v
        if isinstance(v, list | tuple) and v and all(isinstance(x, str) for x in v):
            return tuple(v)
        raise ValueError("should be host:port or a non-empty list of host:port")

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: tuple[RouteConfig, ...]) -> tuple[RouteConfig, ...]:
        if not v:
            raise ValueError("give at least one route")
        return v

    @field_validator("approvals")
    @classmethod
    def _approvals(cls, v: dict[Stage, ApprovalPolicy]) -> dict[Stage, ApprovalPolicy]:
        return {**DEFAULT_APPROVALS, **v}

    @property
    def listen_addresses(self) -> tuple[HostPort, ...]:
        """The data-plane listen addresses, parsed."""
        items = (self.listen,) if isinstance(self.listen, str) else self.listen
        return tuple(parse_listen(x) for x in items)

    def route(self, name: str) -> RouteConfig:
        """The route called ``name``; ``KeyError`` if there is none."""
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


def _known(names: Mapping[str, Any]) -> str:
    """``(known: a, b, c)`` for messages about a name that is not among ``names``."""
    shown = ", ".join(list(names)[:10]) + (", ..." if len(names) > 10 else "")
    return f"(known: {shown})"


def cross_check(s: Settings) -> list[ConfigProblem]:
    """Checks that span fields; returns every problem (empty when the settings are sound)."""
    problems: list[ConfigProblem] = []

    def bad(path: str, message: str) -> None:
        problems.append(ConfigProblem(path, message))

    backends = _known(s.backends)

    items = (s.listen,) if isinstance(s.listen, str) else s.listen
    data_addrs: set[HostPort] = set()
    for i, item in enumerate(items):
        at = "listen" if isinstance(s.listen, str) else f"listen[{i}]"
        try:
            addr = parse_listen(item)
        except ValueError as exc:
            bad(at, str(exc))
            continue
        if addr.port and addr in data_addrs:
            bad(at, f"{item!r} is listed twice")
        data_addrs.add(addr)
    admin_addr = parse_listen(s.admin.listen)
    if admin_addr.port and admin_addr in data_addrs:
        bad("admin.listen", f"{s.admin.listen!r} is also a data-plane listen address")
    if not s.state.startswith(("sqlite://", "postgresql://", "postgres://")):
        bad("state", f"{s.state!r} is neither sqlite:///PATH nor postgresql://...")
    for name in s.backends:
        if not NAME_RE.fullmatch(name):
            bad(f"backends.{name}", f"backend names are {NAME_RULE}")
    seen: dict[str, int] = {}
    experiments: dict[str, int] = {}
    for i, r in enumerate(s.routes):
        at = f"routes[{i}]"
        if not NAME_RE.fullmatch(r.name):
            bad(f"{at}.name", f"{r.name!r} is not {NAME_RULE}")
        if r.name in seen:
            bad(f"{at}.name", f"route name {r.name!r} is already used by routes[{seen[r.name]}]")
        seen.setdefault(r.name, i)
        for variant, backend in r.variants.items():
            if not NAME_RE.fullmatch(variant):
                bad(f"{at}.variants.{variant}", f"variant names are {NAME_RULE}")
            if backend not in s.backends:
                bad(f"{at}.variants.{variant}", f"backend {backend!r} is not defined {backends}")
        variants = _known(r.variants)
        for variant in r.split.weights:
            if variant not in r.variants:
                bad(f"{at}.split.weights.{variant}",
                    f"{variant!r} is not a variant of this route {variants}")
        if not any(w > 0 for w in r.split.weights.values()):
            bad(f"{at}.split.weights", "give at least one variant a positive weight")
        if r.split.strategy == "hash" and r.split.hash_on is None:
            bad(f"{at}.split.hash_on", "strategy 'hash' needs hash_on")
        if r.split.strategy != "hash" and r.split.hash_on is not None:
            bad(f"{at}.split.hash_on", "hash_on is used only with strategy: hash")
        if r.split.trusted_pins is not None and not r.split.allow_pin:
            bad(f"{at}.split.trusted_pins", "trusted_pins needs allow_pin: true")
        if r.shadow is not None and r.shadow.backend not in s.backends:
            bad(f"{at}.shadow.backend", f"backend {r.shadow.backend!r} is not defined {backends}")
        if r.rollout is not None:
            for key in ("baseline", "candidate"):
                if getattr(r.rollout, key) not in r.variants:
                    name = getattr(r.rollout, key)
                    bad(f"{at}.rollout.{key}", f"{name!r} is not a variant {variants}")
            if r.rollout.baseline == r.rollout.candidate:
                bad(f"{at}.rollout.candidate", "candidate and baseline must differ")
            if r.rollout.strategy == "blue_green" and r.split.trusted_pins is None:
                bad(f"{at}.rollout.strategy", "blue_green is judged on pinned requests: give "
                    "split.allow_pin and split.trusted_pins")
        if r.experiment is not None:
            e = r.experiment
            if not NAME_RE.fullmatch(e.name):
                bad(f"{at}.experiment.name", f"{e.name!r} is not {NAME_RULE}")
            if e.name in experiments:
                bad(f"{at}.experiment.name",
                    f"experiment {e.name!r} is already defined in routes[{experiments[e.name]}]")
            experiments.setdefault(e.name, i)
            if e.control not in r.variants:
                bad(f"{at}.experiment.control", f"{e.control!r} is not a variant {variants}")
            chosen = [
                k for k in ("status_below", "json_field", "header")
                if getattr(e.success, k) is not None
            ]
            if len(chosen) != 1:
                bad(f"{at}.experiment.success",
                    "give exactly one of status_below, json_field, header")
            elif e.success.equals is not None and chosen == ["status_below"]:
                bad(f"{at}.experiment.success.equals", "equals goes with header or json_field")
    return problems


def effective_weights(route: RouteConfig) -> dict[str, float]:
    """The config's weights for every variant (a variant missing from ``weights`` gets 0)."""
    return {v: float(route.split.weights.get(v, 0.0)) for v in route.variants}
