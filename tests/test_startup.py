"""Start-up cost of the CLI: what `--help`, `list` and a subcommand's `--help` import.

Every command module registers itself when the parser is built, so one heavy top-level import
in any of them makes every invocation slow (a no-op `build` has a 0.25 s budget, see
docs/performance.md). These tests run the real entry point in a subprocess with
``-X importtime`` and read the modules it loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Third-party packages and our own modules that only some commands need.
HEAVY = ("rich", "sh", "yaml", "tenacity", "elftools", "asyncio", "http.client", "recipes",
         "imagefactory.buildah", "imagefactory.config", "imagefactory.execute", "imagefactory.cache_registry",
         "imagefactory.plan", "imagefactory.verify", "imagefactory.sign", "imagefactory.quadlet")


def imported(*argv: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level package and module names `python -m imagefactory ARGV` imported, and the run."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "imagefactory", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    names = set()
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", line)
        if match:
            names.add(match.group(1))
    assert "imagefactory.cli" in names, proc.stderr[-2000:]  # the output really is an import trace
    return names, proc


def loaded(names: set[str], wanted: tuple[str, ...]) -> list[str]:
    return sorted(w for w in wanted if w in names)


def test_help_imports_nothing_heavy():
    names, proc = imported("--help")
    assert proc.returncode == 0 and "COMMAND" in proc.stdout
    assert loaded(names, HEAVY) == []


def test_list_imports_only_what_listing_needs():
    """`list` reads the settings (yaml), loads the recipes and prints a rich table; it builds,
    pulls, retries and verifies nothing."""
    names, proc = imported("list")
    assert proc.returncode == 0 and "ocserv-modern-ci" in proc.stdout
    assert loaded(names, ("tenacity", "elftools", "http.client", "imagefactory.execute",
                          "imagefactory.cache_registry", "imagefactory.ui", "imagefactory.describe",
                          "imagefactory.verify", "imagefactory.sign", "imagefactory.quadlet",
                          "imagefactory.reproduce", "rich.live", "sh", "asyncio")) == []


def test_plan_runs_buildah_without_sh():
    """Planning asks buildah for the store's images (as a no-op build does) through subprocess:
    `sh` (asyncio, importlib.metadata) costs about 50 ms of start-up and 50 ms per short call."""
    names, proc = imported("plan", "ci", "--offline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "imagefactory.buildah" in names and loaded(names, ("sh", "asyncio")) == []


@pytest.mark.parametrize(("command", "needed"), [("build", []), ("sign", []), ("quadlet", []),
                                                 ("verify", ["elftools", "rich"])])  # --profile choices
def test_subcommand_help_loads_only_its_own_arguments(command, needed):
    """Only the named subcommand's options are set up: `sign --help` does not import the ELF
    reader `verify` needs for its --profile choices, nor the executor."""
    names, proc = imported(command, "--help")
    assert proc.returncode == 0 and "--root" in proc.stdout
    assert loaded(names, ("tenacity", "elftools", "http.client", "imagefactory.execute", "rich")) == needed


def test_errors_still_explained_after_lazy_imports():
    """The user-facing errors are mapped to one line and exit 2 (their classes are imported only
    when one is raised)."""
    _, proc = imported("plan", "no-such-target", "--offline")
    assert proc.returncode == 2
    assert "error: unknown target 'no-such-target'" in proc.stdout + proc.stderr.splitlines()[-1]


def test_full_parser_still_has_every_subcommand_option():
    """`cli.parser()` without a command line (docs checks, `run`'s second parse) sets up every
    subcommand, as before."""
    from imagefactory import cli

    args = cli.parser().parse_args(["sign", "ci", "--registry", "r.example/x", "--keyless", "--root", "/tmp/r"])
    assert (args.command, args.keyless, args.root) == ("sign", True, "/tmp/r")
    only_list = cli.parser(["list"])
    with pytest.raises(SystemExit):
        only_list.parse_args(["sign", "ci", "--keyless"])  # not set up: an unknown option
    assert only_list.parse_args(["list", "--root", "/tmp/r"]).root == "/tmp/r"


def test_git_facts_reads_revision_and_origin(tmp_path):
    """Every build reads these (plain subprocess calls, no sh): HEAD and origin of a checkout, and
    nothing, without an error, outside one."""
    from imagefactory.prepare import git_facts

    repo = tmp_path / "repo"
    (repo / "recipes").mkdir(parents=True)
    (repo / "recipes" / "r.py").write_text("# recipe\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "one")
    assert git_facts(repo / "recipes") == (git("rev-parse", "HEAD"), None)
    git("remote", "add", "origin", "https://git.example.invalid/recipes.git")
    assert git_facts(repo / "recipes") == (git("rev-parse", "HEAD"), "https://git.example.invalid/recipes.git")
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_facts(outside) == (None, None)
