"""SBOMs per architecture: every instance of a manifest list names its own binaries (purl ``arch``).

Debian packages carry dpkg's Architecture (``arm64``, or ``all``); source-built libraries the
manifest entry's ``arch`` (a cross build's target) or else the image config's; the image purl
(``pkg:oci``) the image's. Both documents go through the reference validators.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packageurl import PackageURL
from sbom_checks import assert_sbom_valid

from imagefactory import sbom
from imagefactory.sbom import ImageFacts, ManifestError
from recipes.libs import CJSON, LLHTTP

STATUS = """Package: libc6
Status: install ok installed
Architecture: {arch}
Version: 2.41-12
Source: glibc
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-4

"""


def _entry(spec, **extra) -> dict:
    pin = spec.pin
    return {"name": pin.library, "version": pin.version, "license": pin.license, "purl": pin.purl,
            "upstream_url": pin.url, "archive": {"name": pin.filename, "sha256": pin.sha256 or "0" * 64,
                                                 "url": pin.url},
            "patches": [], "profile": "release", "flags": {"CFLAGS": "-O3"}, "options": [], "build": spec.kind,
            "files": [], **extra}


def _root(tmp: Path, dpkg_arch: str, entries: list[dict]) -> Path:
    root = tmp / f"root-{dpkg_arch}"
    for d in ("etc", "var/lib/dpkg", "usr/local/share/imagefactory"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="13"\n')
    (root / "var/lib/dpkg/status").write_text(STATUS.format(arch=dpkg_arch))
    (root / "usr/local/share/imagefactory/manifest.json").write_text(json.dumps({"schema": 1, "libraries": entries}))
    return root


def _facts(arch: str | None) -> ImageFacts:
    return ImageFacts(name="registry.example/ocserv-modern-ci", tag="2026.1", image_id="a" * 64,
                      created="2026-01-01T00:00:00Z", architecture=arch)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_each_instance_qualifies_its_purls_with_its_architecture(tmp_path, arch):
    root = _root(tmp_path, arch, [_entry(CJSON), _entry(LLHTTP)])
    paths = sbom.write_sboms(root, _facts(arch), tmp_path / f"out-{arch}")
    doc, cdx = assert_sbom_valid(paths["spdx"], paths["cyclonedx"])  # spdx-tools and the CycloneDX schema
    purls = {c["name"]: PackageURL.from_string(c["purl"]) for c in cdx["components"]}
    assert purls["libc6"].qualifiers["arch"] == arch and purls["tzdata"].qualifiers["arch"] == "all"
    for name, spec in (("cjson", CJSON), ("llhttp", LLHTTP)):
        pin = PackageURL.from_string(spec.pin.purl)
        assert purls[name].qualifiers == {"arch": arch}
        assert (purls[name].type, purls[name].name, purls[name].version) == (pin.type, pin.name, pin.version)
    image = PackageURL.from_string(cdx["metadata"]["component"]["purl"])
    assert image.type == "oci" and image.qualifiers["arch"] == arch and image.version == f"sha256:{'a' * 64}"
    spdx_purls = {r.locator for p in doc.packages for r in p.external_references if r.reference_type == "purl"}
    assert {c["purl"] for c in cdx["components"]} <= spdx_purls


def test_a_cross_built_entry_keeps_its_target_and_unknown_stays_unqualified(tmp_path):
    # a build stage on amd64 holding arm64 libraries: the entry's arch wins over the image's
    root = _root(tmp_path, "amd64", [_entry(CJSON, arch="arm64"), _entry(LLHTTP)])
    inv = sbom.collect(root, _facts("amd64"))
    by_name = {c.name: c for c in inv.by_kind("source")}
    assert PackageURL.from_string(by_name["cjson"].purl).qualifiers == {"arch": "arm64"}
    assert by_name["cjson"].arch == "arm64"
    assert PackageURL.from_string(by_name["llhttp"].purl).qualifiers == {"arch": "amd64"}
    # without an architecture anywhere (an SBOM of a bare folder) the pin's purl is used as is
    bare = sbom.collect(root, _facts(None))
    assert {c.name: c.purl for c in bare.by_kind("source")}["llhttp"] == \
        PackageURL.from_string(LLHTTP.pin.purl).to_string()
    assert "arch" not in PackageURL.from_string(sbom.model._image_purl(_facts(None))).qualifiers


def test_a_bad_arch_in_the_manifest_is_named(tmp_path):
    root = _root(tmp_path, "arm64", [_entry(CJSON, arch="arm64?x=1")])
    with pytest.raises(ManifestError, match=r"libraries\[0\]: arch must be an architecture name"):
        sbom.collect(root, _facts("arm64"))
