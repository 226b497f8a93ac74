"""YAML text -> Python data, for every YAML file splitway reads (the config, ``tokens.yaml``).

PyYAML's ``SafeLoader`` with five refusals, each a :class:`~proxy.errors.ConfigError`
naming the line and column (or the size) rather than a traceback:

- **duplicate keys** in a mapping (YAML itself would keep the last one silently);
- **text over** :data:`MAX_YAML_BYTES`, checked before parsing;
- **nesting deeper than** :data:`MAX_YAML_DEPTH` collections. PyYAML composes nodes
  recursively, so 5,000 nested ``[`` reached Python's recursion limit (a
  ``RecursionError`` out of ``check``, ``run`` and reload); the depth is counted as each
  node starts, so the refusal comes long before the stack is deep;
- **more than** :data:`MAX_YAML_NODES` nodes *with aliases expanded*, and aliases that
  refer to a node containing them. An alias is a reference, so ``*a`` costs nothing to
  parse, but whatever walks the data afterwards (validation, JSON, a copy) sees the
  expanded tree: nine levels of ten aliases each (the "billion laughs") is 10⁹ nodes from
  a few hundred bytes. Each node's expanded size is computed once, as it is composed, so
  the count is linear in the text whatever the expansion;
- **values Python refuses** — an integer of more than 4,300 digits, a date in month 13 —
  which PyYAML lets out as a bare ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import Node

from proxy.errors import ConfigError, ConfigProblem

#: Largest YAML text accepted (a config of a thousand routes is a few hundred KiB).
MAX_YAML_BYTES = 4 << 20
#: Deepest nesting of mappings and sequences (a config nests about six levels).
MAX_YAML_DEPTH = 64
#: Most nodes (scalars, mappings, sequences) once aliases are expanded.
MAX_YAML_NODES = 100_000


class _DuplicateKeyError(ConstructorError):
    pass


class _LimitError(ComposerError):
    """A size, depth or alias limit; its message is shown without "syntax error"."""


class _PlainError(ConstructorError):
    """A value Python refuses; shown without "syntax error" too."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys, deep nesting and alias bombs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[int] = []  # per collection being composed: its children's sizes
        self._sizes: dict[int, int] = {}  # id(node) -> node count with aliases expanded

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        node: Node | None
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # the anchored node is still open: the alias is inside it
                raise _LimitError(None, None, f"alias *{event.anchor} refers to a node that "
                                  "contains it (recursive YAML is not accepted)", mark)
        else:
            if len(self._open) >= MAX_YAML_DEPTH:
                raise _LimitError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                  mark)
            self._open.append(0)
            try:
                node = super().compose_node(parent, index)
            finally:
                size = 1 + self._open.pop()
            self._sizes[id(node)] = size
        if self._open:  # the parent's running count: a long flat list stops early too
            self._open[-1] += size
        if size > MAX_YAML_NODES or (self._open and self._open[-1] >= MAX_YAML_NODES):
            raise _LimitError(None, None, f"more than {MAX_YAML_NODES:,} YAML nodes once "
                              "aliases are expanded", mark)
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # A scalar Python refuses (an int of 5,000 digits, the 45th of month 13) raises a
        # plain ValueError out of PyYAML: name its place like any other YAML error.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            reason = str(exc).split(";")[0]  # not Python's advice on its own settings
            raise _PlainError(None, None, f"cannot read this value: {reason}",
                              node.start_mark) from None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:  # the node's own keys, before ``<<`` merges
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in first:
            raise _DuplicateKeyError(
                None, None,
                f"duplicate key {key!r} (first on line {first[key]})", key_node.start_mark,
            )
        first[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, _DuplicateKeyError | _LimitError | _PlainError):
        return ConfigProblem(where, problem)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} started on line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    return ConfigProblem(where, f"YAML syntax error: {problem}")


#: The problem reported for a text over :data:`MAX_YAML_BYTES`.
TOO_LARGE = ConfigProblem(
    "(whole file)", f"larger than {MAX_YAML_BYTES >> 20} MiB, the most YAML splitway reads")


def load_yaml(text: str) -> Any:
    """Safe-load YAML within the limits above; :class:`ConfigError` names line and column."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError([TOO_LARGE])
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc)]) from None
