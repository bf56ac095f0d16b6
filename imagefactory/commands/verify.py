"""`verify`: prove the ELF files under /usr/local of an image are hardened (and the image fits its budget)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..cli import EXIT_FAIL, EXIT_OK, buildah_for, command, console, err_console

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings
    from ..recipe import Recipe


def _args(p: argparse.ArgumentParser) -> None:
    from ..verify import PROFILES

    p.add_argument("image", metavar="IMAGE_OR_TARGET", help="a target name (see `list`) or an image reference/ID")
    p.add_argument("--profile", choices=PROFILES,
                   help="check every file against this profile (default: per file from the build manifest)")
    p.add_argument("--size", action="store_true",
                   help="also check the image size against the recipe's size_budget_mb on this platform")
    p.add_argument("--prefix", default="/usr/local", help="folder to check (default /usr/local)")


def resolve_image(name: str) -> tuple[str, type[Recipe] | None]:
    """A known target or recipe name maps to its image ref; anything else is taken as an image reference."""
    from ..recipe import CATALOGUE, RecipeError

    try:
        recipe = CATALOGUE.get(name)
    except RecipeError:
        return name, None
    return recipe.image_ref(), recipe


@command("verify", "check hardening of the ELF files under /usr/local of an image (no container is run)", _args)
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """A target is checked on every architecture of ``--arch``/``arches`` (each instance by its own rules)."""
    ref, recipe = resolve_image(args.image)
    arches = settings.build_arches if recipe is not None else (None,)
    results = [_verify_one(args, settings, recipe.image_ref(a) if recipe else ref, recipe, a) for a in arches]
    args._report_data = results[0] if len(results) == 1 else {"ok": all(d["ok"] for d in results), "images": results}
    return EXIT_OK if all(d["ok"] for d in results) else EXIT_FAIL


def _verify_one(args: argparse.Namespace, settings: Settings, ref: str, recipe: type[Recipe] | None,
                arch: str | None) -> dict:
    from ..buildah import BuildahError
    from ..verify import check_size, print_report, verify_tree

    bd = buildah_for(settings)
    try:
        with bd.mounted_image(ref) as root:
            report = verify_tree(root, prefix=args.prefix, profile=args.profile)
    except ValueError as exc:  # the manifest does not say which profile a file was built with
        err_console.print(f"[bold red]error:[/] {ref}: {exc}", highlight=False)
        return {"image": ref, "ok": False, "error": str(exc)}
    except BuildahError as exc:
        err_console.print(f"[bold red]error:[/] cannot read image {ref}: {exc.stderr_tail.strip()}", highlight=False)
        return {"image": ref, "ok": False, "error": exc.stderr_tail}
    if args.size:
        size = _image_size(bd, ref)
        budget = recipe.size_budget(settings.platform, arch) if recipe is not None else None
        report.image_checks.append(check_size(size, budget, image=ref, platform=settings.platform))
    console.print(f"[bold]{ref}[/]", highlight=False)
    print_report(report, console)
    data = report.to_dict()
    data["image"] = ref
    return data


def _image_size(bd, ref: str) -> int:
    image_id = bd.inspect(ref).get("FromImageID", "").removeprefix("sha256:")
    for rec in bd.images():
        if rec.id == image_id or ref in rec.names:
            return rec.size
    return 0
