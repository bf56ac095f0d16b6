"""Find `imagefactory` command lines in shell text and check them against the real CLI parser.

Used by test_pipelines.py (CI YAML) and test_docs.py (README and docs/*.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from dataclasses import dataclass

OPERATORS = {";", "&&", "||", "|", "&", "(", ")", ">", ">>", "<", "2>", "|&", ";;"}
SHELL_WORDS = {"then", "do", "else", "if", "!", "time", "exec", "sudo", "env", "nice"}


@dataclass
class Invocation:
    where: str  # file and place, for messages
    argv: list[str]  # arguments after `imagefactory` / `python -m imagefactory`

    @property
    def subcommand(self) -> str | None:
        return self.argv[0] if self.argv and not self.argv[0].startswith("-") else None

    def __str__(self) -> str:
        return f"{self.where}: imagefactory {shlex.join(self.argv)}"


def join_continuations(text: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def simple_commands(line: str) -> list[list[str]]:
    """Split one shell line into simple commands (at ; && || | and redirections)."""
    try:
        tokens = _tokens(line)
    except ValueError:  # unbalanced quotes: not a shell line we can read
        return []
    commands: list[list[str]] = []
    current: list[str] = []
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok in OPERATORS or set(tok) <= set(";&|<>()"):
            if tok in (">", ">>", "<", "2>") or tok.endswith(">"):
                skip_next = True  # the redirection target
                continue
            if current:
                commands.append(current)
            current = []
            continue
        current.append(tok)
    if current:
        commands.append(current)
    return commands


def imagefactory_argv(words: list[str]) -> list[str] | None:
    """Arguments after `python -m imagefactory` or `imagefactory`, or None if this isn't one."""
    i = 0
    while i < len(words) and (words[i] in SHELL_WORDS or ("=" in words[i] and not words[i].startswith("-")
                                                          and words[i].split("=", 1)[0].isidentifier())):
        i += 1
    rest = words[i:]
    if len(rest) >= 3 and rest[0].split("/")[-1].startswith("python") and rest[1:3] == ["-m", "imagefactory"]:
        return rest[3:]
    if rest and rest[0] == "imagefactory":
        return rest[1:]
    return None


def find_invocations(text: str, where: str) -> list[Invocation]:
    found = []
    for line in join_continuations(text):
        for words in simple_commands(line):
            argv = imagefactory_argv(words)
            if argv is not None:
                found.append(Invocation(where, argv))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check(parser: argparse.ArgumentParser, inv: Invocation) -> str | None:
    """None if the real parser accepts the invocation, else why not."""
    subs = subcommands(parser)
    if inv.subcommand is None:
        return None if not inv.argv or inv.argv[0] in ("-h", "--help") else f"no subcommand: {inv}"
    if inv.subcommand not in subs:
        return f"unknown subcommand {inv.subcommand!r}: {inv}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _, unknown = parser.parse_known_args(inv.argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return None
        return f"rejected ({err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else exc}): {inv}"
    if unknown:
        return f"unknown arguments {unknown}: {inv}"
    return None
