"""Move built images between CI jobs through registries, by digest: ``fetch`` and ``promote``.

A build job pushes its targets to a staging repository (``push --registry STAGING --report FILE``);
the report records each target's digest and image ID. Later jobs start from an empty store:

* ``fetch TARGETS --digests FILE`` pulls exactly those digests and tags them as the targets' local
  images (verify, sbom, sign then work on the very bytes that were pushed);
* ``promote TARGETS --digests FILE --registry RELEASE`` copies the staged digests to the release
  repository unchanged (same digest) and records them like ``push`` does, for ``sign``,
  ``verify-signature --pushed-digest`` and ``quadlet``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli import EXIT_FAIL, EXIT_OK, buildah_for, command, console, err_console

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings


class StageError(RuntimeError):
    """A staged digest is missing, unreadable or not the image it claims to be."""


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument("--digests", required=True, metavar="PUSH_REPORT.json", action="append",
                   help="report of `push --report` naming each target's digest (repeatable)")
    p.add_argument("--tls-verify", dest="tls_verify", choices=("true", "false"), default=None,
                   type=lambda text: text.lower(), help="verify the registries' TLS certificates (default true)")
    p.add_argument("--authfile", help="containers auth file (default: REGISTRY_AUTH_FILE)")


def _promote_args(p: argparse.ArgumentParser) -> None:
    _args(p)
    p.add_argument("--registry", help="release HOST[:PORT]/PREFIX (default: `registry` setting)")


def staged(reports: list[str], target: str) -> dict:
    """The push record of ``target`` in the given push reports (the last one wins)."""
    found = None
    for path in reports:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise StageError(f"cannot read push report {path}: {exc}; pass the report `push --report` wrote") from None
        for item in data.get("pushed") or []:
            if item.get("target") == target and str(item.get("digest", "")).startswith("sha256:"):
                found = item
    if found is None:
        raise StageError(f"{target} is not in {', '.join(reports)}: the build job did not push it to staging")
    return found


def _repository(ref: str) -> str:
    name = ref.rsplit("/", 1)[-1]
    return ref.rsplit(":", 1)[0] if ":" in name else ref


@command("fetch", "pull the staged digests of targets (from a push report) into this store as the targets' images",
         _args)
def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from rich.markup import escape

    from ..buildah import BuildahError
    from ..multiarch import is_multiarch
    from ..recipe import CATALOGUE

    bd = buildah_for(settings)
    done: list[dict] = []
    args._report_data = {"fetched": done}
    try:
        for target in args.targets:
            cls = CATALOGUE.get(target)
            item = staged(args.digests, cls.target_name())
            source = f"{_repository(item['ref'])}@{item['digest']}"
            # a manifest list (several arches): each architecture's instance, under its own tag
            multi = is_multiarch(settings.build_arches)
            for arch in settings.build_arches if multi else (None,):
                try:
                    image_id = bd.pull(source, tls_verify=settings.tls_verify, authfile=settings.authfile, arch=arch)
                except BuildahError as exc:
                    raise StageError(f"cannot pull {source}: {exc.stderr_tail.strip().splitlines()[-1]}") from None
                if not multi and item.get("image_id") and image_id != item["image_id"]:
                    raise StageError(f"{source} is image {image_id[:12]}, the push report says "
                                     f"{item['image_id'][:12]}")
                bd.tag(image_id, cls.image_ref(arch))
                done.append({"target": cls.target_name(), "source": source, "image": cls.image_ref(arch),
                             "image_id": image_id, "digest": item["digest"], **({"arch": arch} if arch else {})})
                console.print(f"{cls.image_ref(arch)} ← {source}", highlight=False, markup=False, soft_wrap=True)
    except StageError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        args._report_data["error"] = str(exc)
        return EXIT_FAIL
    return EXIT_OK


@command("promote", "copy staged digests (from a push report) to the release registry unchanged and record them",
         _promote_args)
def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from rich.markup import escape

    from ..cache_registry import NotInRegistry, RegistryCacheError, RegistryUnavailable, Skopeo
    from ..recipe import CATALOGUE
    from ..registry import new_record, normalize_registry, record_push, remote_ref

    registry = normalize_registry(args.registry, settings)
    skopeo = Skopeo(authfile=settings.authfile, tls_verify=settings.tls_verify, timeout=600)
    done: list[dict] = []
    args._report_data = {"promoted": done, "pushed": done}
    try:
        for target in args.targets:
            cls = CATALOGUE.get(target)
            item = staged(args.digests, cls.target_name())
            source = f"{_repository(item['ref'])}@{item['digest']}"
            dest = remote_ref(registry, cls.name, cls.version)
            try:
                skopeo.copy(f"docker://{source}", f"docker://{dest}")
                served = "sha256:" + hashlib.sha256(skopeo("inspect", "--raw", f"docker://{dest}")).hexdigest()
            except (NotInRegistry, RegistryUnavailable, RegistryCacheError) as exc:
                raise StageError(f"cannot copy {source} to {dest}: {exc}") from None
            if served != item["digest"]:
                raise StageError(f"{dest} serves {served} after the copy, not the verified {item['digest']}")
            record_push(settings, new_record(cls.target_name(), dest, served, registry, cls.image_ref(),
                                             item.get("image_id", "")))
            done.append({"target": cls.target_name(), "ref": dest, "digest": served, "registry": registry,
                         "from": source, "image_id": item.get("image_id", "")})
            console.print(f"{dest}@{served} ← {source}", highlight=False, markup=False, soft_wrap=True)
    except StageError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        args._report_data["error"] = str(exc)
        return EXIT_FAIL
    return EXIT_OK
