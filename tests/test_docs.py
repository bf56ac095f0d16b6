"""Every imagefactory command shown in README.md and docs/*.md parses with the real CLI parser.

Commands are taken from fenced ```console blocks, from lines starting with ``$ `` (a command
may continue on the next lines with ``\\``). The e2e suite runs the real builds; this checks
that the documented subcommands and flags exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagefactory import cli

try:
    from cli_commands import Invocation, check, find_invocations
except ImportError:  # tests/ made a package
    from tests.cli_commands import Invocation, check, find_invocations

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
EXPECTED_DOCS = {"concepts.md", "extending.md", "configuration.md", "air-gapped.md", "supply-chain.md",
                 "troubleshooting.md", "ci.md"}
FENCE = re.compile(r"^```console[^\n]*\n(.*?)^```", re.S | re.M)


def console_commands(path: Path, root: Path = REPO) -> list[Invocation]:
    found = []
    text = path.read_text()
    for block in FENCE.finditer(text):
        lineno = text[:block.start()].count("\n") + 2
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            start = lineno + i
            if line.startswith("$ "):
                cmd = line[2:]
                while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd.rstrip()[:-1] + " " + lines[i]
                found += find_invocations(cmd, f"{path.relative_to(root)}:{start}")
            i += 1
    return found


def test_the_docs_exist():
    present = {p.name for p in (REPO / "docs").glob("*.md")}
    assert present >= EXPECTED_DOCS, f"missing docs: {sorted(EXPECTED_DOCS - present)}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_parse(path):
    invocations = console_commands(path)
    if path.name in EXPECTED_DOCS - {"extending.md"}:
        assert invocations, f"{path.name} shows no imagefactory command in a ```console block"
    parser = cli.parser()
    problems = [p for inv in invocations if (p := check(parser, inv))]
    assert not problems, "\n".join(problems)


def test_docs_cover_every_subcommand():
    try:
        from cli_commands import subcommands
    except ImportError:  # tests/ made a package
        from tests.cli_commands import subcommands

    used = {inv.subcommand for path in DOCS for inv in console_commands(path)}
    missing = sorted(set(subcommands(cli.parser())) - used)
    assert not missing, f"subcommands no doc shows in a console block: {', '.join(missing)}"


def test_extractor_reads_continuations_comments_and_chains(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```console\n$ ci/setup && python -m imagefactory build ci   # comment\n"
                   "$ imagefactory plan dev \\\n    --offline\nsome output\n"
                   "$ IMAGEFACTORY_JOBS=3 imagefactory images | head\n```\n")
    argvs = [inv.argv for inv in console_commands(doc, root=tmp_path)]
    assert argvs == [["build", "ci"], ["plan", "dev", "--offline"], ["images"]]
