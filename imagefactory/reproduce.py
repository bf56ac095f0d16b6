"""Is a build reproducible? Build the targets twice, cold, in two fresh temporary stores and compare.

``against_store`` (``--against-store``) costs one cold build instead of two: the targets are
built in the user's own store as usual (cached steps are reused, so a store that already holds
them builds nothing) and once cold in a temporary store, and the two are compared. That is what
CI does with the store its end-to-end tests already filled.

Both builds use the same ``SOURCE_DATE_EPOCH`` (explicit, else the ``source_date_epoch`` setting, else the
commit time of the recipes' git HEAD), run with ``no_cache`` and share nothing but external parent images,
which are copied byte for byte from the user's store into each temporary store (so both start from the
same image ID; parents not in the user's store are pulled by each build).

The report compares, per image, the final image IDs and, per commit (one commit per group of steps),
the layer that commit added (the last entry of ``RootFS.DiffIDs``) and the committed image ID. A step
whose *layer* differs is what made the build non-reproducible; later commits then differ only by
their parent, which the report tells apart. For each such layer the two layer tarballs are
compared entry by entry (:mod:`imagefactory.layerdiff`): the report names every file that
differs and how (content, mtime, mode, owner, only on one side).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import sh

from .buildah import Buildah, BuildahError, oci_blob
from .config import Settings
from .execute import BuildFailed, BuildReport, Executor
from .layerdiff import compare_layers
from .plan import build_plan, resolve_graph
from .walk import cache_ref


class ReproduceError(RuntimeError):
    """The comparison could not run (no timestamp, a build failed); the message says why."""


def recipes_commit_time(targets: Iterable[str], settings: Settings) -> int | None:
    """``git log -1 --format=%ct`` in the folder of the first target's recipe, if it is a git checkout."""
    plan = resolve_graph(list(targets), settings)
    folder = plan.targets[0].recipe_dir()
    try:
        out = str(sh.Command("git")("--no-pager", "-C", str(folder), "log", "-1", "--format=%ct",
                                     _tty_out=False, _err=os.devnull)).strip()
        return int(out) if out else None
    except (sh.ErrorReturnCode, sh.CommandNotFound, ValueError):
        return None


def resolve_epoch(targets: list[str], settings: Settings, explicit: int | None = None) -> tuple[int, str]:
    if explicit is not None:
        return int(explicit), "command line"
    if settings.source_date_epoch is not None:
        return int(settings.source_date_epoch), settings.origin.get("source_date_epoch", "settings")
    ct = recipes_commit_time(targets, settings)
    if ct is not None:
        return ct, "git HEAD commit time of the recipes"
    raise ReproduceError("no SOURCE_DATE_EPOCH: set SOURCE_DATE_EPOCH (or source_date_epoch in imagefactory.yaml), "
                         "pass --source-date-epoch, or keep the recipes in a git checkout with a commit")


def _layers(info: dict) -> list[str]:
    for section in ("OCIv1", "Docker"):
        rootfs = (info.get(section) or {}).get("rootfs") or {}
        ids = rootfs.get("diff_ids") or []
        if ids:
            return list(ids)
    return []


def _temp_settings(settings: Settings, base: Path, sde: int) -> Settings:
    for sub in ("root", "run", "state", "logs"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        settings, root=str(base / "root"), runroot=str(base / "run"),
        storage_driver=settings.storage_driver or "overlay", state_dir=str(base / "state"),
        log_dir=str(base / "logs"), no_cache=True, source_date_epoch=sde, sbom_dir=None,
        origin=dict(settings.origin))


def _seed_external_parents(settings: Settings, temp: Settings, targets: list[str]) -> list[str]:
    """Copy external parent images (e.g. a locally imported base) from the user's store, IDs unchanged."""
    src = Buildah(settings.storage)
    index = src.image_index()
    plan = resolve_graph(targets, settings)
    seeded = []
    for node in plan.nodes:
        parent = node.parent
        if not isinstance(parent, str) or parent in seeded:
            continue
        ref = next((r for r in (parent, f"docker.io/library/{parent}", f"localhost/{parent}") if r in index), None)
        if ref is None:
            continue  # not local: each build pulls it
        st = temp.storage
        dest = f"containers-storage:[{st.driver}@{st.root}+{st.runroot}]{ref}"
        src.push(ref, dest, tls_verify=False)
        seeded.append(parent)
    return seeded


