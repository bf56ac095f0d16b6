"""Core subcommands: list, plan, build, images, clean, cache, doctor."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli import EXIT_FAIL, EXIT_OK, buildah_for, command, console, err_console, print_table
from .. import rootless

if TYPE_CHECKING:  # pragma: no cover
    from ..cache_registry import RegistryCache
    from ..config import Settings


def _targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET", help="target names (see `list`)")


@command("list", "targets with their parents and descriptions")
def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from ..plan import resolve_parent
    from ..platforms import get_platform
    from ..recipe import CATALOGUE

    platform = get_platform(settings.platform)
    rows = []
    data = []
    for cls in CATALOGUE.targets():
        parent = resolve_parent(cls, platform)
        pname = parent.name if isinstance(parent, type) else (parent or "scratch")
        names = list((cls.stages or {}).keys())  # the table names them; --report has each stage's image
        stages = ", ".join(names) if len(names) <= 3 else f"{len(names)}: {', '.join(names[:2])}, …"
        rows.append([cls.target_name(), cls.name, pname, stages, cls.description()])
        data.append({"target": cls.target_name(), "image": cls.name, "parent": pname,
                     "stages": {k: v.name for k, v in (cls.stages or {}).items()},
                     "description": cls.description()})
    print_table("targets", ["target", "image", "parent", "stages", "description"], rows)
    args._report_data = {"targets": data}
    return EXIT_OK


def _plan_args(p: argparse.ArgumentParser) -> None:
    _targets(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-cache", action="store_true", help="plan as if nothing were cached")
    p.add_argument("--offline", action="store_true", help="do not read the image store (no cache status)")


@command("plan", "print every step, its cache status and the buildah calls, without building", _plan_args)
def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from ..describe import describe_plan

    cache = None if settings.no_cache or args.offline else registry_cache(settings, lambda m: err_console.print(
        f"[yellow]warning:[/] {m}", highlight=False, markup=False, soft_wrap=True))
    # lookups only: `plan` shows which steps would come from the registry
    data = describe_plan(args.targets, settings, read_store=not args.offline, progress=_progress_line,
                         remote=_provider(cache))
    args._report_data = {"plan": data}
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for img in data:
        console.print(f"[bold]{img['image']}[/] FROM {img['parent']}  "
                      f"({'squash' if img['squash'] else 'layers'}, {img['format']})")
        for st in img["steps"]:
            colour = {"hit": "green", "miss": "yellow", "pending": "magenta"}[st["status"]]
            where = " [cyan](registry)[/]" if st.get("from") == "registry" else ""
            console.print(f"  {st['index']:>2} [{colour}]{st['status']:<7}[/] {st['kind']:<9} {st['summary']}{where}",
                          highlight=False)
            for call in st["calls"]:
                console.print(f"       $ {call}", highlight=False, markup=False)
    return EXIT_OK


def _progress_line(message: str) -> None:
    if err_console.is_terminal:
        err_console.print(f"[dim]{message}[/]", highlight=False)


def _build_args(p: argparse.ArgumentParser) -> None:
    _targets(p)
    p.add_argument("--jobs", "-j", type=int,
                   help="steps (containers) run at once; images start as soon as their parent exists "
                        "(default: the number of cores)")
    p.add_argument("--no-cache", action="store_true", help="run every step; refresh the cache entries")
    p.add_argument("--check-reproducible", action="store_true",
                   help="build twice, cold, in two temporary stores and report which steps differ")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE|env=VAR",
                   help="a build-time secret for steps that name it (never stored in the image or logs)")


@command("build", "build targets (and their parents) step by step with the cache", _build_args)
def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from ..secrets import parse_cli_secret

    settings.secrets.update(dict(parse_cli_secret(text) for text in args.secret))
    if args.check_reproducible:
        from ..reproduce import check_reproducible
        from .supply import print_reproduce_report

        rep = check_reproducible(args.targets, settings, progress=lambda m: err_console.print(m, highlight=False))
        print_reproduce_report(rep)
        args._report_data = rep
        return EXIT_OK if rep["reproducible"] else EXIT_FAIL
    report, code = run_build(args.targets, settings, verbose=args.verbose)
    if code == EXIT_OK and settings.sbom_dir:
        from .supply import write_sboms_for_results

        report["sboms"] = write_sboms_for_results(settings, report)
    args._report_data = report
    return code


def run_build(targets: list[str], settings: Settings, verbose: bool = False) -> tuple[dict, int]:
    from ..execute import BuildFailed, Executor
    from ..plan import build_plan
    from ..ui import RichReporter

    warnings: list[str] = []
    # checked before planning: a cache reference that is not a repository fails at once
    cache = registry_cache(settings, lambda m: (warnings.append(m), reporter.note(f"warning: {m}")))
    plan = build_plan(targets, settings, progress=_progress_line)
    reporter = RichReporter(err_console, verbose=verbose)
    bd = buildah_for(settings)
    executor = Executor(settings, bd, reporter)
    if cache is not None:
        executor.remote = _provider(cache)
        if cache.to_repo:
            executor.committed = lambda key, image_id: cache.push_async(key, image_id, bd)
    try:
        try:
            result = executor.execute(plan)
        finally:
            if cache is not None:
                cache.wait()  # pushes overlap the build; the report is written when they are done
    except BuildFailed as exc:
        reporter.close()
        return {"ok": False, "failed": {"image": exc.image, "step": exc.step_no, "summary": exc.step,
                                        "command": exc.command, "log": str(exc.log) if exc.log else None,
                                        "hint": exc.hint}, **_cache_report(cache, warnings)}, EXIT_FAIL
    finally:
        reporter.close()
    data = result.to_dict()
    data.update(_cache_report(cache, warnings))
    from ..multiarch import is_multiarch, make_manifest_lists

    if result.ok and is_multiarch(settings.build_arches):
        data["manifest_lists"] = make_manifest_lists(bd, plan.targets, settings.build_arches)
        for made in data["manifest_lists"]:
            console.print(f"{made['list']}: " + ", ".join(f"{i['arch']} {i['ref']}" for i in made["instances"]),
                          highlight=False, markup=False, soft_wrap=True)
    return data, EXIT_OK if result.ok else EXIT_FAIL


def _provider(cache: RegistryCache | None):
    """The registry cache as the walk's provider (imported only when a cache is configured)."""
    if cache is None:
        return None
    from ..cache_registry import RegistryProvider

    return RegistryProvider(cache)


