"""Collectors for package databases (dpkg, rpm) and the imagefactory manifest of source-built libraries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from packageurl import PackageURL

from .licenses import _combine_and, _normalize_expression, debian_license_to_spdx
from .model import (DPKG_STATUS, MANIFEST_PATH, PROP_PREFIX, RPM_DB, Component, ManifestError, PatchInfo,
                    _distro_qualifier, _read_text, _resolve_in_root)

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
        return _common_licenses_named(text, refs)  # not machine-readable
    exprs = []
    for i, para in enumerate(paras):
        if "License" not in para or (i > 0 and "Files" not in para):
            continue  # stand-alone License paragraphs only define texts
        short = para["License"].split("\n", 1)[0].strip()
        if short:
            exprs.append(debian_license_to_spdx(short, refs))
    return _combine_and(exprs)


_COMMON_LICENSE_RE = re.compile(r"/usr/share/common-licenses/([A-Za-z][A-Za-z0-9.+_-]*[A-Za-z0-9+])")
_GNU_PROSE_RE = re.compile(r"GNU (Lesser |Library )?General Public License,? (?:as published by the Free Software "
                           r"Foundation;? )?(?:either )?version (\d(?:\.\d)?)", re.IGNORECASE)
# Phrases that only the full text of one licence contains (free-form copyright files quote texts).
_LICENSE_TEXTS = (
    ("python software foundation license version 2", "PSF-2.0"),
    ("permission is hereby granted, free of charge, to any person obtaining a copy", "MIT"),
    ("apache license, version 2.0", "Apache-2.0"),
    ("neither the name of", "BSD-3-Clause"),
)
_COMMON_LICENSES = {"GPL": ("GPL", "3"), "GPL-1": ("GPL", "1"), "GPL-2": ("GPL", "2"), "GPL-3": ("GPL", "3"),
                    "LGPL": ("LGPL", "3"), "LGPL-2": ("LGPL", "2"), "LGPL-2.1": ("LGPL", "2.1"),
                    "LGPL-3": ("LGPL", "3"), "AGPL-3": ("AGPL", "3"), "GFDL-1.2": ("GFDL", "1.2"),
                    "GFDL-1.3": ("GFDL", "1.3")}


def _common_licenses_named(text: str, refs: dict[str, str]) -> str | None:
    """Licences of a free-form (not DEP-5) copyright file: the ``/usr/share/common-licenses/X`` texts it
    points at (Debian links the bare GPL/LGPL names to version 3). GNU licences are "-or-later" when the file grants "any later version", else "-only";
    other names (Apache-2.0, Artistic, BSD, MPL-2.0, CC0-1.0) go through the DEP-5 name mapping."""
    flat = " ".join(text.split())
    later = "any later version" in flat.lower()
    exprs = []
    if not _COMMON_LICENSE_RE.search(text):  # prose only: "GNU Lesser General Public License, version 2.1"
        m = _GNU_PROSE_RE.search(flat)
        if m:
            fam = "LGPL" if m.group(1) else "GPL"
            ver = m.group(2) if "." in m.group(2) else f"{m.group(2)}.0"
            return f"{fam}-{ver}-{'or-later' if later else 'only'}"
        found = [spdx for phrase, spdx in _LICENSE_TEXTS if phrase in flat.lower()]
        if found:  # the licence's own text, quoted in full
            return _combine_and(found[:1] if found[0] == "PSF-2.0" else found)
    for name in sorted(set(_COMMON_LICENSE_RE.findall(text))):
        name = name.rstrip(".")
        if name in _COMMON_LICENSES:
            fam, ver = _COMMON_LICENSES[name]
            ver = ver if "." in ver or fam == "GFDL" else f"{ver}.0"
            exprs.append(f"{fam}-{ver}-{'or-later' if later else 'only'}")
        else:
            exprs.append(debian_license_to_spdx(name, refs))
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
    _licence_from_same_source(list(comps.values()))
    return list(comps.values())


def _licence_from_same_source(comps: list[Component]) -> None:
    """A package without a readable copyright file (slim images drop the doc symlinks, e.g. libstdc++6 ->
    gcc-14-base) takes the licence of a package built from the same source package, and says so."""
    by_source: dict[tuple[str | None, str | None], Component] = {}
    for c in comps:
        if c.license:
            by_source.setdefault((c.source_name, c.source_version), c)
    for c in comps:
        donor = None if c.license else by_source.get((c.source_name, c.source_version))
        if donor is not None:
            c.license = donor.license
            c.properties.append((f"{PROP_PREFIX}:deb:license-from", f"{donor.name} (same source package)"))


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


def collect_manifest(root: Path, refs: dict[str, str], notes: list[str], arch: str | None = None) -> list[Component]:
    """Source-built libraries from the build manifest; ``arch`` is the image's architecture.

    Each purl gets an ``arch`` qualifier: the entry's own (a cross build records its target) or
    the image's, so the amd64 and arm64 instances of one manifest list name different binaries.
    """
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
        lib_arch = lib.get("arch") or arch
        if lib_arch is not None and not (isinstance(lib_arch, str) and re.fullmatch(r"[a-z0-9_]+", lib_arch)):
            raise ManifestError(f"{where}: arch must be an architecture name such as arm64, got {lib_arch!r}")
        if purl:
            try:
                parsed = PackageURL.from_string(purl)
            except ValueError as exc:
                raise ManifestError(f"{where}: invalid purl {purl!r}: {exc}") from exc
            quals = dict(parsed.qualifiers or {}) | ({"arch": lib_arch} if lib_arch else {})
            purl = parsed._replace(qualifiers=quals or None).to_string()
        else:
            quals = {"download_url": download} if download else {}
            quals |= {"arch": lib_arch} if lib_arch else {}
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
            arch=lib_arch or None,
            patches=patches,
            properties=props,
        ))
    return out


