"""Reusable assertions on SBOM files written by ``imagefactory.sbom`` (SPDX 2.3 JSON + CycloneDX 1.6 JSON).

Meant for unit tests and for end-to-end tests on real images::

    from sbom_checks import assert_sbom_valid, assert_sbom_has_libraries
    spdx, cdx = assert_sbom_valid(paths["spdx"], paths["cyclonedx"])
    assert_sbom_has_libraries(paths["spdx"], paths["cyclonedx"], {"wolfssl": ("5.9.2", "2f4e...")})

Every helper re-reads the files with the reference libraries (spdx-tools parser + validator, cyclonedx
strict JSON schema validator), so a passing check means the documents really are valid.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path


def _file_key(path: Path) -> tuple[str, int, int]:
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_mtime_ns, st.st_size


def load_spdx(path: Path):
    """Parse an SPDX file with spdx-tools and validate it; returns the spdx_tools Document.

    Results are cached per (path, mtime, size): treat the returned object as read-only."""
    return _load_spdx(*_file_key(path))


def load_cyclonedx(path: Path) -> dict:
    """Validate a CycloneDX 1.6 JSON file against the strict schema; returns the parsed JSON (cached,
    read-only)."""
    return _load_cyclonedx(*_file_key(path))


@functools.lru_cache(maxsize=32)
def _load_spdx(path: str, _mtime: int, _size: int):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    doc = parse_file(str(path))
    msgs = validate_full_spdx_document(doc)
    assert not msgs, f"{path}: SPDX validation failed:\n" + "\n".join(m.validation_message for m in msgs[:30])
    return doc


@functools.lru_cache(maxsize=32)
def _load_cyclonedx(path: str, _mtime: int, _size: int) -> dict:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = Path(path).read_text(encoding="utf-8")
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    errors = list(errors or [])
    assert not errors, f"{path}: CycloneDX validation failed:\n" + "\n".join(str(e) for e in errors[:30])
    data = json.loads(text)
    assert data["bomFormat"] == "CycloneDX" and data["specVersion"] == "1.6"
    return data


def assert_sbom_valid(spdx_path: Path, cdx_path: Path):
    """Both files parse and validate; returns (spdx Document, CycloneDX dict)."""
    return load_spdx(spdx_path), load_cyclonedx(cdx_path)


def _purls(pkg) -> list[str]:
    return [r.locator for r in pkg.external_references if r.reference_type == "purl"]


def cdx_components_by_kind(cdx: dict) -> dict[str, list[dict]]:
    """CycloneDX components grouped by the ``imagefactory:kind`` property (deb/rpm/source/npm)."""
    out: dict[str, list[dict]] = {}
    for c in cdx.get("components", []):
        kind = next((p["value"] for p in c.get("properties", []) if p["name"] == "imagefactory:kind"), "?")
        out.setdefault(kind, []).append(c)
    return out


def spdx_packages_by_purl_type(doc) -> dict[str, list]:
    """SPDX packages grouped by purl type (deb, rpm, npm, oci, github, generic, ...)."""
    out: dict[str, list] = {}
    for p in doc.packages:
        for purl in _purls(p):
            out.setdefault(purl[4:].split("/", 1)[0], []).append(p)
    return out


def assert_sbom_has_libraries(spdx_path: Path, cdx_path: Path, expected: dict[str, tuple[str, str]]) -> None:
    """Every ``name -> (version, archive sha256)`` is a source-built component in both documents."""
    from spdx_tools.spdx.model import ChecksumAlgorithm

    doc, cdx = assert_sbom_valid(spdx_path, cdx_path)
    sources = {c["name"]: c for c in cdx_components_by_kind(cdx).get("source", [])}
    spdx_by_name: dict[str, list] = {}
    for p in doc.packages:
        spdx_by_name.setdefault(p.name, []).append(p)
    problems = []
    for name, (version, sha256) in sorted(expected.items()):
        c = sources.get(name)
        if c is None:
            problems.append(f"CycloneDX: source-built {name} missing (have {sorted(sources)})")
        else:
            if c.get("version") != version:
                problems.append(f"CycloneDX: {name} version {c.get('version')} != {version}")
            hashes = {h["alg"]: h["content"] for h in c.get("hashes", [])}
            if hashes.get("SHA-256") != sha256.lower():
                problems.append(f"CycloneDX: {name} SHA-256 {hashes.get('SHA-256')} != {sha256}")
            if not c.get("purl"):
                problems.append(f"CycloneDX: {name} has no purl")
        matches = [
            p for p in spdx_by_name.get(name, [])
            if p.version == version
            and any(ck.algorithm == ChecksumAlgorithm.SHA256 and ck.value.lower() == sha256.lower()
                    for ck in p.checksums)
        ]
        if not matches:
            problems.append(f"SPDX: no package {name} {version} with SHA256 {sha256}")
    assert not problems, "\n".join(problems)


def assert_sbom_relationships(spdx_path: Path, cdx_path: Path, ancestor_ids: list[str] = ()) -> None:
    """The image CONTAINS every component (SPDX) / depends on every component (CycloneDX), and every
    image id in ``ancestor_ids`` is an ancestor (SPDX DESCENDANT_OF, CycloneDX pedigree ancestors)."""
    from spdx_tools.spdx.model import RelationshipType

    doc, cdx = assert_sbom_valid(spdx_path, cdx_path)
    described = [r.related_spdx_element_id for r in doc.relationships
                 if r.spdx_element_id == "SPDXRef-DOCUMENT" and r.relationship_type == RelationshipType.DESCRIBES]
    assert len(described) == 1, f"document must describe exactly one image, got {described}"
    image = described[0]
    contained = {r.related_spdx_element_id for r in doc.relationships
                 if r.spdx_element_id == image and r.relationship_type == RelationshipType.CONTAINS}
    ancestors = {r.related_spdx_element_id for r in doc.relationships
                 if r.spdx_element_id == image and r.relationship_type == RelationshipType.DESCENDANT_OF}
    others = {p.spdx_id for p in doc.packages} - {image} - ancestors
    assert others <= contained, f"SPDX: packages not CONTAINed by the image: {sorted(others - contained)[:10]}"
    anc_purls = " ".join(u for p in doc.packages if p.spdx_id in ancestors for u in _purls(p))
    for iid in ancestor_ids:
        iid = iid.removeprefix("sha256:")
        assert f"sha256%3A{iid}" in anc_purls or f"sha256:{iid}" in anc_purls, f"SPDX: ancestor {iid} missing"

    top = cdx["metadata"]["component"]
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in cdx.get("dependencies", [])}
    refs = {c["bom-ref"] for c in cdx.get("components", [])}
    assert refs <= deps.get(top["bom-ref"], set()), "CycloneDX: image does not depend on every component"
    cdx_anc = top.get("pedigree", {}).get("ancestors", [])
    anc_text = json.dumps(cdx_anc)
    for iid in ancestor_ids:
        iid = iid.removeprefix("sha256:")
        assert iid in anc_text, f"CycloneDX: ancestor {iid} missing from metadata.component.pedigree"


def assert_sbom_patches(cdx_path: Path, name: str, patch_names: list[str]) -> None:
    """The source-built component ``name`` records its patches as CycloneDX pedigree."""
    cdx = load_cyclonedx(cdx_path)
    comp = next(c for c in cdx_components_by_kind(cdx).get("source", []) if c["name"] == name)
    ped = comp.get("pedigree", {})
    assert len(ped.get("patches", [])) == len(patch_names), ped
    assert all(p["type"] == "unofficial" for p in ped["patches"])
    for pn in patch_names:
        assert pn in ped.get("notes", ""), f"{name}: patch {pn} not in pedigree notes"


def dpkg_installed_count(root: Path) -> int:
    """Installed packages per the real ``dpkg-query`` on ``<root>/var/lib/dpkg`` (Status-Abbrev ``ii``)."""
    out = subprocess.run(
        ["dpkg-query", "-W", f"--admindir={Path(root) / 'var/lib/dpkg'}", "-f", "${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.startswith("ii"))
