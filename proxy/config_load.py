"""Loading the configuration: ``${ENV}`` interpolation, YAML (:mod:`proxy.yaml_load`:
duplicate keys, size, depth and alias limits), and pydantic's errors turned into one line
per problem with its field path (``routes[0].split.weights.canary: ...``). The models
themselves are in :mod:`proxy.config`; this module only turns text into them.

``load_yaml`` is re-exported here for the other YAML files splitway reads (``tokens.yaml``).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from proxy.config import Settings, cross_check
from proxy.errors import ConfigError, ConfigProblem
from proxy.yaml_load import MAX_YAML_BYTES, TOO_LARGE
from proxy.yaml_load import load_yaml as load_yaml  # re-exported for control.auth

_ENV_RE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}`` (default when unset or empty).

    ``$${...}`` stays as a literal ``${...}``; full-line comments are not interpolated.
    An unset name without a default is a :class:`ConfigError` naming its line and column.
    """
    missing: dict[str, ConfigProblem] = {}
    lines = text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        if line.lstrip().startswith("#") or "$" not in line:
            continue

        def sub(m: re.Match[str], n: int = n) -> str:
            escaped, name, default = m.group(1), m.group(2), m.group(3)
            if escaped:
                return m.group(0)[1:]
            value = env.get(name)
            if value is not None and (value or default is None):
                return value
            if default is not None:
                return default
            if name not in missing:
                missing[name] = ConfigProblem(
                    f"line {n + 1}, column {m.start() + 1}",
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give a default)",
                )
            return ""

        lines[n] = _ENV_RE.sub(sub, line)
    if missing:
        raise ConfigError(list(missing.values()))
    return "".join(lines)


# --- pydantic errors -> one line per problem -----------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None``; ``None`` for a real union."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return None
            tp = members[0]
        else:
            return tp


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model found at ``loc`` (a path from ``root``), if any."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is tuple and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _loc(loc: tuple[int | str, ...]) -> str:
    """``("routes", 0, "split")`` -> ``routes[0].split``; pydantic's own tags are dropped."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            # an int is a list index, except as a dict key (followed by pydantic's "[key]")
            key = i + 1 < len(loc) and loc[i + 1] == "[key]"
            out += f".{part}" if key and out else f"[{part}]"
        elif part == "[key]" or part.startswith(("function-", "tagged-union[", "union[")):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


_MESSAGES = {
    "tuple_type": "should be a list",
    "list_type": "should be a list",
    "dict_type": "should be a mapping (key: value)",
    "model_type": "should be a mapping (key: value)",
    "model_attributes_type": "should be a mapping (key: value)",
    "missing": "required, but missing",
    "path_type": "should be a file path",
}


def _message(err: ErrorDetails, root: type[BaseModel]) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden" and loc:
        model = _model_at(root, loc[:-1])
        key = str(loc[-1])
        if model is None:
            return f"unknown key {key!r}"
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            return f"unknown key {key!r}; did you mean {close[0]!r}?"
        return f"unknown key {key!r}; expected one of: {', '.join(allowed)}"
    if loc and loc[-1] == "[key]":
        return f"unknown key; {err['msg'].replace('Input should be', 'expected')}"
    msg = _MESSAGES.get(kind) or err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if msg.startswith("Input should"):
        msg = msg.removeprefix("Input ")
    return " ".join(msg.split())  # one line, whatever the validator wrote


def validation_problems(exc: ValidationError, root: type[BaseModel]) -> list[ConfigProblem]:
    """pydantic's errors for ``root.model_validate`` as one-line problems with clean paths.

    Shared with the other YAML files splitway reads (``tokens.yaml``).
    """
    problems: dict[tuple[str, str], None] = {}
    for err in exc.errors(include_url=False):
        problems[(_loc(err["loc"]), _message(err, root))] = None
    return [ConfigProblem(p, m) for p, m in problems]


def parse_settings(data: Any) -> Settings:
    """Validate already-parsed YAML data; raise :class:`ConfigError` listing every problem."""
    if data is None:
        raise ConfigError([ConfigProblem("(top level)", "the config file is empty")])
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(
            "(top level)", f"the config must be a YAML mapping, not a {type(data).__name__}")])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, Settings)) from None
    found = cross_check(settings)
    if found:
        raise ConfigError(found)
    return settings


def load_settings(text: str, env: Mapping[str, str] | None = None) -> Settings:
    """Parse YAML text (after ``${ENV}`` interpolation) into checked :class:`Settings`."""
    return parse_settings(load_yaml(interpolate(text, env or {})))


def resolve_relative(settings: Settings, base_dir: Path) -> Settings:
    """Resolve the relative file paths in ``settings`` against ``base_dir``.

    ``admin.tokens_file``, ``tls.cert`` and ``tls.key`` are made absolute (``~`` is
    expanded); everything else is returned unchanged. :func:`load_settings_file` calls
    this with the config file's directory, so ``tokens_file: tokens.yaml`` means the
    file beside the config whatever the working directory.
    """
    base = base_dir.expanduser().absolute()

    def fix(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else base / p

    update: dict[str, Any] = {}
    if settings.admin.tokens_file is not None:
        update["admin"] = settings.admin.model_copy(
            update={"tokens_file": fix(settings.admin.tokens_file)})
    if settings.tls is not None:
        update["tls"] = settings.tls.model_copy(
            update={"cert": fix(settings.tls.cert), "key": fix(settings.tls.key)})
    return settings.model_copy(update=update) if update else settings


def load_settings_file(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate, parse and check a config file; relative paths in it are
    resolved against its directory (:func:`resolve_relative`)."""
    try:
        with path.open("rb") as f:  # bounded: /dev/zero or a runaway file is not read whole
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError([TOO_LARGE])
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(
            str(path), f"not UTF-8 text (bad byte at offset {exc.start})")]) from None
    return resolve_relative(load_settings(text, env), path.parent)