def _destroy_store(settings: Settings, base: Path) -> None:
    bd = Buildah(settings.storage)
    try:
        for ctr in bd.containers():
            name = ctr.get("containername") or ctr.get("ContainerName")
            if name:
                bd.remove_container(name)
        ids = [r.id for r in bd.images()]
        if ids:
            bd.rmi(*ids, force=True)
    except BuildahError:
        pass
    for mounted in (Path(settings.root or base) / "overlay",):
        try:
            sh.Command("umount")("-R", str(mounted), _ok_code=range(256))
        except sh.CommandNotFound:
            break
    shutil.rmtree(base, ignore_errors=True)


def _build_once(settings: Settings, targets: list[str]) -> tuple[BuildReport, dict[str, dict]]:
    """One cold build; per image: final ID and, per commit, (step indexes, kinds, summaries, image, layer)."""
    bd = Buildah(settings.storage)
    plan = build_plan(targets, settings)
    try:
        report = Executor(settings, bd).execute(plan)
    except BuildFailed as exc:
        raise ReproduceError(f"{exc.image}: step {exc.step_no} ({exc.step}) failed in a cold build: {exc.command}"
                             f"\n{exc.tail}") from None
    if not report.ok:
        bad = ", ".join(f"{r.name} ({r.status}: {r.error})" for r in report.results if r.status not in
                        ("built", "cached"))
        raise ReproduceError(f"cold build failed: {bad}")
    index = bd.image_index()
    images: dict[str, dict] = {}
    for res in report.results:
        commits: list[dict] = []
        by_key: dict[str, dict] = {}
        for st in res.steps:
            entry = by_key.get(st.key)
            if entry is None:
                image = index.get(cache_ref(st.key)) or (res.image_id if st.kind == "final" else None)
                layers = _layers(bd.inspect(image)) if image else []
                entry = {"indexes": [], "kinds": [], "summaries": [], "image": image,
                         "layer": layers[-1] if layers else None, "layer_count": len(layers)}
                by_key[st.key] = entry
                commits.append(entry)
            entry["indexes"].append(st.index)
            entry["kinds"].append(st.kind)
            entry["summaries"].append(st.summary)
        images[res.name] = {"target": res.target, "image_id": res.image_id, "commits": commits}
    return report, images


def check_reproducible(targets: list[str], settings: Settings, *, source_date_epoch: int | None = None,
                       work_dir: Path | None = None, keep: bool = False, against_store: bool = False,
                       progress: Callable[[str], None] | None = None) -> dict:
    """Two builds (two cold ones, or the user's store and one cold one); returns a JSON-able report.

    ``{"reproducible": bool, "source_date_epoch": int, "epoch_source": str, "seconds": float,
       "against_store": bool,
       "images": [{"name", "target", "image_ids": [a, b], "same",
                   "steps": [{"index", "indexes", "kind", "summary", "layers": [a, b], "images": [a, b],
                              "same", "layer_same", "only_parent_differs"}]}],
       "differing_steps": [{"image", "index", "kind", "summary", "layers", "images", "config_only",
                            "files": {"count", "files": [{"path", "what"}], "order_differs"},
                            "config": [differing config fields, when only the config differs]}],
       "stores": [paths if kept]}``
    """
    say = progress or (lambda _msg: None)
    targets = list(targets)
    sde, epoch_source = resolve_epoch(targets, settings, source_date_epoch)
    parent_dir = Path(work_dir) if work_dir else Path(settings.state_dir)
    parent_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    runs: list[dict[str, dict]] = []
    sides: list[Settings] = []
    temps: list[tuple[Settings, Path]] = []
    try:
        if against_store:
            own = dataclasses.replace(settings, source_date_epoch=sde, no_cache=False, sbom_dir=None)
            say(f"build in the store {settings.root or '(default)'} with SOURCE_DATE_EPOCH={sde} "
                "(cached steps are reused)")
            runs.append(_build_once(own, targets)[1])
            sides.append(own)
        for label in ("a", "b")[len(runs):]:
            base = Path(tempfile.mkdtemp(prefix=f"imagefactory-reproduce-{label}-", dir=parent_dir))
            temp = _temp_settings(settings, base, sde)
            temps.append((temp, base))
            seeded = _seed_external_parents(settings, temp, targets)
            say(f"cold build {label} in {base} (SOURCE_DATE_EPOCH={sde}"
                + (f", seeded {', '.join(seeded)}" if seeded else "") + ")")
            runs.append(_build_once(temp, targets)[1])
            sides.append(temp)
        report = compare_runs(runs[0], runs[1], sde, epoch_source, time.monotonic() - started,
                              [str(b) for _, b in temps] if keep else [])
        report["against_store"] = against_store
        if report["differing_steps"]:
            say(f"comparing the files of {len(report['differing_steps'])} differing layer(s)")
            explain_differences(report, sides, parent_dir, keep=keep)
        return report
    finally:
        if not keep:
            for temp, base in temps:
                _destroy_store(temp, base)


