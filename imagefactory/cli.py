"""`python -m imagefactory`: parse arguments, then run a short pipeline of plain functions.

Each subcommand is a function ``(args, settings) -> exit code`` registered with
:func:`command`. Commands that touch images accept the storage options; every
command can write a machine-readable ``--report FILE.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import rootless

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from .buildah import Buildah
    from .config import Settings


class LazyConsole:
    """A rich Console made on first use: registering the commands (every start, `--help` too)
    does not import rich. Every attribute is the real console's."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # CI logs are not terminals: give tables room instead of rich's 80-column default.
            self._console = Console(stderr=self._stderr, width=None if stream.isatty() else 160)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)

    def __enter__(self) -> Console:  # rich's Live uses `with console:`
        return self.real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self.real().__exit__(*exc)


console = LazyConsole()
err_console = LazyConsole(stderr=True)

Handler = Callable[[argparse.Namespace, "Settings"], int]
_COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {}

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Commands an ordinary user runs as is; every other one re-runs itself inside buildah's user
# namespace (see rootless.py), where it can mount images and bootstrap root file systems.
OUTSIDE_USERNS = {"doctor", "list", "plan"}


def command(name: str, help: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand; modules outside cli.py may register their own too."""

    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = (fn, args, help)
        return fn

    return deco


def _common(p: argparse.ArgumentParser) -> None:
    from .platforms import PLATFORMS

    g = p.add_argument_group("storage and settings")
    g.add_argument("--root", help="buildah storage root (private stores for tests/CI)")
    g.add_argument("--runroot", help="buildah run root matching --root")
    g.add_argument("--storage-driver", dest="storage_driver", help="e.g. overlay, vfs")
    g.add_argument("--isolation", help="chroot (default), oci, rootless")
    g.add_argument("--platform", help=f"one of {', '.join(PLATFORMS)} (default debian)")
    g.add_argument("--arch", dest="arches", metavar="ARCH[,ARCH]",
                   help="CPU architectures, e.g. amd64,arm64 (default: `arches` setting, else this machine's); "
                        "several make a manifest list (docs/multiarch.md)")
    g.add_argument("--config", help="settings file (default: ./imagefactory.yaml)")
    g.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe value, e.g. s4.context=PATH (repeatable)")
    g.add_argument("--report", help="write a JSON report of this command to FILE")
    g.add_argument("-v", "--verbose", action="store_true", help="show every step, cached ones too")


# Commands that read or fill the registry step cache (cache_registry.py).
REGISTRY_CACHE_COMMANDS = ("build", "plan")


def _registry_cache(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("registry step cache (docs/ci.md)")
    g.add_argument("--cache-from", dest="cache_from", action="append", default=None, metavar="REPO",
                   help="look step-cache entries up in this registry repository (repeatable)")
    g.add_argument("--cache-to", dest="cache_to", metavar="REPO", help="push every committed entry here")
    g.add_argument("--cache-required", dest="cache_required", action="store_const", const=True, default=None,
                   help="a cache registry that fails is an error, not a silent rebuild (CI)")
    g.add_argument("--authfile", help="containers auth file with the registry credentials "
                                      "(default: REGISTRY_AUTH_FILE, then the tools' default)")
    g.add_argument("--tls-verify", dest="tls_verify", choices=("true", "false"), default=None,
                   type=lambda text: text.lower(), help="verify the registry's TLS certificate (default true)")


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; given the command line, only the subcommand it names gets its options
    (the others are listed for --help but cost nothing, and `--help` alone loads no platform)."""
    _load_command_modules()
    chosen = None if argv is None else next((word for word in argv if not word.startswith("-")), "")
    p = argparse.ArgumentParser(prog="imagefactory", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_fn, add_args, help_text) in sorted(_COMMANDS.items()):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if chosen not in (None, name):
            continue
        add_args(sp)
        if name in REGISTRY_CACHE_COMMANDS:
            _registry_cache(sp)
        _common(sp)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    from . import config as config_mod
    from .config import ConfigError
    from .platforms import PLATFORMS

    overrides = {k: getattr(args, k, None) for k in
                 ("root", "runroot", "storage_driver", "isolation", "platform", "arches", "jobs", "cache_from", "cache_to",
                  "cache_required", "authfile", "tls_verify")}
    if getattr(args, "no_cache", False):
        overrides["no_cache"] = True
    values = {}
    for item in getattr(args, "set_values", []) or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        values[k] = v
    if values:
        overrides["values"] = values
    return config_mod.load(getattr(args, "config", None), overrides=overrides, platforms=tuple(PLATFORMS))


def main(argv: list[str] | None = None) -> int:
    rootless.follow_outer_process()
    p = parser(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if not args.command:
        p.print_help()
        return EXIT_USAGE
    from .loader import load_recipes

    handler = _COMMANDS[args.command][0]
    started = time.monotonic()
    try:
        settings = settings_from(args)
        if args.command not in OUTSIDE_USERNS and rootless.needs_userns():
            rootless.check_can_unshare()
            rootless.reexec_in_userns(settings.storage.global_args(), sys.argv[1:] if argv is None else argv)
        load_recipes(settings.recipe_paths)
        code = handler(args, settings)
    except (KeyboardInterrupt, ValueError, RuntimeError) as exc:
        code = _explain_failure(exc)
        if code is None:
            raise
    report = getattr(args, "_report_data", None)
    if args.report:
        data = {"command": args.command, "exit_code": code, "seconds": round(time.monotonic() - started, 3)}
        data.update(report or {})
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(data, indent=2, default=str))
    return code


def _explain_failure(exc: BaseException) -> int | None:
    """Print a failure the user can act on in one line and give its exit code; None for a bug
    (the caller re-raises it). The error classes are imported here, not at start-up."""
    from rich.markup import escape

    from .buildah import BuildahError, Cancelled
    from .cache_registry import RegistryCacheError
    from .config import ConfigError
    from .recipe import RecipeError

    if isinstance(exc, (ConfigError, RecipeError, rootless.RootlessError)):
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return EXIT_USAGE
    if isinstance(exc, (KeyboardInterrupt, Cancelled)):
        err_console.print("[yellow]interrupted; working containers removed[/]")
        return EXIT_INTERRUPTED
    if isinstance(exc, RegistryCacheError):
        err_console.print(f"[bold red]registry cache:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_FAIL
    if isinstance(exc, BuildahError):
        err_console.print(f"[bold red]buildah failed[/] (exit {exc.exit_code}): {' '.join(exc.command)}",
                          highlight=False)
        err_console.print(exc.stderr_tail, highlight=False, markup=False)
        return EXIT_FAIL
    return None


def _load_command_modules() -> None:
    """Import the modules that register their own subcommands."""
    from . import commands  # noqa: F401


# -- shared helpers for command modules ---------------------------------------
def buildah_for(settings: Settings) -> Buildah:
    from .buildah import Buildah
    from .retry import RetryPolicy

    return Buildah(settings.storage, retry=RetryPolicy.from_settings(settings))


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[Text(str(x)) for x in r])  # cells are data (cosign reasons hold "[...]"), not markup
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
