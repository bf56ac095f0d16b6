"""SBOMs (SPDX 2.3 JSON and CycloneDX 1.6 JSON) for a built image, from its mounted root filesystem.

A scanner that only reads package databases misses what was compiled from source into /usr/local.
This package combines the sources of truth found inside the image root:

* the distribution package database (dpkg ``var/lib/dpkg/status``; rpm via ``rpm --root`` when available),
* the imagefactory build manifest ``usr/local/share/imagefactory/manifest.json`` describing every
  library built from source (archive used, its SHA-256, patches, profile, flags, configure options),
* npm: installed packages (``node_modules/**/package.json``) and ``package-lock.json`` files, found by
  walking the image, plus the lockfiles of the build stages the image copies artifacts from,
* binaries installed without a package manager: the recipe's pin recorded in the image
  (``binaries.d``), the Go modules a Go binary embeds, and every other executable under
  ``/usr/local`` or ``/opt`` as an unidentified file with its sha256.

Typical use, with the image mounted by the caller (``buildah mount``)::

    facts = ImageFacts(name="ocserv-modern-ci", tag="latest", image_id="<sha256 hex>", platform="debian")
    paths = write_sboms(mountpoint, facts, out_dir)    # {"spdx": .../NAME.spdx.json, "cyclonedx": .../NAME.cdx.json}

Both documents are built with the reference libraries (spdx-tools, cyclonedx-python-lib), validated with
them before anything is written, and are byte-for-byte reproducible for the same image when
``SOURCE_DATE_EPOCH`` is set (or ``ImageFacts.created`` is given).
"""

from __future__ import annotations

import shutil  # noqa: F401 - tests patch sbom.shutil.which
from pathlib import Path

from .documents import (build_cyclonedx, build_spdx, validate_cyclonedx_json, validate_spdx_document, write_cyclonedx,
                        write_spdx)
from .licenses import _normalize_expression, debian_license_to_spdx
from .model import (COMPONENT_KINDS, MANIFEST_PATH, BaseImage, Component, ImageFacts, Inventory, ManifestError, PatchInfo,
                    SbomValidationError, _resolve_in_root, _safe_id, read_os_release)  # noqa: F401
from .binaries import collect_pinned_binaries, collect_unclaimed_executables, dpkg_claims, manifest_claims
from .npm import collect_installed_npm, collect_npm, discover_lockfiles, discover_npm
from .packages import collect_dpkg, collect_manifest, collect_rpm

__all__ = [
    "MANIFEST_PATH",
    "BaseImage",
    "Component",
    "ImageFacts",
    "Inventory",
    "ManifestError",
    "PatchInfo",
    "SbomValidationError",
    "build_cyclonedx",
    "build_spdx",
    "collect",
    "debian_license_to_spdx",
    "read_os_release",
    "summary",
    "validate_cyclonedx_json",
    "validate_spdx_document",
    "write_cyclonedx",
    "write_sboms",
    "write_spdx",
]


# --------------------------------------------------------------------------------------------- collect


def collect(
    root: Path,
    facts: ImageFacts,
    *,
    npm_lockfiles: list[str] | None = None,
    include_npm_dev: bool = False,
    stages: dict[str, Path] | None = None,
) -> Inventory:
    """Inventory of a mounted image root.

    ``npm_lockfiles`` are paths relative to the root; ``None`` discovers ``package-lock.json`` files by
    walking the image's application folders. npm dev dependencies of the image's own lockfiles are
    skipped unless ``include_npm_dev`` (then they get CycloneDX scope "optional"). ``stages`` maps the
    build stages the image copies artifacts from to their mounted roots: their lockfiles say what went
    into those artifacts (e.g. the packages webpack bundled into ``dist/``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} is not a directory")
    osr = read_os_release(root)
    refs: dict[str, str] = {}
    notes: list[str] = []
    comps = collect_dpkg(root, osr, refs)
    comps += collect_rpm(root, osr, refs, notes)
    comps += collect_manifest(root, refs, notes, facts.architecture)
    found_lockfiles, node_modules = discover_npm(root)
    claimed_dirs: set[str] = {f"/{m}" for m in node_modules}  # npm's: installed packages and their bins
    comps += collect_installed_npm(root, node_modules, refs, notes)
    comps += collect_npm(root, found_lockfiles if npm_lockfiles is None else npm_lockfiles, refs, notes,
                         include_dev=include_npm_dev)
    for stage, stage_root in sorted((stages or {}).items()):
        comps += collect_npm(Path(stage_root), discover_lockfiles(Path(stage_root)), refs, notes,
                             include_dev=True, stage=stage)
    claimed = dpkg_claims(root) | manifest_claims(root, MANIFEST_PATH)
    comps += collect_pinned_binaries(root, refs, notes, claimed)
    comps += collect_unclaimed_executables(root, claimed, claimed_dirs, notes)
    comps = sorted(_merge_duplicates(comps), key=Component.sort_key)
    image_license = _normalize_expression(facts.labels.get("org.opencontainers.image.licenses"), refs)
    return Inventory(facts=facts, os_release=osr, components=comps, license_refs=dict(sorted(refs.items())),
                     notes=notes, image_license=image_license)


def _merge_duplicates(comps: list[Component]) -> list[Component]:
    """One component per reference: the first collector wins (installed before lockfile before stage),
    later ones add their locations and fill in hashes, licence and download URL it lacked. A source build
    of something also shipped as a deb keeps both: different purls."""
    uniq: dict[str, Component] = {}
    for c in comps:
        first = uniq.setdefault(c.ref, c)
        if first is c:
            continue
        first.properties += [p for p in c.properties if p not in first.properties]
        first.hashes = first.hashes or c.hashes
        first.license = first.license or c.license
        first.download_url = first.download_url or c.download_url
        first.optional = first.optional and c.optional
    return list(uniq.values())


def summary(inv: Inventory) -> dict[str, int]:
    """Counts per kind, e.g. ``{"deb": 412, "rpm": 0, "source": 5, "npm": 3, ..., "total": 420}``."""
    out = {k: 0 for k in COMPONENT_KINDS}
    for c in inv.components:
        out[c.kind] += 1
    out["total"] = len(inv.components)
    return out



# --------------------------------------------------------------------------------------------- convenience


def write_sboms(
    root: Path, facts: ImageFacts, out_dir: Path, **kw
) -> dict[str, Path]:
    """Collect once and write ``<name>.spdx.json`` and ``<name>.cdx.json`` into ``out_dir``.

    Keyword arguments go to :func:`collect`.  Returns ``{"spdx": path, "cyclonedx": path}``.
    """
    inv = collect(Path(root), facts, **kw)
    out_dir = Path(out_dir)
    base = _safe_id(facts.name.rsplit("/", 1)[-1])
    return {
        "spdx": write_spdx(inv, out_dir / f"{base}.spdx.json"),
        "cyclonedx": write_cyclonedx(inv, out_dir / f"{base}.cdx.json"),
    }
