"""npm collectors: lockfiles (lockfileVersion 2/3)."""

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


def discover_lockfiles(root: Path, max_depth: int = 4) -> list[str]:
    """package-lock.json files at most ``max_depth`` directory levels under /opt (node_modules skipped)."""
    found: list[str] = []
    opt = root / "opt"
    if not opt.is_dir() or opt.is_symlink():
        return found
    for dirpath, dirnames, filenames in os.walk(opt):
        rel = Path(dirpath).relative_to(root)
        depth = len(rel.parts) - 1  # levels below opt/
        dirnames[:] = sorted(d for d in dirnames if d != "node_modules" and not d.startswith("."))
        if depth >= max_depth:
            dirnames[:] = []
        if "package-lock.json" in filenames:
            found.append((rel / "package-lock.json").as_posix())
    return sorted(found)


def collect_npm(
    root: Path, lockfiles: list[str], refs: dict[str, str], notes: list[str], include_dev: bool = False
) -> list[Component]:
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
            ns, _, short = name.rpartition("/")
            purl = PackageURL(type="npm", namespace=ns or None, name=short, version=version).to_string()
            location = f"/{PurePosixPath(rel).parent / key}"
            if purl in comps:
                comps[purl].properties.append((f"{PROP_PREFIX}:npm:path", location))
                comps[purl].optional = comps[purl].optional and dev
                continue
            lic = meta.get("license")
            if isinstance(lic, dict):
                lic = lic.get("type")
            resolved = meta.get("resolved")
            comps[purl] = Component(
                kind="npm",
                name=name,
                version=version,
                purl=purl,
                license=_normalize_expression(lic if isinstance(lic, str) else None, refs),
                hashes=_integrity_hashes(meta.get("integrity")),
                download_url=resolved if isinstance(resolved, str) and resolved.startswith("https://") else None,
                optional=dev,
                properties=[(f"{PROP_PREFIX}:npm:lockfile", f"/{rel}"), (f"{PROP_PREFIX}:npm:path", location)],
            )
    return list(comps.values())


