"""Collectors for what no package database knows: pinned binaries, Go build info, unidentified executables.

* ``/usr/local/share/imagefactory/binaries.d/*.json``: binaries a recipe installed without a package
  manager, recorded from the recipe's own pin (:class:`imagefactory.pins.BinaryPin`): wheel or archive
  name, version, sha256, licence, purl.
* Go binaries carry their module list (``.go.buildinfo``, Go >= 1.18 layout); each module becomes a
  ``pkg:golang/...`` component. Licences are not part of the build info and stay unknown.
* Any other executable file under ``/usr/local`` or ``/opt`` that no collector claims is reported as an
  unidentified file with its sha256, never dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from packageurl import PackageURL

from ..sources import sha256_file
from .licenses import _normalize_expression
from .model import PROP_PREFIX, Component, _read_text, _resolve_in_root

BINARIES_DIR = "usr/local/share/imagefactory/binaries.d"
EXECUTABLE_ROOTS = ("usr/local", "opt")
_GO_MAGIC = b"\xff Go buildinf:"
_GO_SCAN_LIMIT = 256 << 20


@dataclass
class GoBuildInfo:
    """What ``go version -m`` prints: toolchain, main package and module, dependencies, build settings."""

    go_version: str
    path: str = ""
    main: tuple[str, str, str] | None = None  # (module path, version, h1 sum)
    deps: list[tuple[str, str, str]] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _buildinfo_blob(path: Path) -> bytes | None:
    """The ``.go.buildinfo`` section (or, without section headers, the bytes from the 16-aligned magic)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            try:
                section = ELFFile(f).get_section_by_name(".go.buildinfo")
            except ELFError:
                section = None
            if section is not None:
                return section.data()
            f.seek(0)
            data = f.read(_GO_SCAN_LIMIT)
    except OSError:
        return None
    pos = data.find(_GO_MAGIC)
    while pos != -1 and pos % 16:
        pos = data.find(_GO_MAGIC, pos + 1)
    return data[pos:pos + (64 << 10)] if pos != -1 else None


def go_build_info(path: Path) -> GoBuildInfo | None:
    """Parse a Go binary's embedded build info; None for anything else (or pre-1.18 binaries)."""
    blob = _buildinfo_blob(path)
    if not blob or not blob.startswith(_GO_MAGIC) or len(blob) < 33:
        return None
    flags = blob[15]
    if not flags & 0x2:  # pre-Go-1.18 layout: pointers into the data segment
        return None
    try:
        n, pos = _uvarint(blob, 32)
        version = blob[pos:pos + n].decode("utf-8", "replace")
        n, pos = _uvarint(blob, pos + n)
        mod = blob[pos:pos + n]
    except IndexError:
        return None
    if len(mod) >= 33 and mod[-17] == 0x0A:
        mod = mod[16:-16]  # sentinel bytes around the module string
    info = GoBuildInfo(go_version=version)
    last: str | None = None
    for line in mod.decode("utf-8", "replace").splitlines():
        f = line.split("\t")
        if f[0] == "path" and len(f) > 1:
            info.path = f[1]
        elif f[0] == "mod" and len(f) > 2:
            info.main, last = (f[1], f[2], f[3] if len(f) > 3 else ""), "mod"
        elif f[0] == "dep" and len(f) > 2:
            info.deps.append((f[1], f[2], f[3] if len(f) > 3 else ""))
            last = "dep"
        elif f[0] == "=>" and len(f) > 2 and last == "dep":  # replacement of the previous dep
            info.deps[-1] = (f[1], f[2], f[3] if len(f) > 3 else "")
        elif f[0] == "build" and len(f) > 1 and "=" in f[1]:
            k, _, v = f[1].partition("=")
            info.settings[k] = v
    return info


def _golang_purl(module: str, version: str) -> str:
    ns, _, name = module.rpartition("/")
    return PackageURL(type="golang", namespace=ns or None, name=name,
                      version=None if version in ("", "(devel)") else version).to_string()


def _main_version(info: GoBuildInfo) -> tuple[str, str | None]:
    """The main module's version; a ``(devel)`` build often stamps it with ``-ldflags -X <module>/...Version=``
    (as syft reads it) or carries the VCS tag."""
    module, version, _ = info.main or ("", "", "")
    if version not in ("", "(devel)"):
        return version, None
    m = re.search(r"-X[= ]" + re.escape(module) + r"/\S*?\.[Vv]ersion=(v?\d[\w.+-]*)", info.settings.get("-ldflags", ""))
    if m:
        return m.group(1), "ldflags"
    return version, None


