"""npm collectors: installed packages (``node_modules/**/package.json``) and lockfiles (v2/3), found by walking."""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path, PurePosixPath

from packageurl import PackageURL

from .licenses import _normalize_expression
from .model import PROP_PREFIX, Component, _read_text

# --------------------------------------------------------------------------------------------- npm


def _integrity_hashes(integrity: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (integrity or "").split():
        alg, _, b64 = item.partition("-")
        name = {"sha512": "SHA-512", "sha1": "SHA-1", "sha256": "SHA-256", "sha384": "SHA-384"}.get(alg.lower())
        if not name:
            continue
        try:
            out[name] = base64.b64decode(b64.split("?")[0], validate=True).hex()
        except (binascii.Error, ValueError):
            continue
    return out


# Top-level folders of an image that hold the distribution, not applications (/usr/local is walked).
SYSTEM_DIRS = frozenset({"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin",
                         "sys", "tmp", "usr", "var"})


def discover_npm(root: Path) -> tuple[list[str], list[str]]:
    """Walk the image's application folders (everything but the distribution's, plus /usr/local) for
    ``package-lock.json`` files and top-level ``node_modules`` folders; paths relative to the root.

    Nothing is assumed about where an app lives: recipes move apps around."""
    lockfiles: list[str] = []
    modules: list[str] = []
    tops = sorted(d for d in os.listdir(root) if d not in SYSTEM_DIRS) if root.is_dir() else []
    starts = [root / t for t in tops] + [root / "usr" / "local"]
    for start in starts:
        if not start.is_dir() or start.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(start):
            rel = Path(dirpath).relative_to(root)
            if "node_modules" in dirnames:
                modules.append((rel / "node_modules").as_posix())
            dirnames[:] = sorted(d for d in dirnames if d != "node_modules" and not d.startswith("."))
            if "package-lock.json" in filenames:
                lockfiles.append((rel / "package-lock.json").as_posix())
    return sorted(lockfiles), sorted(modules)


def discover_lockfiles(root: Path) -> list[str]:
    """``package-lock.json`` files in the image's application folders (see :func:`discover_npm`)."""
    return discover_npm(root)[0]


def _license_of(meta: dict) -> str | None:
    lic = meta.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if lic is None and isinstance(meta.get("licenses"), list):  # legacy: [{"type": "MIT", "url": ...}]
        types = [x.get("type") if isinstance(x, dict) else x for x in meta["licenses"]]
        types = [t for t in types if isinstance(t, str) and t]
        lic = " OR ".join(types) if len(types) > 1 else (types[0] if types else None)
    return lic if isinstance(lic, str) else None


def _npm_purl(name: str, version: str) -> str:
    ns, _, short = name.rpartition("/")
    return PackageURL(type="npm", namespace=ns or None, name=short, version=version).to_string()


def collect_installed_npm(root: Path, node_modules: list[str], refs: dict[str, str],
                          notes: list[str]) -> list[Component]:
    """What is installed: every ``node_modules/**/package.json`` (nested node_modules too), with the
    integrity hash from npm's hidden lockfile ``node_modules/.package-lock.json`` when it is there."""
    comps: dict[str, Component] = {}
    for top in node_modules:
        project = PurePosixPath(top).parent
        hidden = {}
        text = _read_text(root, f"{top}/.package-lock.json")
        if text:
            try:
                hidden = json.loads(text).get("packages") or {}
            except (ValueError, AttributeError):
                notes.append(f"/{top}/.package-lock.json is not valid JSON: integrity hashes not recorded")
        pending = [PurePosixPath(top)]
        while pending:
            nm = pending.pop()
            host_nm = root / nm
            if not host_nm.is_dir() or host_nm.is_symlink():
                continue
            pkg_dirs = []
            for entry in sorted(os.listdir(host_nm)):
                if entry.startswith("."):
                    continue
                if entry.startswith("@") and (host_nm / entry).is_dir():
                    pkg_dirs += [nm / entry / sub for sub in sorted(os.listdir(host_nm / entry))]
                else:
                    pkg_dirs.append(nm / entry)
            for pkg in pkg_dirs:
                host_pkg = root / pkg
                if host_pkg.is_symlink() or not (host_pkg / "package.json").is_file():
                    continue
                pending.append(pkg / "node_modules")
                try:
                    meta = json.loads((host_pkg / "package.json").read_text(encoding="utf-8", errors="replace"))
                except ValueError:
                    notes.append(f"/{pkg}/package.json is not valid JSON: package not listed")
                    continue
                name, version = meta.get("name"), meta.get("version")
                if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
                    notes.append(f"/{pkg}/package.json has no name/version: package not listed")
                    continue
                purl = _npm_purl(name, version)
                location = f"/{pkg}"
                if purl in comps:
                    comps[purl].properties.append((f"{PROP_PREFIX}:npm:path", location))
                    continue
                lock = hidden.get(str(pkg.relative_to(project))) or {}
                resolved = lock.get("resolved")
                comps[purl] = Component(
                    kind="npm", name=name, version=version, purl=purl,
                    license=_normalize_expression(_license_of(meta), refs),
                    hashes=_integrity_hashes(lock.get("integrity")),
                    download_url=resolved if isinstance(resolved, str) and resolved.startswith("https://") else None,
                    homepage=meta.get("homepage") if isinstance(meta.get("homepage"), str) else None,
                    description=meta.get("description") if isinstance(meta.get("description"), str) else None,
                    properties=[(f"{PROP_PREFIX}:npm:installed", "true"), (f"{PROP_PREFIX}:npm:path", location)],
                )
    return list(comps.values())


def collect_npm(
    root: Path, lockfiles: list[str], refs: dict[str, str], notes: list[str], include_dev: bool = False,
    stage: str | None = None,
) -> list[Component]:
    """Packages of npm lockfiles (lockfileVersion 2/3). ``stage`` names the build stage whose root this is:
    its lockfile describes what went into the artifacts copied out of it (e.g. what webpack bundled into
    ``dist/``), so dev dependencies are kept (as optional) and locations are prefixed with the stage."""
    where = f"{stage}:" if stage else ""
    comps: dict[str, Component] = {}
    for lf in lockfiles:
        rel = lf.lstrip("/")
        text = _read_text(root, rel)
        if text is None:
            notes.append(f"npm lockfile /{rel} not found")
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            notes.append(f"npm lockfile /{rel} is not valid JSON: {exc}")
            continue
        pkgs = data.get("packages")
        if not isinstance(pkgs, dict):
            notes.append(f"npm lockfile /{rel} (lockfileVersion {data.get('lockfileVersion')}) has no "
                         "'packages' map; only lockfileVersion 2/3 are supported")
            continue
        for key, meta in sorted(pkgs.items()):
            if key == "" or "node_modules/" not in key or not isinstance(meta, dict) or meta.get("link"):
                continue
            name = meta.get("name") or key.rsplit("node_modules/", 1)[1]
            version = meta.get("version")
            if not version:
                continue
            dev = bool(meta.get("dev"))
            if dev and not include_dev:
                continue
            purl = _npm_purl(name, version)
            location = f"{where}/{PurePosixPath(rel).parent / key}"
            if purl in comps:
                comps[purl].properties.append((f"{PROP_PREFIX}:npm:path", location))
                comps[purl].optional = comps[purl].optional and dev
                continue
            lic = _license_of(meta)
            resolved = meta.get("resolved")
            comps[purl] = Component(
                kind="npm",
                name=name,
                version=version,
                purl=purl,
                license=_normalize_expression(lic, refs),
                hashes=_integrity_hashes(meta.get("integrity")),
                download_url=resolved if isinstance(resolved, str) and resolved.startswith("https://") else None,
                optional=dev,
                properties=[(f"{PROP_PREFIX}:npm:lockfile", f"{where}/{rel}"), (f"{PROP_PREFIX}:npm:path", location)]
                + ([(f"{PROP_PREFIX}:npm:stage", stage)] if stage else []),
            )
    return list(comps.values())