def registry_cache(settings: Settings, warn=None) -> RegistryCache | None:
    """The registry step cache the settings ask for (--cache-from/--cache-to), or None."""
    if not settings.cache_from and not settings.cache_to:
        return None  # the common case pays no import
    from ..cache_registry import RegistryCache

    return RegistryCache.from_settings(settings, warn=warn)


def _cache_report(cache: RegistryCache | None, warnings: list[str]) -> dict:
    if cache is None:
        return {}
    return {"registry_cache": {"from": cache.from_repos, "to": cache.to_repo, **cache.stats, "warnings": warnings}}


@command("images", "images this tool built: ID, size, age")
def cmd_images(args: argparse.Namespace, settings: Settings) -> int:
    from ..recipe import CATALOGUE
    from ..ui import human_size
    from ..walk import CACHE_REPO

    bd = buildah_for(settings)
    records = {r.id: r for r in bd.images()}
    index = {n: r.id for r in records.values() for n in r.names}
    rows, data = [], []
    for cls in CATALOGUE:
        ref = cls.image_ref()
        if ref not in index:
            continue
        rec = records[index[ref]]
        age = _age(rec.created)
        rows.append([cls.target_name() if not cls.hidden else "(base)", ref, rec.id[:12], human_size(rec.size), age])
        data.append({"target": cls.target_name(), "ref": ref, "image_id": rec.id, "size": rec.size,
                     "created": rec.created})
    cache = [r for r in records.values() if any(n.startswith(CACHE_REPO + ":") for n in r.names)]
    print_table("images", ["target", "image", "ID", "size", "age"], rows)
    console.print(f"{len(cache)} cache entries")
    args._report_data = {"images": data, "cache_entries": len(cache)}
    return EXIT_OK


def _age(created: str) -> str:
    import datetime as dt

    try:
        ts = dt.datetime.fromisoformat(created.replace("Z", "+00:00")[:26] + "+00:00" if "+" not in created
                                       else created)
        secs = time.time() - ts.timestamp()
    except ValueError:
        return created
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{secs / n:.0f}{unit} ago"
    return f"{secs:.0f}s ago"


def _clean_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true")


@command("clean", "remove working containers and unfinished commits of dead runs, and dangling images",
         _clean_args)
