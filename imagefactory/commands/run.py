"""Subcommands that use built images: shell, run (podman) and quadlet (systemd units)."""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, buildah_for, command, console, err_console, settings_from

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings

DEFAULT_QUADLET_OUT = "quadlet"


def _podman_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="target to start (see `list`)")
    p.add_argument("--project", metavar="DIR", help="folder mounted at /workspace (default: current folder)")
    p.add_argument("--dry-run", action="store_true", help="print the podman command, run nothing")
    p.add_argument("--image", metavar="REF", help="run this reference instead of the target's local image")
    p.add_argument("-e", "--env", dest="env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for the container (repeatable)")


def _shell_args(p: argparse.ArgumentParser) -> None:
    _podman_args(p)
    p.add_argument("--shell", metavar="PROGRAM",
                   help="program to start (default: the image's own command, e.g. bash)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _podman_args(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="command to run in the container (after --; default: the image's command)")


def _split_remainder(args: argparse.Namespace, settings: Settings) -> Settings:
    """``run T --root X -- CMD``: argparse hands ``--root X -- CMD`` to cmd; options go back to args.

    Words before the first ``--`` are imagefactory options; the words after it are the command.
    Without ``--``, words that start with ``-`` are options, otherwise everything is the command.
    """
    words = list(args.cmd or [])
    if "--" in words:
        cut = words.index("--")
        options, words = words[:cut], words[cut + 1:]
    elif words and words[0].startswith("-"):
        options, words = words, []
    else:
        options = []
    args.cmd = words
    if not options:
        return settings
    from ..cli import parser

    again = parser().parse_args([args.command, *options, args.target])  # options first: no REMAINDER
    for key, value in vars(again).items():
        if key != "cmd" and value not in (None, False, []):
            setattr(args, key, value)
    return settings_from(args)


def _start(args: argparse.Namespace, settings: Settings, command_words: list[str], interactive: bool,
           entrypoint: str | None = None) -> int:
    from .. import podman
    from ..recipe import CATALOGUE

    recipe = CATALOGUE.get(args.target)
    extra = {}
    for item in args.env or []:
        if "=" not in item:
            err_console.print(f"[bold red]error:[/] --env expects KEY=VALUE, got {item!r}", highlight=False)
            return EXIT_USAGE
        key, value = item.split("=", 1)
        extra[key] = value
    spec = podman.run_spec(recipe, project=args.project, command=command_words, interactive=interactive,
                           image=args.image, extra_env=extra)
    spec.entrypoint = entrypoint
    missing = [s for s in spec.runtime.secrets if s not in spec.secret_env]
    env = podman.podman_env(state_dir=settings.state_path())
    argv = podman.podman_argv(settings.storage, spec)
    shown = podman.display(argv, env)
    args._report_data = {"target": recipe.target_name(), "image": spec.image, "dev": spec.dev,
                         "podman": argv, "containers_conf": env.get("CONTAINERS_CONF"),
                         "missing_secrets": missing, "dry_run": args.dry_run}
    if args.dry_run:
        print(shown)
        return EXIT_OK
    if not args.image and not buildah_for(settings).exists(spec.image):
        err_console.print(f"[bold red]error:[/] image {spec.image} is not in this store; build it first: "
                          f"imagefactory build {recipe.target_name()} (with the same --root/--runroot)",
                          highlight=False)
        return EXIT_FAIL
    for name in missing:
        err_console.print(f"[yellow]note:[/] secret {name} is not set in your environment; "
                          "the container starts without it", highlight=False)
    if args.verbose:
        err_console.print(f"$ {shown}", highlight=False, markup=False)
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env)
    except FileNotFoundError:
        err_console.print("[bold red]error:[/] podman is not installed: run ci/setup (apt-get install podman)")
        return EXIT_FAIL
    args._report_data.update({"exit_code": proc.returncode, "podman_seconds": round(time.monotonic() - started, 3)})
    return proc.returncode


@command("shell", "interactive shell in a dev/test image: project at /workspace, uid 1000 (podman)", _shell_args)
def cmd_shell(args: argparse.Namespace, settings: Settings) -> int:
    return _start(args, settings, [], interactive=True, entrypoint=args.shell)


@command("run", "run an image (or `-- CMD` in it) with podman, as `shell` would", _run_args)
def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    settings = _split_remainder(args, settings)
    return _start(args, settings, args.cmd, interactive=False)


def _quadlet_args(p: argparse.ArgumentParser) -> None:
    from .. import quadlet

    p.add_argument("targets", nargs="+", metavar="TARGET", help="targets to write units for")
    p.add_argument("--out", metavar="DIR", help="write the unit files here (default: print them)")
    p.add_argument("--project", metavar="DIR", help="project folder for dev-shell units (default: current folder)")
    p.add_argument("--registry", help="use the digest `push` recorded for this registry (default: the newest push)")
    p.add_argument("--auto-update", choices=quadlet.AUTO_UPDATE, metavar="{registry,local}",
                   help="AutoUpdate=registry follows the pushed tag (podman auto-update pulls when it moves) "
                        "instead of pinning the digest; local follows the local tag")
    p.add_argument("--butane", action="store_true",
                   help=f"Butane storage.files entries placing the units in {quadlet.UNIT_DIR}/ "
                        "(printed, or written to DIR/quadlet.bu with --out)")


@command("quadlet", "Podman Quadlet units (.container, .network, .volume) from the recipes' runtime settings",
         _quadlet_args)
def cmd_quadlet(args: argparse.Namespace, settings: Settings) -> int:
    from .. import quadlet
    from ..recipe import CATALOGUE

    try:
        units = quadlet.merge([u for t in args.targets
                               for u in quadlet.render_all(CATALOGUE.get(t), settings, project=args.project,
                                                           registry=args.registry, auto_update=args.auto_update)])
    except quadlet.QuadletError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return EXIT_USAGE
    data = [{"file": u.filename, "image": u.image, "secrets": u.secrets} for u in units]
    butane = quadlet.butane(units) if args.butane else None
    if args.out:
        paths = quadlet.write_units(units, Path(args.out))
        for d, path in zip(data, paths):
            d["path"] = str(path)
        if butane is not None:
            bu = Path(args.out) / "quadlet.bu"
            bu.write_text(butane)
            paths.append(bu)
        for path in paths:
            console.print(f"wrote {path}", highlight=False)
    elif butane is not None:
        print(butane, end="")
    else:
        for unit in units:
            print(f"# --- {unit.filename}")
            print(unit.text)
    args._report_data = {"units": data, "auto_update": args.auto_update, "butane": args.butane}
    return EXIT_OK if units else EXIT_USAGE
