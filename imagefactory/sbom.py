"""SBOMs (SPDX 2.3 JSON and CycloneDX 1.6 JSON) for a built image, from its mounted root filesystem.

A scanner that only reads package databases misses what was compiled from source into /usr/local.
This module combines three sources of truth found inside the image root:

* the distribution package database (dpkg ``var/lib/dpkg/status``; rpm via ``rpm --root`` when available),
* the imagefactory build manifest ``usr/local/share/imagefactory/manifest.json`` describing every
  library built from source (archive used, its SHA-256, patches, profile, flags, configure options),
* npm ``package-lock.json`` files (lockfileVersion 2/3).

Typical use, with the image mounted by the caller (``buildah mount``)::

    facts = ImageFacts(name="ocserv-modern-ci", tag="latest", image_id="<sha256 hex>", platform="debian")
    paths = write_sboms(mountpoint, facts, out_dir)    # {"spdx": .../NAME.spdx.json, "cyclonedx": .../NAME.cdx.json}

Both documents are built with the reference libraries (spdx-tools, cyclonedx-python-lib), validated with
them before anything is written, and are byte-for-byte reproducible for the same image when
``SOURCE_DATE_EPOCH`` is set (or ``ImageFacts.created`` is given).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from packageurl import PackageURL

__all__ = [
    "MANIFEST_PATH",
    "BaseImage",
    "Component",
    "ImageFacts",
    "Inventory",
    "ManifestError",
    "PatchInfo",
    "SbomValidationError",
    "collect",
    "debian_license_to_spdx",
    "summary",
    "write_cyclonedx",
    "write_sboms",
    "write_spdx",
]

MANIFEST_PATH = "usr/local/share/imagefactory/manifest.json"
DPKG_STATUS = "var/lib/dpkg/status"
RPM_DB = "var/lib/rpm"
KINDS = ("deb", "rpm", "source", "npm")
PROP_PREFIX = "imagefactory"
SPDX_NAMESPACE_BASE = "https://spdx.org/spdxdocs/imagefactory"
# Fixed namespace for uuid5 serial numbers: uuid5(NAMESPACE_URL, "imagefactory-sbom")
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "imagefactory-sbom")


class ManifestError(ValueError):
    """The imagefactory build manifest is malformed."""


class SbomValidationError(ValueError):
    """A generated document failed validation with the reference library."""

    def __init__(self, fmt: str, messages: list[str]):
        self.format = fmt
        self.messages = messages
        shown = "\n  ".join(messages[:50])
        more = f"\n  ... and {len(messages) - 50} more" if len(messages) > 50 else ""
        super().__init__(f"{fmt} document failed validation ({len(messages)} problems):\n  {shown}{more}")


# --------------------------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class BaseImage:
    """The image at the bottom of the chain, e.g. ``debian trixie minbase via debootstrap``."""

    description: str
    image_id: str | None = None
    name: str | None = None
    digest: str | None = None


@dataclass
class ImageFacts:
    name: str
    tag: str
    image_id: str
    digest: str | None = None
    # (name, image_id), nearest parent first, base-most last
    parents: list[tuple[str, str]] = field(default_factory=list)
    base: BaseImage | None = None
    platform: str = "debian"  # "debian" | "ubi9"
    created: str | None = None  # ISO 8601; SOURCE_DATE_EPOCH wins when set
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PatchInfo:
    name: str
    sha256: str | None = None
    url: str | None = None


@dataclass
class Component:
    kind: str  # deb | rpm | source | npm
    name: str
    version: str
    purl: str
    license: str | None = None  # valid SPDX expression (LicenseRef-* listed in Inventory.license_refs) or None
    hashes: dict[str, str] = field(default_factory=dict)  # "SHA-256"/"SHA-512"/"SHA-1" -> lowercase hex
    download_url: str | None = None
    homepage: str | None = None
    supplier: str | None = None
    description: str | None = None
    arch: str | None = None
    source_name: str | None = None
    source_version: str | None = None
    optional: bool = False  # npm dev dependency kept on request -> CycloneDX scope "optional"
    patches: list[PatchInfo] = field(default_factory=list)
    properties: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """Stable unique reference (CycloneDX bom-ref)."""
        return self.purl

    def sort_key(self) -> tuple:
        return (KINDS.index(self.kind), self.name.lower(), self.name, self.version, self.purl)


@dataclass
class Inventory:
    facts: ImageFacts
    os_release: dict[str, str]
    components: list[Component]
    license_refs: dict[str, str] = field(default_factory=dict)  # LicenseRef-x -> original license name
    notes: list[str] = field(default_factory=list)
    image_license: str | None = None  # from the org.opencontainers.image.licenses label

    def by_kind(self, kind: str) -> list[Component]:
        return [c for c in self.components if c.kind == kind]


# --------------------------------------------------------------------------------------------- root access


def _resolve_in_root(root: Path, rel: str | PurePosixPath) -> Path:
    """Map a path inside the image to the host, following symlinks *inside* the root (never escaping it)."""
    parts = [p for p in PurePosixPath(rel).parts if p != "/"]
    cur: list[str] = []
    hops = 0
    while parts:
        p = parts.pop(0)
        if p in ("", "."):
            continue
        if p == "..":
            if cur:
                cur.pop()
            continue
        cand = root.joinpath(*cur, p)
        if cand.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks resolving {rel} in image root")
            target = PurePosixPath(os.readlink(cand))
            tparts = list(target.parts)
            if target.is_absolute():
                cur = []
                tparts = tparts[1:]
            parts = tparts + parts
            continue
        cur.append(p)
    return root.joinpath(*cur)


def _read_text(root: Path, rel: str) -> str | None:
    try:
        path = _resolve_in_root(root, rel)
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    except OSError:
        return None


def read_os_release(root: Path) -> dict[str, str]:
    text = _read_text(root, "etc/os-release") or _read_text(root, "usr/lib/os-release") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _distro_qualifier(osr: dict[str, str]) -> str | None:
    ident = osr.get("ID")
    ver = osr.get("VERSION_ID") or osr.get("VERSION_CODENAME")
    if not ident:
        return None
    return f"{ident}-{ver}" if ver else ident


# --------------------------------------------------------------------------------------------- licenses

_DEB_LICENSE_MAP = {
    "expat": "MIT",
    "mit/x11": "MIT",
    "apache-2": "Apache-2.0",
    "apache2": "Apache-2.0",
    "apache-2.0+": "Apache-2.0",
    "bsd-2": "BSD-2-Clause",
    "bsd-3": "BSD-3-Clause",
    "bsd-4": "BSD-4-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "bsd-4-clause-uc": "BSD-4-Clause-UC",
    "cc0": "CC0-1.0",
    "openldap-2.8": "OLDAP-2.8",
    "artistic": "Artistic-1.0",
    "artistic-1": "Artistic-1.0",
    "artistic-2": "Artistic-2.0",
    "mpl-1.1": "MPL-1.1",
    "mpl-2": "MPL-2.0",
    "psf-2": "PSF-2.0",
    "python": "Python-2.0",
    "zlib": "Zlib",
    "gfdl-niv-1.3": "GFDL-1.3-no-invariants-only",
    "gfdl-niv-1.3+": "GFDL-1.3-no-invariants-or-later",
    "gfdl-niv-1.2+": "GFDL-1.2-no-invariants-or-later",
}
_DEB_EXCEPTION_MAP = {
    "autoconf": {"2": "Autoconf-exception-2.0", "3": "Autoconf-exception-3.0"},
    "bison": "Bison-exception-2.2",
    "libtool": "Libtool-exception",
    "linux-syscall-note": "Linux-syscall-note",
    "classpath": "Classpath-exception-2.0",
    "llvm": "LLVM-exception",
    "gcc-3.1": "GCC-exception-3.1",
    "gcc runtime library": "GCC-exception-3.1",
    "font": "Font-exception-2.0",
}
_GNU_RE = re.compile(r"^(A|L)?GPL-?v?(\d)(?:\.(\d))?(\+|-or-later|-only)?$", re.IGNORECASE)
_GFDL_RE = re.compile(r"^GFDL-?v?(1\.[123])(\+|-or-later|-only)?$", re.IGNORECASE)


def _licensing():
    from spdx_tools.common.spdx_licensing import spdx_licensing

    return spdx_licensing


def _is_spdx_id(token: str) -> bool:
    try:
        res = _licensing().validate(token)
    except Exception:  # noqa: BLE001 - library crashes on odd characters
        return False
    return not res.errors and not res.invalid_symbols


def _license_ref(name: str, refs: dict[str, str]) -> str:
    ident = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-.") or "unknown"
    ref = f"LicenseRef-{ident}"
    if ref in refs and refs[ref] != name:
        ref = f"{ref}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    refs[ref] = name
    return ref


def _map_license_atom(atom: str, refs: dict[str, str]) -> str:
    atom = " ".join(atom.split())
    exc_id: str | None = None
    m = re.match(r"^(.*?)\s+with\s+(.+?)(?:\s+exception)?$", atom, re.IGNORECASE)
    base = atom
    if m:
        base, exc = m.group(1), m.group(2).strip().lower()
        exc_id = _DEB_EXCEPTION_MAP.get(exc)
        if isinstance(exc_id, dict):
            gm = _GNU_RE.match(base)
            exc_id = exc_id.get(gm.group(2)) if gm else None
        if exc_id is None:
            return _license_ref(atom, refs)
    spdx = _map_license_name(base)
    if spdx is None:
        return _license_ref(atom, refs)
    return f"{spdx} WITH {exc_id}" if exc_id else spdx


def _map_license_name(name: str) -> str | None:
    low = name.lower()
    cand: str | None = _DEB_LICENSE_MAP.get(low)
    if cand is None:
        m = _GNU_RE.match(name)
        if m:
            fam = {"a": "AGPL", "l": "LGPL", None: "GPL"}[(m.group(1) or "").lower() or None]
            ver = f"{m.group(2)}.{m.group(3) or '0'}"
            if fam == "LGPL" and m.group(2) == "2" and m.group(3) is None:
                ver = "2.0"
            suffix = "-or-later" if m.group(4) in ("+", "-or-later") else "-only"
            cand = f"{fam}-{ver}{suffix}"
        else:
            m = _GFDL_RE.match(name)
            if m:
                cand = f"GFDL-{m.group(1)}{'-or-later' if m.group(2) in ('+', '-or-later') else '-only'}"
    if cand is None:
        from cyclonedx.spdx import fixup_id

        cand = fixup_id(name)
    if cand is None and _is_spdx_id(name):
        cand = name
    if cand is None or not _is_spdx_id(cand):
        return None
    return cand


def debian_license_to_spdx(expr: str, refs: dict[str, str]) -> str:
    """Translate a DEP-5 ``License:`` short-name expression to an SPDX expression.

    Unknown names become ``LicenseRef-*`` entries recorded in ``refs``.
    """
    expr = " ".join(expr.split())
    # a comma before and/or lowers precedence in DEP-5
    groups = re.split(r",\s*(and|or)\s+", expr, flags=re.IGNORECASE)
    terms = groups[0::2]
    ops = [o.upper() for o in groups[1::2]]

    def simple(term: str) -> str:
        ors = re.split(r"\s+or\s+", term.strip().rstrip(","), flags=re.IGNORECASE)
        out = []
        for o in ors:
            ands = [_map_license_atom(a, refs) for a in re.split(r"\s+and\s+", o, flags=re.IGNORECASE) if a]
            out.append(" AND ".join(ands) if len(ands) == 1 else "(" + " AND ".join(ands) + ")")
        return out[0] if len(out) == 1 else "(" + " OR ".join(out) + ")"

    result = simple(terms[0])
    for op, term in zip(ops, terms[1:], strict=True):
        result = f"({result} {op} {simple(term)})"
    if result.startswith("(") and result.endswith(")") and _balanced(result[1:-1]):
        result = result[1:-1]
    return result


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def _combine_and(exprs: list[str]) -> str | None:
    uniq = sorted(set(exprs))
    if not uniq:
        return None
    if len(uniq) == 1:
        return uniq[0]
    return " AND ".join(f"({e})" if " " in e and not e.startswith("(") else e for e in uniq)


def _normalize_expression(expr: str | None, refs: dict[str, str]) -> str | None:
    """Keep a valid SPDX expression; wrap anything else as a LicenseRef (rpm/npm free-form licenses)."""
    if not expr or expr.strip().upper() in ("NOASSERTION", "NONE", "UNKNOWN"):
        return None
    expr = expr.strip()
    try:
        res = _licensing().validate(expr)
        ok = not res.errors and not res.invalid_symbols
    except Exception:  # noqa: BLE001
        ok = False
    if ok:
        return expr
    return _license_ref(expr, refs)


# --------------------------------------------------------------------------------------------- dpkg


def _parse_deb822(text: str) -> list[dict[str, str]]:
    paras: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                paras.append(cur)
            cur, last = {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                cur[last] += "\n" + line[1:]
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            last = k.strip()
            cur[last] = v.strip()
    if cur:
        paras.append(cur)
    return paras


def _deb_copyright_license(root: Path, pkg: str, refs: dict[str, str]) -> str | None:
    text = _read_text(root, f"usr/share/doc/{pkg}/copyright")
    if not text:
        return None
    paras = _parse_deb822(text)
    if not paras or "copyright-format" not in paras[0].get("Format", ""):
        return None  # not machine-readable
    exprs = []
    for i, para in enumerate(paras):
        if "License" not in para or (i > 0 and "Files" not in para):
            continue  # stand-alone License paragraphs only define texts
        short = para["License"].split("\n", 1)[0].strip()
        if short:
            exprs.append(debian_license_to_spdx(short, refs))
    return _combine_and(exprs)


def _supplier_from_maintainer(maint: str | None) -> str | None:
    if not maint:
        return None
    name = re.sub(r"\s*<[^>]*>\s*", " ", maint).strip().strip(",")
    return name or None


def collect_dpkg(root: Path, osr: dict[str, str], refs: dict[str, str]) -> list[Component]:
    text = _read_text(root, DPKG_STATUS)
    if text is None:
        return []
    ns = osr.get("ID", "debian")
    distro = _distro_qualifier(osr)
    comps: dict[str, Component] = {}
    for para in _parse_deb822(text):
        if para.get("Status", "").split() != ["install", "ok", "installed"]:
            continue
        name, version = para.get("Package"), para.get("Version")
        if not name or not version:
            continue
        arch = para.get("Architecture", "")
        src = para.get("Source", "")
        src_name, src_ver = name, version
        if src:
            m = re.match(r"^(\S+)(?:\s+\((.+)\))?$", src)
            if m:
                src_name, src_ver = m.group(1), m.group(2) or version
        quals = {"arch": arch} if arch else {}
        if distro:
            quals["distro"] = distro
        purl = PackageURL(type="deb", namespace=ns, name=name, version=version, qualifiers=quals).to_string()
        desc = para.get("Description", "").split("\n", 1)[0].strip() or None
        props = [(f"{PROP_PREFIX}:deb:source", f"{src_name} {src_ver}")]
        comps[purl] = Component(
            kind="deb",
            name=name,
            version=version,
            purl=purl,
            arch=arch or None,
            source_name=src_name,
            source_version=src_ver,
            license=_deb_copyright_license(root, name, refs),
            homepage=para.get("Homepage") or None,
            supplier=_supplier_from_maintainer(para.get("Maintainer")),
            description=desc,
            properties=props,
        )
    return list(comps.values())


# --------------------------------------------------------------------------------------------- rpm

_RPM_QF = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{LICENSE}\\t%{SOURCERPM}\\t%{VENDOR}\\t%{URL}\\n"


def collect_rpm(root: Path, osr: dict[str, str], refs: dict[str, str], notes: list[str]) -> list[Component]:
    if not _resolve_in_root(root, RPM_DB).exists() and not _resolve_in_root(root, "usr/lib/sysimage/rpm").exists():
        return []
    rpm = shutil.which("rpm")
    if not rpm:
        notes.append("rpm database present but the rpm command is not available: rpm packages not listed")
        return []
    proc = subprocess.run(
        [rpm, "--root", str(root), "-qa", "--queryformat", _RPM_QF],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        notes.append(f"rpm -qa failed ({proc.returncode}): {proc.stderr.strip()[:200]}")
        return []
    ns = {"rhel": "redhat"}.get(osr.get("ID", ""), osr.get("ID", "redhat"))
    distro = _distro_qualifier(osr)
    comps: dict[str, Component] = {}
    for line in proc.stdout.splitlines():
        f = line.split("\t")
        if len(f) < 9 or f[0] == "gpg-pubkey":
            continue
        name, epoch, ver, rel, arch, lic, srpm, vendor, url = f[:9]
        quals = {"arch": arch}
        if epoch and epoch != "0":
            quals["epoch"] = epoch
        if distro:
            quals["distro"] = distro
        version = f"{ver}-{rel}"
        purl = PackageURL(type="rpm", namespace=ns, name=name, version=version, qualifiers=quals).to_string()
        comps[purl] = Component(
            kind="rpm", name=name, version=version, purl=purl, arch=arch,
            license=_normalize_expression(lic if lic != "(none)" else None, refs),
            source_name=srpm if srpm != "(none)" else None,
            supplier=vendor if vendor != "(none)" else None,
            homepage=url if url.startswith(("http://", "https://")) else None,
            properties=[(f"{PROP_PREFIX}:rpm:sourcerpm", srpm)] if srpm != "(none)" else [],
        )
    return list(comps.values())


# --------------------------------------------------------------------------------------------- manifest

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def collect_manifest(root: Path, refs: dict[str, str], notes: list[str]) -> list[Component]:
    text = _read_text(root, MANIFEST_PATH)
    if text is None:
        notes.append(f"no build manifest at /{MANIFEST_PATH}: no source-built libraries listed")
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"/{MANIFEST_PATH}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise ManifestError(f"/{MANIFEST_PATH}: unsupported schema {data.get('schema') if isinstance(data, dict) else data!r}")
    out: list[Component] = []
    for i, lib in enumerate(data.get("libraries") or []):
        where = f"/{MANIFEST_PATH} libraries[{i}]"
        try:
            name, version = str(lib["name"]), str(lib["version"])
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"{where}: name and version are required") from exc
        archive = lib.get("archive") or {}
        sha = (archive.get("sha256") or "").lower()
        if sha and not _HEX64.match(sha):
            raise ManifestError(f"{where}: archive.sha256 is not a SHA-256 hex digest: {sha!r}")
        purl = lib.get("purl")
        download = archive.get("url") or lib.get("upstream_url")
        if purl:
            try:
                purl = PackageURL.from_string(purl).to_string()
            except ValueError as exc:
                raise ManifestError(f"{where}: invalid purl {purl!r}: {exc}") from exc
        else:
            quals = {"download_url": download} if download else {}
            purl = PackageURL(type="generic", name=name, version=version, qualifiers=quals).to_string()
        patches = []
        for p in lib.get("patches") or []:
            psha = (p.get("sha256") or "").lower() or None
            if psha and not _HEX64.match(psha):
                raise ManifestError(f"{where}: patch {p.get('name')!r}: bad sha256")
            patches.append(PatchInfo(name=str(p["name"]), sha256=psha, url=p.get("url")))
        props: list[tuple[str, str]] = []
        if archive.get("name"):
            props.append((f"{PROP_PREFIX}:archive", str(archive["name"])))
        if lib.get("profile"):
            props.append((f"{PROP_PREFIX}:profile", str(lib["profile"])))
        for k, v in sorted((lib.get("flags") or {}).items()):
            props.append((f"{PROP_PREFIX}:{k.lower()}", str(v)))
        opts = lib.get("options") or []
        if opts:
            props.append((f"{PROP_PREFIX}:options", " ".join(str(o) for o in opts)))
        for p in patches:
            props.append((f"{PROP_PREFIX}:patch", f"{p.name} sha256:{p.sha256}" if p.sha256 else p.name))
        out.append(Component(
            kind="source",
            name=name,
            version=version,
            purl=purl,
            license=_normalize_expression(lib.get("license"), refs),
            hashes={"SHA-256": sha} if sha else {},
            download_url=download,
            homepage=lib.get("homepage"),
            description=lib.get("description"),
            patches=patches,
            properties=props,
        ))
    return out


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


# --------------------------------------------------------------------------------------------- collect


def collect(
    root: Path,
    facts: ImageFacts,
    *,
    npm_lockfiles: list[str] | None = None,
    include_npm_dev: bool = False,
) -> Inventory:
    """Inventory of a mounted image root.

    ``npm_lockfiles`` are paths relative to the root; ``None`` auto-discovers ``package-lock.json`` files
    at most 4 levels under ``opt/``.  npm dev dependencies are skipped unless ``include_npm_dev`` (then
    they get CycloneDX scope "optional").
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} is not a directory")
    osr = read_os_release(root)
    refs: dict[str, str] = {}
    notes: list[str] = []
    comps = collect_dpkg(root, osr, refs)
    comps += collect_rpm(root, osr, refs, notes)
    comps += collect_manifest(root, refs, notes)
    if npm_lockfiles is None:
        npm_lockfiles = discover_lockfiles(root)
    comps += collect_npm(root, npm_lockfiles, refs, notes, include_dev=include_npm_dev)
    # One component per purl (a source build of something also shipped as deb keeps both: different purls)
    uniq: dict[str, Component] = {}
    for c in comps:
        uniq.setdefault(c.ref, c)
    comps = sorted(uniq.values(), key=Component.sort_key)
    image_license = _normalize_expression(facts.labels.get("org.opencontainers.image.licenses"), refs)
    return Inventory(facts=facts, os_release=osr, components=comps, license_refs=dict(sorted(refs.items())),
                     notes=notes, image_license=image_license)