def cmd_clean(args: argparse.Namespace, settings: Settings) -> int:
    from ..buildah import BuildahError
    from ..locks import store_lock

    bd = buildah_for(settings)
    with store_lock(settings, "clean"):
        if args.dry_run:
            removed, temps = bd.leftovers()
        else:
            removed, temps = bd.remove_leftovers()
        from ..sources import clear_partial

        partial = 0 if args.dry_run else clear_partial(settings.source_cache)
        dangling = [r.id for r in bd.images() if not r.names]
        if dangling and not args.dry_run:
            for iid in dangling:
                try:
                    bd.rmi(iid)
                except BuildahError:
                    pass  # still used by a child image
    console.print(f"{len(removed)} working container(s), {len(temps)} unfinished commit(s), "
                  f"{len(dangling)} dangling image(s), {partial} partial download(s) "
                  f"{'would be ' if args.dry_run else ''}removed (what running builds use is kept)")
    args._report_data = {"containers": removed, "unfinished_commits": temps, "dangling_images": dangling,
                         "partial_downloads": partial}
    return EXIT_OK


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["prune", "list"])
    p.add_argument("--all", action="store_true", help="prune every cache entry, not only unreachable ones")
    p.add_argument("--keep", nargs="*", default=None, metavar="TARGET",
                   help="targets whose current cache entries survive (default: all targets)")
    p.add_argument("--registry", metavar="REPO", help="prune this registry cache repository instead of the "
                                                      "local store (registry API deletes)")
    p.add_argument("--tls-verify", dest="tls_verify", choices=("true", "false"), default=None,
                   type=lambda text: text.lower(), help="verify the registry's TLS certificate (default true)")
    p.add_argument("--authfile", help="containers auth file (default: REGISTRY_AUTH_FILE)")


@command("cache", "list or prune step-cache entries", _cache_args)
def cmd_cache(args: argparse.Namespace, settings: Settings) -> int:
    from ..describe import describe_plan
    from ..locks import store_lock
    from ..recipe import CATALOGUE
    from ..walk import CACHE_REPO, cache_ref

    if getattr(args, "registry", None):
        return _prune_registry(args, settings)
    bd = buildah_for(settings)
    entries = {n: r.id for r in bd.images() for n in r.names if n.startswith(CACHE_REPO + ":")}
    if args.action == "list":
        print_table("cache", ["entry", "image"], [[n, i[:12]] for n, i in sorted(entries.items())])
        args._report_data = {"entries": len(entries)}
        return EXIT_OK
    keep: set[str] = set()
    if not args.all:
        targets = args.keep if args.keep else [c.target_name() for c in CATALOGUE.targets()]
        for img in describe_plan(targets, settings):
            keep.update(cache_ref(s["key"]) for s in img["steps"] if s["key"] and s["status"] == "hit")
    doomed = sorted(n for n in entries if n not in keep)
    with store_lock(settings, "cache prune"):
        _untag_and_drop(bd, doomed)
    console.print(f"pruned {len(doomed)} of {len(entries)} cache entries")
    args._report_data = {"pruned": len(doomed), "kept": len(entries) - len(doomed)}
    return EXIT_OK


def _prune_registry(args: argparse.Namespace, settings: Settings) -> int:
    """Delete the registry entries no current recipe of the kept targets reaches (walked through
    that registry: a key is only known while the entries before it are there)."""
    from ..cache_registry import RegistryCache
    from ..describe import describe_plan
    from ..recipe import CATALOGUE

    if args.action != "prune":
        err_console.print("error: `cache list --registry` is not supported; use `skopeo list-tags`", highlight=False)
        return EXIT_FAIL
    settings.cache_from, settings.cache_to = [args.registry], args.registry
    cache = RegistryCache([args.registry], args.registry, authfile=settings.authfile, tls_verify=settings.tls_verify,
                          required=True)
    keep: set[str] = set()
    if not args.all:
        targets = args.keep if args.keep else [c.target_name() for c in CATALOGUE.targets()]
        for img in describe_plan(targets, settings):
            keep.update(s["key"] for s in img["steps"] if s["key"] and s["status"] == "hit")
    result = cache.prune(keep)
    args._report_data = {"registry": result.to_dict()}
    console.print(f"{result.repo}: deleted {len(result.deleted)} entries, kept {len(result.kept)}", highlight=False)
    for failure in result.failed:
        err_console.print(f"could not delete {failure}", highlight=False, markup=False)
    if result.refused:
        err_console.print(f"[bold red]error:[/] {result.refused}", highlight=False)
        return EXIT_FAIL
    return EXIT_OK if not result.failed else EXIT_FAIL


def _untag_and_drop(bd, doomed: list[str]) -> None:
    from ..buildah import BuildahError

    for name in doomed:
        try:
            bd.untag(name)
        except BuildahError as exc:
            err_console.print(f"could not remove {name}: {exc.stderr_tail}")
    for r in bd.images():
        if not r.names:
            try:
                bd.rmi(r.id)
            except BuildahError:
                pass


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image to try the isolation with (default: the built Debian base)")


