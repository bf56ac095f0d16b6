"""imagefactory.sbom on a realistic image root: the host's real dpkg database, and the build manifest
the library steps really wrote into one of the shared library test images (lib_images.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, require_tool
from packageurl import PackageURL

from imagefactory import sbom
from imagefactory.sbom import BaseImage, ImageFacts, Inventory
from imagefactory.sources import sha256_file
from imagefactory.toolchain import RELEASE
from recipes.libs import CJSON, LLHTTP

try:
    from sbom_checks import (
        assert_sbom_has_libraries,
        assert_sbom_patches,
        assert_sbom_relationships,
        assert_sbom_valid,
        cdx_components_by_kind,
        dpkg_installed_count,
        spdx_packages_by_purl_type,
    )
except ImportError:  # tests/ made a package
    from tests.sbom_checks import (
        assert_sbom_has_libraries,
        assert_sbom_patches,
        assert_sbom_relationships,
        assert_sbom_valid,
        cdx_components_by_kind,
        dpkg_installed_count,
        spdx_packages_by_purl_type,
    )

HOST_STATUS = Path("/var/lib/dpkg/status")
HOST_DOC = Path("/usr/share/doc")

# What the manifest of the library test image ``b`` holds (cJSON release with its patch, llhttp debug
# from its alternate archive), from the pins: name -> (version, archive, sha256, license, purl, download url)
LLHTTP_ARCHIVE = LLHTTP.pin.alternates[0]
LIBRARIES = {
    CJSON.pin.library: (CJSON.pin.version, CJSON.pin.filename, CJSON.pin.sha256, CJSON.pin.license, CJSON.pin.purl,
                        CJSON.pin.url),
    LLHTTP.pin.library: (LLHTTP.pin.version, LLHTTP_ARCHIVE.filename, LLHTTP_ARCHIVE.sha256, LLHTTP.pin.license,
                         LLHTTP.pin.purl, LLHTTP.pin.url),
}
PATCHED = CJSON.pin.library  # the library built with a patch, in the release profile
PATCH_FILE = REPO / "patches" / "cjson" / CJSON.pin.version / "0001-cmake-policy-range.patch"
PATCH = {"name": PATCH_FILE.name, "sha256": sha256_file(PATCH_FILE)}
PARENTS = [("ocserv-modern", "c" * 64), ("debian-trixie-minbase", "e" * 64)]
IMAGE_ID = "b" * 64


def _manifest(lib_images) -> dict:
    """The manifest.json the BuildLibrary steps wrote into a real image, with every field they write."""
    store, recipes, _, _ = lib_images
    with store.buildah().mounted_image(recipes["b"].image_ref()) as root:
        return json.loads((root / sbom.MANIFEST_PATH).read_text())


def _lockfile() -> dict:
    return {
        "name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
        "packages": {
            "": {"name": "app", "version": "1.0.0", "dependencies": {"express": "^4.21.2"}},
            "node_modules/express": {
                "version": "4.21.2",
                "resolved": "https://example.org/express/-/express-4.21.2.tgz",
                "integrity": "sha512-28HqgMZAmih1Czt9ny7qr6ek2qddF4FclbMzwhCREB6OFfH+rXAnuNCwo1/wFvrtbgsQDb4kSbX9de9lFbrXnA==",
                "license": "MIT",
            },
            "node_modules/express/node_modules/debug": {
                "version": "2.6.9",
                "integrity": "sha1-XRKFFd8TT/Mn6QpMk/Tgd6U2NB8=",
                "license": "MIT",
            },
            "node_modules/@types/node": {"version": "22.10.2", "dev": True, "license": "MIT"},
            "node_modules/local-lib": {"resolved": "packages/local-lib", "link": True},
        },
    }


def _make_root(root: Path, manifest: dict) -> Path:
    require_tool("dpkg-query")  # ci/setup's Debian has both; missing means a broken setup: fail, never skip
    if not HOST_STATUS.is_file():
        pytest.fail(f"{HOST_STATUS} is missing: these tests read the host's real dpkg database (run on Debian)")
    (root / "var/lib/dpkg").mkdir(parents=True)
    shutil.copy(HOST_STATUS, root / "var/lib/dpkg/status")
    (root / "etc").mkdir()
    osr = Path("/etc/os-release")
    (root / "etc/os-release").write_text(osr.read_text() if osr.exists() else 'ID=debian\nVERSION_ID="13"\n')
    doc = root / "usr/share/doc"
    doc.mkdir(parents=True)
    if HOST_DOC.is_dir():
        for d in sorted(HOST_DOC.iterdir()):
            if d.is_symlink():  # e.g. libgcc-s1 -> gcc-12-base: keep the link, it must resolve inside root
                (doc / d.name).symlink_to(d.readlink())
            elif (d / "copyright").is_file():
                (doc / d.name).mkdir()
                shutil.copy(d / "copyright", doc / d.name / "copyright")
    man = root / sbom.MANIFEST_PATH
    man.parent.mkdir(parents=True)
    man.write_text(json.dumps(manifest, indent=2))
    lock = root / "opt/app-root/src/package-lock.json"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps(_lockfile(), indent=2))
    return root


def _facts() -> ImageFacts:
    return ImageFacts(
        name="ocserv-modern-ci", tag="2026.1", image_id=f"sha256:{IMAGE_ID}",
        parents=list(PARENTS),
        base=BaseImage("debian trixie minbase via debootstrap", image_id=PARENTS[-1][1]),
        platform="debian", labels={"org.opencontainers.image.title": "ocserv modern CI"},
    )


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory, lib_images) -> Path:
    return _make_root(tmp_path_factory.mktemp("sbom") / "root", _manifest(lib_images))


@pytest.fixture(scope="module")
def written(fake_root, tmp_path_factory):
    """Two independent runs with SOURCE_DATE_EPOCH set -> (paths run 1, paths run 2, inventory)."""
    out = tmp_path_factory.mktemp("sbom-out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "1767225600")
        first = sbom.write_sboms(fake_root, _facts(), out / "a", npm_lockfiles=["opt/app-root/src/package-lock.json"])
        second = sbom.write_sboms(fake_root, _facts(), out / "b")  # lockfile auto-discovered under opt/
    inv = sbom.collect(fake_root, _facts())
    return first, second, inv


def test_output_files_named_after_image(written):
    first, _, _ = written
    assert first["spdx"].name == "ocserv-modern-ci.spdx.json"
    assert first["cyclonedx"].name == "ocserv-modern-ci.cdx.json"


def test_documents_validate_with_libraries(written):
    first, _, _ = written
    doc, cdx = assert_sbom_valid(first["spdx"], first["cyclonedx"])
    assert doc.creation_info.spdx_version == "SPDX-2.3"
    assert doc.creation_info.document_namespace == (
        f"https://spdx.org/spdxdocs/imagefactory/ocserv-modern-ci-{IMAGE_ID}")
    assert doc.creation_info.created.isoformat().startswith("2026-01-01T00:00:00")
    assert cdx["metadata"]["timestamp"].startswith("2026-01-01T00:00:00")
    assert cdx["serialNumber"].startswith("urn:uuid:")


def test_deb_count_matches_dpkg_query(written, fake_root):
    first, _, inv = written
    expected = dpkg_installed_count(fake_root)
    assert expected > 50
    assert sbom.summary(inv)["deb"] == expected
    doc, cdx = assert_sbom_valid(first["spdx"], first["cyclonedx"])
    assert len(cdx_components_by_kind(cdx)["deb"]) == expected
    assert len(spdx_packages_by_purl_type(doc)["deb"]) == expected


def test_deb_purls_and_licenses(written):
    _, _, inv = written
    osr = inv.os_release
    distro = f"{osr['ID']}-{osr.get('VERSION_ID') or osr.get('VERSION_CODENAME')}"
    debs = inv.by_kind("deb")
    for c in debs:
        purl = PackageURL.from_string(c.purl)
        assert (purl.type, purl.namespace, purl.name, purl.version) == ("deb", osr["ID"], c.name, c.version)
        assert purl.qualifiers["distro"] == distro and purl.qualifiers["arch"] == c.arch
    # the copied DEP-5 copyright files give licenses for a good share of packages
    with_license = [c for c in debs if c.license]
    assert len(with_license) > len(debs) // 4
    base_files = next((c for c in debs if c.name == "dpkg"), None)
    if base_files is not None and (HOST_DOC / "dpkg/copyright").is_file():
        assert base_files.license and "GPL-2.0" in base_files.license


def test_libraries_present_with_archive_hash(written):
    first, _, inv = written
    expected = {n: (v[0], v[2]) for n, v in LIBRARIES.items()}
    assert_sbom_has_libraries(first["spdx"], first["cyclonedx"], expected)
    by_name = {c.name: c for c in inv.by_kind("source")}
    assert by_name[PATCHED].license == LIBRARIES[PATCHED][3]
    assert by_name[PATCHED].purl == LIBRARIES[PATCHED][4]


def test_library_properties_and_reference(written):
    first, _, _ = written
    cdx = json.loads(first["cyclonedx"].read_text())
    patched = next(c for c in cdx["components"] if c["name"] == PATCHED)
    props = {p["name"]: p["value"] for p in patched["properties"]}
    assert props["imagefactory:profile"] == "release"
    assert props["imagefactory:cflags"] == RELEASE.flags()["CFLAGS"]
    assert props["imagefactory:ldflags"] == RELEASE.flags()["LDFLAGS"]
    assert "-DENABLE_CJSON_UTILS=On" in props["imagefactory:options"]
    assert props["imagefactory:archive"] == LIBRARIES[PATCHED][1]
    assert {"type": "distribution", "url": LIBRARIES[PATCHED][5]} in patched["externalReferences"]
    assert patched["licenses"] == [{"license": {"id": LIBRARIES[PATCHED][3]}}]


def test_patch_recorded_as_pedigree(written):
    first, _, _ = written
    assert_sbom_patches(first["cyclonedx"], PATCHED, [PATCH["name"]])
    doc, _ = assert_sbom_valid(first["spdx"], first["cyclonedx"])
    patched = next(p for p in doc.packages if p.name == PATCHED)
    assert PATCH["name"] in patched.source_info and PATCH["sha256"] in patched.source_info


def test_npm_packages(written):
    first, second, inv = written
    npm = {c.name: c for c in inv.by_kind("npm")}
    assert set(npm) == {"express", "debug"}  # dev dep and link skipped
    assert npm["express"].purl == "pkg:npm/express@4.21.2"
    assert len(npm["express"].hashes["SHA-512"]) == 128
    assert npm["debug"].hashes["SHA-1"] == "5d128515df134ff327e90a4c93f4e077a536341f"
    for paths in (first, second):
        cdx = json.loads(paths["cyclonedx"].read_text())
        assert {c["name"] for c in cdx_components_by_kind(cdx)["npm"]} == {"express", "debug"}


def test_npm_dev_dependencies_optional(fake_root):
    inv = sbom.collect(fake_root, _facts(), include_npm_dev=True)
    dev = next(c for c in inv.by_kind("npm") if c.name == "@types/node")
    assert dev.optional and dev.purl == "pkg:npm/%40types/node@22.10.2"


def test_relationships_and_ancestry(written):
    first, _, _ = written
    assert_sbom_relationships(first["spdx"], first["cyclonedx"], [iid for _, iid in PARENTS])
    cdx = json.loads(first["cyclonedx"].read_text())
    anc = cdx["metadata"]["component"]["pedigree"]["ancestors"]
    depth = {a["name"]: {p["name"]: p["value"] for p in a["properties"]}["imagefactory:ancestor_depth"]
             for a in anc}
    assert depth == {"ocserv-modern": "1", "debian-trixie-minbase": "2"}
    base = next(a for a in anc if a["name"] == "debian-trixie-minbase")
    assert base["description"] == "debian trixie minbase via debootstrap"
    assert cdx["metadata"]["component"]["purl"] == f"pkg:oci/ocserv-modern-ci@sha256:{IMAGE_ID}?tag=2026.1"


def test_byte_identical_across_runs(written):
    first, second, _ = written
    assert first["spdx"].read_bytes() == second["spdx"].read_bytes()
    assert first["cyclonedx"].read_bytes() == second["cyclonedx"].read_bytes()


def test_summary(written):
    _, _, inv = written
    s = sbom.summary(inv)
    assert s["source"] == len(LIBRARIES) and s["npm"] == 2 and s["rpm"] == 0
    assert s["total"] == s["deb"] + s["rpm"] + s["source"] + s["npm"]


# ------------------------------------------------------------------------------------------ small units


def test_debian_license_mapping():
    refs: dict[str, str] = {}
    f = sbom.debian_license_to_spdx
    assert f("GPL-2+", refs) == "GPL-2.0-or-later"
    assert f("LGPL-2.1", refs) == "LGPL-2.1-only"
    assert f("Expat", refs) == "MIT"
    assert f("BSD-3-clause", refs) == "BSD-3-Clause"
    assert f("GPL-1+ or Artistic", refs) == "GPL-1.0-or-later OR Artistic-1.0"
    assert f("GPL-2+ with Autoconf exception", refs) == "GPL-2.0-or-later WITH Autoconf-exception-2.0"
    assert f("LGPL-3+ or GPL-2+, and MIT", refs) == "(LGPL-3.0-or-later OR GPL-2.0-or-later) AND MIT"
    assert f("public-domain", refs) == "LicenseRef-public-domain"
    assert refs == {"LicenseRef-public-domain": "public-domain"}


def test_symlinks_resolve_inside_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text('ID=debian\nVERSION_ID="13"\nVERSION_CODENAME=trixie\n')
    (root / "etc/os-release").symlink_to("/usr/lib/os-release")  # absolute: must not read the host file
    assert sbom.read_os_release(root)["VERSION_ID"] == "13"
    (root / "etc/escape").symlink_to("../../../../../../etc/hostname")
    assert sbom._resolve_in_root(root, "etc/escape") == root / "etc/hostname"


def test_minimal_root_notes_and_rpm_skip(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "var/lib/rpm").mkdir(parents=True)
    monkeypatch.setattr(sbom.shutil, "which", lambda _name: None)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    facts = ImageFacts(name="registry.example/team/tiny", tag="1", image_id="d" * 64, platform="ubi9",
                       created="2026-02-03T04:05:06Z",
                       labels={"org.opencontainers.image.licenses": "Apache-2.0 AND Custom License"})
    inv = sbom.collect(root, facts)
    assert sbom.summary(inv) == {"deb": 0, "rpm": 0, "source": 0, "npm": 0, "binary": 0, "golang": 0, "file": 0,
                                 "total": 0}
    assert any("rpm command is not available" in n for n in inv.notes)
    assert any("no build manifest" in n for n in inv.notes)
    paths = sbom.write_sboms(root, facts, tmp_path / "out")
    assert paths["spdx"].name == "tiny.spdx.json"
    doc, cdx = assert_sbom_valid(paths["spdx"], paths["cyclonedx"])
    assert doc.creation_info.created.isoformat().startswith("2026-02-03T04:05:06")
    assert cdx["metadata"]["component"]["purl"] == (
        f"pkg:oci/tiny@sha256:{'d' * 64}?repository_url=registry.example/team/tiny&tag=1")
    assert cdx["metadata"]["component"]["licenses"] == [
        {"license": {"name": "Apache-2.0 AND Custom License"}}]
    assert str(doc.packages[0].license_declared) == "LicenseRef-Apache-2.0-AND-Custom-License"


def test_bad_manifest_raises(tmp_path):
    man = tmp_path / sbom.MANIFEST_PATH
    man.parent.mkdir(parents=True)
    man.write_text(json.dumps({"schema": 1, "libraries": [
        {"name": "x", "version": "1", "archive": {"sha256": "not-a-hash"}}]}))
    with pytest.raises(sbom.ManifestError, match="sha256"):
        sbom.collect(tmp_path, ImageFacts(name="x", tag="1", image_id="d" * 64))
    man.write_text(json.dumps({"schema": 2}))
    with pytest.raises(sbom.ManifestError, match="schema"):
        sbom.collect(tmp_path, ImageFacts(name="x", tag="1", image_id="d" * 64))


def test_invalid_document_is_refused(tmp_path):
    facts = ImageFacts(name="x", tag="1", image_id="d" * 64)
    bad = sbom.Component(kind="source", name="x", version="1", purl="pkg:generic/x@1",
                         license="LicenseRef-not-declared")
    inv = Inventory(facts=facts, os_release={}, components=[bad])
    with pytest.raises(sbom.SbomValidationError, match="LicenseRef-not-declared"):
        sbom.write_spdx(inv, tmp_path / "x.spdx.json")
    assert not (tmp_path / "x.spdx.json").exists()