def summary(inv: Inventory) -> dict[str, int]:
    """Counts per kind, e.g. ``{"deb": 412, "rpm": 0, "source": 5, "npm": 3, "total": 420}``."""
    out = {k: 0 for k in KINDS}
    for c in inv.components:
        out[c.kind] += 1
    out["total"] = len(inv.components)
    return out


# --------------------------------------------------------------------------------------------- shared helpers


def _hex_id(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip().lower()
    return v.split(":", 1)[1] if v.startswith("sha256:") else v


def _oci_purl(name: str, digest_hex: str | None, tag: str | None = None) -> str:
    repo, _, short = name.rpartition("/")
    quals: dict[str, str] = {}
    if repo:
        quals["repository_url"] = name
    if tag:
        quals["tag"] = tag
    version = f"sha256:{digest_hex}" if digest_hex else None
    return PackageURL(type="oci", name=short.lower(), version=version, qualifiers=quals or None).to_string()


@dataclass(frozen=True)
class _Ancestor:
    name: str
    image_id: str | None
    digest: str | None
    description: str | None

    @property
    def purl(self) -> str:
        return _oci_purl(self.name, self.digest or self.image_id)


def _ancestors(facts: ImageFacts) -> list[_Ancestor]:
    out: list[_Ancestor] = []
    seen: set[str] = set()
    base_id = _hex_id(facts.base.image_id) if facts.base else None
    for name, iid in facts.parents:
        iid = _hex_id(iid)
        desc = facts.base.description if facts.base and iid and iid == base_id else None
        key = iid or name
        if key in seen:
            continue
        seen.add(key)
        out.append(_Ancestor(name, iid, None, desc))
    if facts.base and (base_id or facts.base.name) and (base_id or facts.base.name) not in seen:
        out.append(_Ancestor(facts.base.name or "base", base_id, _hex_id(facts.base.digest), facts.base.description))
    return out


def _image_purl(facts: ImageFacts) -> str:
    return _oci_purl(facts.name, _hex_id(facts.digest) or _hex_id(facts.image_id), facts.tag)


def _creation_time(facts: ImageFacts) -> datetime:
    sde = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if sde:
        return datetime.fromtimestamp(int(sde), tz=UTC)
    if facts.created:
        dt = datetime.fromisoformat(facts.created)
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
    return datetime.now(UTC).replace(microsecond=0)


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("imagefactory")
    except Exception:  # noqa: BLE001
        return "0"


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


_ORG_WORDS = re.compile(
    r"\b(team|maintainers|developers|group|project|foundation|inc|ltd|llc|gmbh|corporation|red hat|debian)\b",
    re.IGNORECASE,
)


def _spdx_id(kind: str, name: str, key: str) -> str:
    return f"SPDXRef-{kind}-{_safe_id(name)[:60]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------- SPDX


def build_spdx(inv: Inventory):
    """spdx_tools Document for an inventory (not yet validated)."""
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        ExtractedLicensingInfo,
        Package,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.validation.uri_validators import validate_download_location, validate_url

    facts = inv.facts
    image_hex = _hex_id(facts.image_id) or ""
    created = _creation_time(facts).replace(tzinfo=None)
    creation = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=f"{facts.name}:{facts.tag}",
        document_namespace=f"{SPDX_NAMESPACE_BASE}/{_safe_id(facts.name)}-{image_hex}",
        creators=[Actor(ActorType.TOOL, f"imagefactory-{_tool_version()}")],
        created=created,
        creator_comment="Generated from the mounted image root: package databases, the imagefactory build "
                        "manifest of source-built libraries, and npm lockfiles.",
    )
    alg = {"SHA-256": ChecksumAlgorithm.SHA256, "SHA-512": ChecksumAlgorithm.SHA512,
           "SHA-1": ChecksumAlgorithm.SHA1, "SHA-384": ChecksumAlgorithm.SHA384}
    lic = _licensing()

    def purl_ref(purl: str) -> ExternalPackageRef:
        return ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)

    def url_or_none(u: str | None) -> str | None:
        return u if u and not validate_url(u) else None

    def _spdx_actor(name: str) -> Actor:
        name = name.replace("(", "[").replace(")", "]")  # parentheses would break the "Name (email)" syntax
        org = _ORG_WORDS.search(name) is not None
        return Actor(ActorType.ORGANIZATION if org else ActorType.PERSON, name)

    image_id = "SPDXRef-image"
    labels = "\n".join(f"{k}={v}" for k, v in sorted(facts.labels.items()))
    image_comment = f"image id sha256:{image_hex}" + (f"\ndigest {facts.digest}" if facts.digest else "")
    image_comment += f"\nplatform {facts.platform}"
    if labels:
        image_comment += "\nlabels:\n" + labels
    image_license = lic.parse(inv.image_license) if inv.image_license else None
    packages = [Package(
        spdx_id=image_id,
        name=facts.name,
        version=facts.tag,
        download_location=SpdxNoAssertion(),
        files_analyzed=False,
        supplier=SpdxNoAssertion(),
        license_concluded=SpdxNoAssertion(),
        license_declared=image_license or SpdxNoAssertion(),
        copyright_text=SpdxNoAssertion(),
        primary_package_purpose=PackagePurpose.CONTAINER,
        built_date=created,
        comment=image_comment,
        external_references=[purl_ref(_image_purl(facts))],
    )]
    rels = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    prev = image_id
    for anc in _ancestors(facts):
        sid = _spdx_id("image", anc.name, anc.purl)
        comment = f"image id sha256:{anc.image_id}" if anc.image_id else None
        if anc.description:
            comment = f"{anc.description}" + (f"\n{comment}" if comment else "")
        packages.append(Package(
            spdx_id=sid, name=anc.name, download_location=SpdxNoAssertion(), files_analyzed=False,
            license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(), primary_package_purpose=PackagePurpose.CONTAINER,
            comment=comment, external_references=[purl_ref(anc.purl)],
        ))
        rels.append(Relationship(image_id, RelationshipType.DESCENDANT_OF, sid))
        if prev != image_id:
            rels.append(Relationship(prev, RelationshipType.DESCENDANT_OF, sid))
        prev = sid

    purpose = {"deb": PackagePurpose.INSTALL, "rpm": PackagePurpose.INSTALL,
               "source": PackagePurpose.LIBRARY, "npm": PackagePurpose.LIBRARY}
    for c in inv.components:
        sid = _spdx_id(c.kind, c.name, c.ref)
        dl = c.download_url if c.download_url and not validate_download_location(c.download_url) else None
        source_info = None
        if c.kind == "source":
            parts = [f"built from source by imagefactory from {c.download_url or 'an upstream archive'}"]
            if c.hashes.get("SHA-256"):
                parts.append(f"archive sha256 {c.hashes['SHA-256']}")
            if c.patches:
                parts.append("patches applied: " + ", ".join(
                    f"{p.name} (sha256 {p.sha256})" if p.sha256 else p.name for p in c.patches))
            source_info = "; ".join(parts)
        elif c.source_name:
            source_info = f"built from source package {c.source_name} {c.source_version or ''}".strip()
        props = "\n".join(f"{k}={v}" for k, v in c.properties)
        packages.append(Package(
            spdx_id=sid,
            name=c.name,
            version=c.version,
            download_location=dl or SpdxNoAssertion(),
            files_analyzed=False,
            supplier=_spdx_actor(c.supplier) if c.supplier else SpdxNoAssertion(),
            checksums=[Checksum(alg[a], h) for a, h in sorted(c.hashes.items()) if a in alg],
            homepage=url_or_none(c.homepage),
            source_info=source_info,
            license_concluded=SpdxNoAssertion(),
            license_declared=lic.parse(c.license) if c.license else SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(),
            summary=c.description,
            comment=props or None,
            primary_package_purpose=purpose[c.kind],
            external_references=[purl_ref(c.purl)],
        ))
        rels.append(Relationship(image_id, RelationshipType.CONTAINS, sid))

    extracted = [
        ExtractedLicensingInfo(
            license_id=ref, license_name=name,
            extracted_text=f"License named '{name}' by the package metadata (Debian machine-readable copyright "
                           "file, rpm header or npm lockfile); see the package's own license files for the text.",
        )
        for ref, name in sorted(inv.license_refs.items())
    ]
    return Document(creation_info=creation, packages=packages, relationships=rels,
                    extracted_licensing_info=extracted)