@command("doctor", "check buildah, storage, isolation, mirror, cosign; say how to fix each", _doctor_args)
def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    checks = doctor_checks(settings, getattr(args, "image", None))
    rows = [["✓" if ok else "✗", name, detail, "" if ok else fix] for name, ok, detail, fix in checks]
    print_table("doctor", ["", "check", "found", "how to fix"], rows)
    args._report_data = {"checks": [dict(zip(("name", "ok", "detail", "fix"), c)) for c in checks]}
    from .. import emulation

    required = {"buildah", "storage", "isolation", "debian mirror"} | emulation.required_rows(settings.build_arches)
    return EXIT_OK if all(ok for name, ok, _, _ in checks
                          if name in required or name.startswith("rootless ")) else EXIT_FAIL


def doctor_checks(settings: Settings, image: str | None = None) -> list[tuple[str, bool, str, str]]:
    from ..buildah import BuildahError
    from ..platforms import host_debian_mirror

    out: list[tuple[str, bool, str, str]] = []
    bd = buildah_for(settings)
    have = shutil.which("buildah")
    if not have:
        out.append(("buildah", False, "not found", "run ci/setup (apt-get install buildah)"))
        return out
    try:
        info = json.loads(bd.version())
        out.append(("buildah", True, info.get("version", "?"), ""))
    except (BuildahError, ValueError) as exc:
        out.append(("buildah", False, str(exc)[:200], "run ci/setup"))
    try:
        bd.images()
        storage = settings.storage
        out.append(("storage", True, f"root={settings.root or 'default'} driver={storage.driver or 'default'}"
                    f"{' (' + ', '.join(storage.driver_options) + ')' if storage.driver_options else ''}"
                    f"{' rootless' if rootless.is_rootless() else ''}", ""))
    except BuildahError as exc:
        out.append(("storage", False, exc.stderr_tail[-200:], "check --root/--runroot and storage.conf"))
    out.append(_isolation_check(bd, settings, image))
    if rootless.is_rootless():
        out.extend(rootless.checks(settings.root, settings.storage_driver))
    mirror = settings.debian_mirror or host_debian_mirror()
    out.append(("debian mirror", bool(mirror), mirror or "none",
                "set debian_mirror in imagefactory.yaml or IMAGEFACTORY_DEBIAN_MIRROR"))
    out.append(("mmdebstrap", bool(shutil.which("mmdebstrap")), shutil.which("mmdebstrap") or "not found",
                "apt-get install mmdebstrap (bootstraps the Debian base)"))
    cosign = shutil.which("cosign")
    out.append(("cosign", bool(cosign), cosign or "not found", "run ci/setup (installs cosign from trixie)"))
    from ..locks import StoreLocks

    running = StoreLocks(settings.state_path()).holders()
    out.append(("running builds", True, "; ".join(running) or "none on this store", ""))
    mirrors = settings.source_mirrors
    out.append(("source mirrors", True, ", ".join(mirrors) or "none (upstream only)", ""))
    cache = Path(settings.source_cache)
    out.append(("source cache", True, f"{cache} ({len(list(cache.glob('*')))} files)" if cache.is_dir()
                else f"{cache} (empty)", ""))
    from .. import emulation

    out.extend(emulation.doctor_rows(settings.build_arches))
    return out


def _isolation_check(bd, settings: Settings, image: str | None) -> tuple[str, bool, str, str]:
    """Run `true` in an image of this store with the configured isolation (the Debian base if built)."""
    from ..buildah import BuildahError

    fix = ("use --isolation chroot (works without cgroups); for oci install runc "
           "(crun fails with cgroups hybrid mode)")
    if image is None:
        try:
            names = [n for r in bd.images() for n in r.names if "imagefactory-base-" in n]
        except BuildahError as exc:
            return ("isolation", False, exc.stderr_tail[-200:], fix)
        if not names:
            return ("isolation", True, f"{settings.isolation} (not tried: build a base first, or pass --image)", "")
        image = sorted(names)[0]
    try:
        with bd.working_container(image, name_hint="doctor") as ctr:
            ctr.run(["true"])
        return ("isolation", True, f"{settings.isolation} (ran `true` in {image})", "")
    except BuildahError as exc:
        return ("isolation", False, f"{settings.isolation}: {exc.stderr_tail[-200:]}", fix)
