"""Rendering: YAML documents dumped from data, the Jenkinsfile filled from templates.

The readable templates live in :mod:`control.ci_templates` (package data):

- ``github.yaml``, ``gitlab.yaml``, ``azure.yaml``: the fixed part of each YAML pipeline
  (triggers, permissions, defaults). The platform module loads it as data and adds the
  jobs; the result is dumped with :func:`dump_yaml`, never pasted together as text.
- ``Jenkinsfile.tmpl`` and ``jenkins-*.groovy``: Groovy with ``{{name}}`` placeholders.
  :func:`fill` refuses a template whose placeholders and values differ. A placeholder
  alone on its line takes a :class:`Groovy` fragment (another filled template) and
  indents it to its column; any other placeholder takes a one-line plain value, which
  must match :data:`GROOVY_VALUE_RE` and is then escaped for a single-quoted Groovy
  string (where Groovy interpolates nothing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml


class Groovy(str):
    """Groovy text built by this package (a filled template or a fragment made of checked
    values); the only thing a block placeholder accepts."""

    __slots__ = ()


_ANY = re.compile(r"^([ \t]*)\{\{([a-z_]+)\}\}[ \t]*\n|\{\{([a-z_]+)\}\}", re.MULTILINE)
#: What a plain value inserted in a Groovy template may contain (shell text included).
GROOVY_VALUE_RE = re.compile(r"[A-Za-z0-9 _.,:;/@%+=*?!#&|<>'\"$(){}\[\]~^\n-]*")


class TemplateError(ValueError):
    """A template and its values do not fit (a bug, not a user error)."""


@cache
def template(name: str) -> str:
    """The text of ``control/ci_templates/NAME``."""
    return resources.files("control.ci_templates").joinpath(name).read_text("utf-8")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only ``true``/``false`` (GitHub's ``on:`` stays a string)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regex) for tag, regex in resolvers if tag != _BOOL]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|false)$"), list("tf"))


def base_yaml(name: str) -> dict[str, Any]:
    """A base YAML template as a fresh dict (comments dropped)."""
    data = yaml.load(template(name), Loader=_Loader)  # noqa: S506 - a SafeLoader
    if not isinstance(data, dict):  # pragma: no cover - the package's own files
        raise TemplateError(f"{name}: not a mapping")
    return data


def groovy_string(value: str) -> str:
    """``value`` checked against :data:`GROOVY_VALUE_RE` and escaped for a Groovy
    single-quoted (or triple-single-quoted) string: no interpolation happens there."""
    if not GROOVY_VALUE_RE.fullmatch(value):
        raise TemplateError(f"{value!r} has characters a Jenkinsfile value may not carry")
    return value.replace("\\", "\\\\").replace("'", "\\'")


def fill(name: str, values: Mapping[str, str | Groovy]) -> Groovy:
    """Template ``name`` with every placeholder replaced (see the module docstring), in
    one pass: inserted text is never scanned for placeholders again."""
    text = template(name)
    wanted = {m.group(2) or m.group(3) for m in _ANY.finditer(text)}
    if wanted != set(values):
        raise TemplateError(f"{name}: placeholders {sorted(wanted)} but values "
                            f"{sorted(values)}")

    def insert(m: re.Match[str]) -> str:
        if m.group(2) is not None:  # alone on its line: a fragment, indented
            fragment = values[m.group(2)]
            if not isinstance(fragment, Groovy):
                raise TemplateError(f"{name}: {{{{{m.group(2)}}}}} takes a Groovy fragment")
            return "".join(f"{m.group(1)}{line}\n" if line else "\n"
                           for line in fragment.splitlines())
        value = values[m.group(3)]
        if isinstance(value, Groovy) or "\n" in value:
            raise TemplateError(f"{name}: {{{{{m.group(3)}}}}} takes a one-line value")
        return groovy_string(value)

    return Groovy(_ANY.sub(insert, text))


def join(fragments: list[Groovy]) -> Groovy:
    """Fragments one after another."""
    return Groovy("".join(fragments))


class _Dumper(yaml.SafeDumper):
    """Block style, list items indented under their key, multi-line strings as ``|``."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(header: str, data: Mapping[str, Any]) -> str:
    """``data`` as YAML after ``header`` (comment lines)."""
    body = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, width=10_000,
                     allow_unicode=True, default_flow_style=False)
    return header + body