def validate_spdx_document(doc) -> list[str]:
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    return [m.validation_message for m in validate_full_spdx_document(doc, "SPDX-2.3")]


def write_spdx(inv: Inventory, path: Path) -> Path:
    """Validate and write the SPDX 2.3 JSON document; raises SbomValidationError on invalid content."""
    import io

    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    doc = build_spdx(inv)
    msgs = validate_spdx_document(doc)
    if msgs:
        raise SbomValidationError("SPDX 2.3", msgs)
    buf = io.StringIO()
    write_document_to_stream(doc, buf, validate=False)
    return _atomic_write(path, buf.getvalue() + "\n")


# --------------------------------------------------------------------------------------------- CycloneDX


def _cdx_licenses(expr: str | None, refs: dict[str, str]):
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.spdx import is_supported_id

    if not expr:
        return []
    if is_supported_id(expr):
        return [DisjunctiveLicense(id=expr)]
    if expr in refs:
        return [DisjunctiveLicense(name=refs[expr])]
    return [LicenseExpression(expr)]


def build_cyclonedx(inv: Inventory):
    """cyclonedx Bom for an inventory (not yet validated)."""
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import (
        Component as CdxComponent,
    )
    from cyclonedx.model.component import (
        ComponentScope,
        ComponentType,
        Diff,
        Patch,
        PatchClassification,
        Pedigree,
    )
    from cyclonedx.model.contact import OrganizationalEntity
    from cyclonedx.model.tool import ToolRepository

    facts = inv.facts
    image_hex = _hex_id(facts.image_id) or ""
    algs = {"SHA-256": HashAlgorithm.SHA_256, "SHA-512": HashAlgorithm.SHA_512,
            "SHA-1": HashAlgorithm.SHA_1, "SHA-384": HashAlgorithm.SHA_384}

    def purl(s: str) -> PackageURL:
        return PackageURL.from_string(s)

    ancestors = []
    for depth, anc in enumerate(_ancestors(facts), start=1):
        # the library sorts ancestors by name: keep "nearest first" explicit
        props = [Property(name=f"{PROP_PREFIX}:ancestor_depth", value=str(depth))]
        if anc.image_id:
            props.append(Property(name=f"{PROP_PREFIX}:image_id", value=f"sha256:{anc.image_id}"))
        ancestors.append(CdxComponent(
            type=ComponentType.CONTAINER, name=anc.name, bom_ref=f"ancestor:{anc.purl}",
            version=f"sha256:{anc.digest or anc.image_id}" if (anc.digest or anc.image_id) else None,
            purl=purl(anc.purl), description=anc.description, properties=props,
        ))
    image_props = [Property(name=f"{PROP_PREFIX}:image_id", value=f"sha256:{image_hex}"),
                   Property(name=f"{PROP_PREFIX}:platform", value=facts.platform)]
    if facts.digest:
        image_props.append(Property(name=f"{PROP_PREFIX}:digest", value=facts.digest))
    if facts.base:
        image_props.append(Property(name=f"{PROP_PREFIX}:base", value=facts.base.description))
    image_props += [Property(name=f"{PROP_PREFIX}:label:{k}", value=v) for k, v in sorted(facts.labels.items())]
    image_purl = _image_purl(facts)
    image = CdxComponent(
        type=ComponentType.CONTAINER, name=facts.name, version=facts.tag, bom_ref=image_purl,
        purl=purl(image_purl), properties=image_props,
        licenses=_cdx_licenses(inv.image_license, inv.license_refs),
        pedigree=Pedigree(ancestors=ancestors) if ancestors else None,
    )

    comps = []
    for c in inv.components:
        ext = []
        if c.download_url:
            ext.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(c.download_url)))
        if c.homepage and c.homepage.startswith(("http://", "https://")):
            ext.append(ExternalReference(type=ExternalReferenceType.WEBSITE, url=XsUri(c.homepage)))
        pedigree = None
        if c.patches:
            pedigree = Pedigree(
                patches=[Patch(type=PatchClassification.UNOFFICIAL,
                               diff=Diff(url=XsUri(p.url)) if p.url else None) for p in c.patches],
                notes="Patches applied by imagefactory: " + ", ".join(
                    f"{p.name} (sha256 {p.sha256})" if p.sha256 else p.name for p in c.patches),
            )
        props = [Property(name=f"{PROP_PREFIX}:kind", value=c.kind)]
        props += [Property(name=k, value=v) for k, v in c.properties]
        comps.append(CdxComponent(
            type=ComponentType.LIBRARY,
            name=c.name,
            version=c.version,
            bom_ref=c.ref,
            purl=purl(c.purl),
            description=c.description,
            supplier=OrganizationalEntity(name=c.supplier) if c.supplier else None,
            scope=ComponentScope.OPTIONAL if c.optional else None,
            hashes=[HashType(alg=algs[a], content=h) for a, h in sorted(c.hashes.items()) if a in algs],
            licenses=_cdx_licenses(c.license, inv.license_refs),
            external_references=ext,
            properties=props,
            pedigree=pedigree,
        ))

    tool = CdxComponent(type=ComponentType.APPLICATION, name="imagefactory", version=_tool_version(),
                        bom_ref="tool:imagefactory")
    meta = BomMetaData(
        tools=ToolRepository(components=[tool]),
        component=image,
        timestamp=_creation_time(facts),
        properties=[Property(name=f"{PROP_PREFIX}:note", value=n) for n in inv.notes],
    )
    bom = Bom(
        components=comps,
        metadata=meta,
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, f"sha256:{image_hex}"),
        version=1,
    )
    bom.register_dependency(image, comps)
    return bom