def go_components(image_path: str, info: GoBuildInfo) -> list[Component]:
    """One ``pkg:golang`` component per module in the binary (main module first)."""
    out = []
    mods = ([(*info.main, "main")] if info.main else []) + [(*d, "dep") for d in info.deps]
    for module, version, sum_, role in mods:
        props = [(f"{PROP_PREFIX}:go:binary", image_path), (f"{PROP_PREFIX}:go:role", role)]
        if role == "main":
            version, source = _main_version(info)
            if source:
                props.append((f"{PROP_PREFIX}:go:version-source", source))
        if sum_:
            props.append((f"{PROP_PREFIX}:go:sum", sum_))
        if role == "main":
            props.append((f"{PROP_PREFIX}:go:toolchain", info.go_version))
            props.append((f"{PROP_PREFIX}:go:package", info.path))
        out.append(Component(kind="golang", name=module, version=version, purl=_golang_purl(module, version),
                             properties=props))
    return out


def collect_pinned_binaries(root: Path, refs: dict[str, str], notes: list[str],
                            claimed: set[str]) -> list[Component]:
    """Components for the records under ``binaries.d`` plus the Go modules of the binaries they installed."""
    folder = _resolve_in_root(root, BINARIES_DIR)
    if not folder.is_dir():
        return []
    out: list[Component] = []
    for rec_path in sorted(folder.glob("*.json")):
        where = f"/{BINARIES_DIR}/{rec_path.name}"
        try:
            rec = json.loads(rec_path.read_text())
            name, version, purl, sha = rec["name"], rec["version"], rec["purl"], rec["sha256"]
            installed = [str(p) for p in rec["installed"]]
            purl = PackageURL.from_string(purl).to_string()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"{where}: unreadable binary record ({exc}); its files are listed as unidentified")
            continue
        props = [(f"{PROP_PREFIX}:binary:artifact", str(rec.get("artifact", ""))),
                 (f"{PROP_PREFIX}:binary:record", where)]
        go: list[Component] = []
        for p in installed:
            host = _resolve_in_root(root, p)
            if not host.is_file():
                notes.append(f"{where}: {p} is not in the image")
                continue
            claimed.add(p)
            props.append((f"{PROP_PREFIX}:binary:installed", f"{p} sha256:{sha256_file(host)}"))
            info = go_build_info(host)
            if info:
                go += go_components(p, info)
        out.append(Component(
            kind="binary", name=name, version=version, purl=purl,
            license=_normalize_expression(rec.get("license"), refs),
            hashes={"SHA-256": sha.lower()}, download_url=rec.get("url"), homepage=rec.get("homepage"),
            properties=props,
        ))
        out += go
    return out


def dpkg_claims(root: Path, prefixes: tuple[str, ...] = EXECUTABLE_ROOTS) -> set[str]:
    """Paths under ``prefixes`` that installed Debian packages own (their ``info/*.list`` files)."""
    info = _resolve_in_root(root, "var/lib/dpkg/info")
    out: set[str] = set()
    if not info.is_dir():
        return out
    starts = tuple(f"/{p}/" for p in prefixes)
    for lst in info.glob("*.list"):
        for line in lst.read_text(errors="replace").splitlines():
            if line.startswith(starts):
                out.add(line)
    return out


def manifest_claims(root: Path, manifest_rel: str) -> set[str]:
    text = _read_text(root, manifest_rel)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return set()
    return {str(f) for lib in data.get("libraries") or [] for f in lib.get("files") or []}


def collect_unclaimed_executables(root: Path, claimed: set[str], claimed_dirs: set[str],
                                  notes: list[str]) -> list[Component]:
    """Executables under /usr/local and /opt nobody claimed: Go modules if it is a Go binary, else a file."""
    out: list[Component] = []
    dirs = tuple(d.rstrip("/") + "/" for d in claimed_dirs)
    for top in EXECUTABLE_ROOTS:
        base = root / top
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = "/" + Path(dirpath).relative_to(root).as_posix()
            if rel_dir.startswith(dirs) or (rel_dir + "/").startswith(dirs):
                dirnames[:] = []
                continue
            for fn in sorted(filenames):
                host = Path(dirpath, fn)
                image_path = str(PurePosixPath(rel_dir, fn))
                if image_path in claimed or host.is_symlink():
                    continue
                try:
                    st = host.stat()
                except OSError:
                    continue
                if not (st.st_mode & 0o111) or not host.is_file():
                    continue
                info = go_build_info(host)
                if info:
                    out += go_components(image_path, info)
                    continue
                digest = sha256_file(host)
                out.append(Component(
                    kind="file", name=image_path, version="", purl=None, hashes={"SHA-256": digest},
                    properties=[(f"{PROP_PREFIX}:file:path", image_path),
                                (f"{PROP_PREFIX}:file:status",
                                 "unidentified: executable not claimed by any package database, manifest or pin")],
                ))
    if out:
        notes.append(f"{sum(c.kind == 'file' for c in out)} executable file(s) under /usr/local or /opt are not "
                     "claimed by any package database, manifest or pin: listed as unidentified files with sha256")
    return out


__all__ = ["BINARIES_DIR", "GoBuildInfo", "collect_pinned_binaries", "collect_unclaimed_executables",
           "dpkg_claims", "go_build_info", "manifest_claims"]