def explain_differences(report: dict, sides: list[Settings], scratch_parent: Path, *, keep: bool = False) -> None:
    """Fill ``files`` of each differing step: the layer tarballs of both sides compared entry by entry.

    Each side's commit images are copied into one OCI layout (layers uncompressed and shared between
    the images, so exporting a chain costs its size once), then the last layer of both is read.
    """
    scratch = Path(tempfile.mkdtemp(prefix="imagefactory-reproduce-layers-", dir=scratch_parent))
    try:
        for n, step in enumerate(report["differing_steps"]):
            images = step.get("images") or [None, None]
            if None in images:
                step["files"] = None  # one side has no commit here: the plans differ, not the bytes
                continue
            if step.get("config_only"):  # same layer, other image: the configs differ
                configs = [json.loads(Buildah(st.storage).inspect(image).get("Config") or "{}")
                           for st, image in zip(sides, images)]
                step["files"], step["config"] = None, config_differences(*configs)
                continue
            blobs = []
            for side, (settings, image) in enumerate(zip(sides, images)):
                layout = scratch / "ab"[side]
                manifest = Buildah(settings.storage).export_layout(image, layout, f"step-{n}")
                blobs.append(oci_blob(layout, manifest["layers"][-1]["digest"]) if manifest.get("layers") else None)
            step["files"] = compare_layers(*blobs) if None not in blobs else None
    finally:
        if keep:
            report["layouts"] = [str(scratch / "a"), str(scratch / "b")]
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the config fields that differ (``container``, ``config.Labels``, ...)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def compare_runs(a: dict[str, dict], b: dict[str, dict], sde: int, epoch_source: str, seconds: float,
                 kept: list[str]) -> dict:
    images = []
    differing = []
    for name, ia in a.items():
        ib = b.get(name, {"image_id": None, "commits": []})
        steps = []
        parent_differs = False
        for i, ca in enumerate(ia["commits"]):
            cb = ib["commits"][i] if i < len(ib["commits"]) else {"image": None, "layer": None}
            layer_same = ca["layer"] is not None and ca["layer"] == cb["layer"]
            same = ca["image"] == cb["image"] and layer_same
            step = {"index": ca["indexes"][-1], "indexes": ca["indexes"], "kind": "+".join(dict.fromkeys(ca["kinds"])),
                    "summary": "; ".join(ca["summaries"]), "layers": [ca["layer"], cb["layer"]],
                    "images": [ca["image"], cb["image"]], "same": same, "layer_same": layer_same,
                    "only_parent_differs": layer_same and not same and parent_differs}
            steps.append(step)
            if not layer_same or not (same or step["only_parent_differs"]):
                differing.append({"image": name, "index": step["index"], "kind": step["kind"],
                                  "summary": step["summary"], "layers": step["layers"], "images": step["images"],
                                  "config_only": layer_same})
            parent_differs = parent_differs or not same
        images.append({"name": name, "target": ia["target"], "image_ids": [ia["image_id"], ib["image_id"]],
                       "same": ia["image_id"] == ib["image_id"], "steps": steps})
    return {"reproducible": all(i["same"] for i in images), "source_date_epoch": sde, "epoch_source": epoch_source,
            "seconds": round(seconds, 3), "images": images, "differing_steps": differing, "stores": kept}


__all__ = ["ReproduceError", "check_reproducible", "compare_runs", "config_differences", "explain_differences", "recipes_commit_time",
           "resolve_epoch"]