def _memoize_iri_format_check() -> None:
    """The schema's ``iri-reference`` format check (jsonschema -> rfc3987_syntax, an Earley parser) costs
    ~15 ms per URL, i.e. seconds for an image with hundreds of packages.  It is a pure function of its
    arguments, so memoize it process-wide: images built in one run share most package homepages.
    Behaviour is unchanged; if the private hook is not there (other jsonschema version) nothing happens."""
    import functools

    try:
        import jsonschema._format as fmt
    except ImportError:  # pragma: no cover
        return
    fn = getattr(fmt, "_rfc3987_is_valid_syntax", None)
    if fn is not None and not hasattr(fn, "cache_info"):
        fmt._rfc3987_is_valid_syntax = functools.lru_cache(maxsize=65536)(fn)


def validate_cyclonedx_json(text: str) -> list[str]:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    _memoize_iri_format_check()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if not errors:
        return []
    return [str(getattr(e, "data", e)) for e in errors]


def write_cyclonedx(inv: Inventory, path: Path) -> Path:
    """Validate and write the CycloneDX 1.6 JSON document; raises SbomValidationError on invalid content."""
    from cyclonedx.output.json import JsonV1Dot6

    bom = build_cyclonedx(inv)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    msgs = validate_cyclonedx_json(text)
    if msgs:
        raise SbomValidationError("CycloneDX 1.6", msgs)
    return _atomic_write(path, text + "\n")


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
