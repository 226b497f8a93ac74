"""Shell lines as data: commands are argv tuples, rendered once, quoted every time.

A pipeline step is a tuple of :data:`Line` objects. Rendering turns them into POSIX
``sh`` text (bash, dash and the shells of every CI platform run it):

- a literal argument is passed through :func:`shlex.quote`;
- a :class:`Ref` (a variable the CI platform or the script sets) becomes ``"$NAME"``,
  with the platform's own name for the logical ones (``COMMIT`` is ``GITHUB_SHA`` on
  GitHub, ``CI_COMMIT_SHA`` on GitLab...);
- a :class:`Word` is one double-quoted word mixing literal text, references and command
  substitutions (``"$(printf %.8s "$GITHUB_SHA")"``).

No line is ever built by pasting a user's string into shell text.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

_REF_RE = re.compile(r"[A-Z_][A-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class Ref:
    """A variable: logical (mapped per platform, e.g. ``COMMIT``) or set by the script."""

    name: str

    def __post_init__(self) -> None:
        if not _REF_RE.fullmatch(self.name):
            raise ValueError(f"bad variable name {self.name!r}")


@dataclass(frozen=True, slots=True)
class Cmd:
    """A command: argv, optionally reading ``stdin`` from a file or silenced."""

    argv: tuple[Arg, ...]
    stdin: str | None = None
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class Word:
    """One double-quoted shell word made of literal text, variables and ``$(commands)``."""

    parts: tuple[str | Ref | Cmd, ...]


Arg = str | Ref | Word


@dataclass(frozen=True, slots=True)
class Assign:
    """``NAME="word"``."""

    name: Ref
    value: Word


@dataclass(frozen=True, slots=True)
class Unless:
    """Run ``then`` unless ``check`` succeeds (``check > /dev/null 2>&1 || then``): what
    makes a re-run of a deploy skip what it already did."""

    check: Cmd
    then: Cmd


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Repeat ``check`` every ``interval_s`` until it succeeds; fail after ``tries``."""

    check: Cmd
    tries: int
    interval_s: int
    message: str


Line = Cmd | Assign | Unless | WaitFor


class Renderer:
    """Renders lines for one platform: ``refs`` maps logical variables to its names."""

    def __init__(self, refs: Mapping[str, str]) -> None:
        self.refs = dict(refs)

    def var(self, ref: Ref) -> str:
        return self.refs.get(ref.name, ref.name)

    def arg(self, arg: Arg) -> str:
        if isinstance(arg, Ref):
            return f'"${self.var(arg)}"'
        if isinstance(arg, Word):
            return self.word(arg)
        return shlex.quote(arg)

    def word(self, word: Word) -> str:
        out = []
        for part in word.parts:
            if isinstance(part, Ref):
                out.append("${" + self.var(part) + "}")
            elif isinstance(part, Cmd):
                out.append(f"$({self.cmd(part)})")
            else:
                out.append(re.sub(r'([\\"$`])', r"\\\1", part))
        return '"' + "".join(out) + '"'

    def cmd(self, cmd: Cmd) -> str:
        text = " ".join(self.arg(a) for a in cmd.argv)
        if cmd.stdin is not None:
            text += f" < {shlex.quote(cmd.stdin)}"
        if cmd.quiet:
            text += " > /dev/null 2>&1"
        return text

    def line(self, line: Line) -> list[str]:
        """One model line as one or more lines of shell text."""
        if isinstance(line, Cmd):
            return [self.cmd(line)]
        if isinstance(line, Assign):
            return [f"{self.var(line.name)}={self.word(line.value)}"]
        if isinstance(line, Unless):
            quiet = Cmd(line.check.argv, line.check.stdin, quiet=True)
            return [f"{self.cmd(quiet)} || {self.cmd(line.then)}"]
        return [
            "tries=0",
            f"until {self.cmd(line.check)}; do",
            "  tries=$((tries + 1))",
            f'  if [ "$tries" -ge {int(line.tries)} ]; then '
            f"echo {shlex.quote(line.message)} >&2; exit 1; fi",
            f"  sleep {int(line.interval_s)}",
            "done",
        ]

    def script(self, lines: tuple[Line, ...]) -> str:
        """The lines as one script (no trailing newline)."""
        return "\n".join(text for line in lines for text in self.line(line))


def splitway(*argv: Arg) -> Cmd:
    """A ``splitway`` command."""
    return Cmd(("splitway", *argv))


def python(*argv: Arg) -> Cmd:
    """A ``python`` command."""
    return Cmd(("python", *argv))
