"""The collectors for what package databases miss: installed npm packages, build-stage lockfiles,
pinned binaries, Go build info, unidentified executables. Fast: small roots made on disk, a real ELF
from the host gcc; the real images are covered in test_e2e_supply.py."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imagefactory import sbom
from imagefactory.pins import BinaryPin
from imagefactory.sbom import ImageFacts
from imagefactory.sbom.binaries import go_build_info
from sbom_checks import assert_sbom_valid, cdx_components_by_kind

SHA = "ab" * 32


def _pkg(folder: Path, name: str, version: str, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": version, **extra}))


def _facts() -> ImageFacts:
    return ImageFacts(name="collectors-test", tag="1", image_id="c" * 64, created="2026-01-01T00:00:00Z")


def _executable(path: Path, text: str = "#!/bin/sh\necho hi\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _go_blob(version: str, mod: str) -> bytes:
    """A ``.go.buildinfo`` section in the Go >= 1.18 layout (see Go's debug/buildinfo)."""
    def uvarint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    start = b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6"
    end = b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2"
    modb = start + mod.encode() + end
    header = b"\xff Go buildinf:" + bytes([8, 2]) + b"\0" * 16
    return header + uvarint(len(version)) + version.encode() + uvarint(len(modb)) + modb


GO_MOD = ("path\texample.org/tool/cmd/tool\n"
          "mod\texample.org/tool\t(devel)\t\n"
          "dep\tgithub.com/a/b\tv1.2.3\th1:abc=\n"
          "dep\tgolang.org/x/sys\tv0.1.0\th1:def=\n"
          "=>\tgolang.org/x/sys\tv0.2.0\th1:ghi=\n"
          "build\t-ldflags=\"-s -X example.org/tool/version.Version=v9.8.7\"\n")


@pytest.fixture(scope="module")
def go_elf(tmp_path_factory) -> Path:
    """A real ELF (host gcc) carrying a Go-layout .go.buildinfo section added with objcopy."""
    if not (shutil.which("gcc") and shutil.which("objcopy")):
        pytest.fail("gcc and objcopy are needed (binutils, gcc): run ci/setup")
    work = tmp_path_factory.mktemp("go")
    (work / "m.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-o", str(work / "plain"), str(work / "m.c")], check=True)
    (work / "blob").write_bytes(_go_blob("go1.22.10", GO_MOD))
    subprocess.run(["objcopy", "--add-section", f".go.buildinfo={work / 'blob'}", str(work / "plain"),
                    str(work / "tool")], check=True)
    return work / "tool"


def test_go_build_info_parses_modules_replacements_and_settings(go_elf):
    info = go_build_info(go_elf)
    assert info.go_version == "go1.22.10" and info.path == "example.org/tool/cmd/tool"
    assert info.main == ("example.org/tool", "(devel)", "")
    assert info.deps == [("github.com/a/b", "v1.2.3", "h1:abc="), ("golang.org/x/sys", "v0.2.0", "h1:ghi=")]
    assert info.settings["-ldflags"].endswith('Version=v9.8.7"')
    assert go_build_info(go_elf.with_name("plain")) is None  # an ELF without build info


def test_installed_npm_stage_lockfile_pins_go_and_unidentified(go_elf, tmp_path):
    root = tmp_path / "root"
    app = root / "srv" / "deep" / "app"  # no fixed app path: found by walking
    nm = app / "node_modules"
    _pkg(nm / "left-pad", "left-pad", "1.3.0", license="WTFPL")
    _pkg(nm / "@scope" / "util", "@scope/util", "2.0.0", licenses=[{"type": "MIT"}])
    _pkg(nm / "left-pad" / "node_modules" / "inner", "inner", "0.1.0", license="ISC")
    _executable(nm / ".bin" / "left-pad")
    (nm / ".package-lock.json").write_text(json.dumps({"lockfileVersion": 3, "packages": {
        "node_modules/left-pad": {"version": "1.3.0", "integrity": "sha512-" + base64.b64encode(b"x" * 64).decode(),
                                  "resolved": "https://registry.example/left-pad-1.3.0.tgz"}}}))
    # a pinned binary (its record, as BinaryPin.record writes it) that is a Go program
    pin = BinaryPin(name="tool", version="1.0", purl="pkg:pypi/tool@1.0", license="MIT", artifact="tool-1.0.whl",
                    sha256=SHA, installed=("/usr/local/bin/tool",))
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copy(go_elf, root / "usr/local/bin/tool")
    rec = root / "usr/local/share/imagefactory/binaries.d/tool.json"
    rec.parent.mkdir(parents=True)
    rec.write_text(pin.to_json())
    # an unpinned Go binary, an unknown script, a non-executable file, a symlink
    (root / "opt").mkdir()
    shutil.copy(go_elf, root / "opt" / "gobin")
    script = _executable(root / "opt" / "tools" / "run.sh")
    (root / "opt" / "tools" / "README").write_text("not executable\n")
    (root / "usr/local/bin/alias").symlink_to("tool")
    # a build stage whose lockfile says what went into the copied dist/
    stage = tmp_path / "stage"
    (stage / "src" / "app").mkdir(parents=True)
    (stage / "src" / "app" / "package-lock.json").write_text(json.dumps({"lockfileVersion": 3, "packages": {
        "": {"name": "app"}, "node_modules/webpack": {"version": "5.99.0", "dev": True, "license": "MIT",
                                                      "integrity": "sha512-" + base64.b64encode(b"w" * 64).decode()}}}))

    inv = sbom.collect(root, _facts(), stages={"app-builder": stage})
    by = {(c.kind, c.name): c for c in inv.components}
    assert by[("npm", "left-pad")].license == "WTFPL" and by[("npm", "left-pad")].hashes["SHA-512"] == ("78" * 64)
    assert by[("npm", "left-pad")].download_url == "https://registry.example/left-pad-1.3.0.tgz"
    assert by[("npm", "@scope/util")].purl == "pkg:npm/%40scope/util@2.0.0" and by[("npm", "@scope/util")].license == "MIT"
    assert by[("npm", "inner")].version == "0.1.0"
    webpack = by[("npm", "webpack")]
    assert webpack.optional and ("imagefactory:npm:stage", "app-builder") in webpack.properties
    assert ("imagefactory:npm:lockfile", "app-builder:/src/app/package-lock.json") in webpack.properties
    tool = by[("binary", "tool")]
    assert tool.purl == "pkg:pypi/tool@1.0" and tool.hashes == {"SHA-256": SHA} and tool.license == "MIT"
    installed_sha = hashlib.sha256((root / "usr/local/bin/tool").read_bytes()).hexdigest()
    assert ("imagefactory:binary:installed", f"/usr/local/bin/tool sha256:{installed_sha}") in tool.properties
    main = by[("golang", "example.org/tool")]
    assert main.version == "v9.8.7" and main.purl == "pkg:golang/example.org/tool@v9.8.7"  # from -ldflags -X
    assert by[("golang", "golang.org/x/sys")].version == "v0.2.0"  # the replacement wins
    files = {c.name: c for c in inv.by_kind("file")}
    assert set(files) == {"/opt/tools/run.sh"}, "node_modules/.bin, pinned, Go, symlinks and non-executables are claimed"
    assert files["/opt/tools/run.sh"].hashes["SHA-256"] == hashlib.sha256(script.read_bytes()).hexdigest()
    assert any("/opt/gobin" in dict(c.properties).get("imagefactory:go:binary", "") for c in inv.by_kind("golang"))
    # both documents still validate with the new kinds (no purl for files, no version)
    paths = sbom.write_sboms(root, _facts(), tmp_path / "out", stages={"app-builder": stage})
    _, cdx = assert_sbom_valid(paths["spdx"], paths["cyclonedx"])
    kinds = cdx_components_by_kind(cdx)
    assert [c["type"] for c in kinds["file"]] == ["file"] and kinds["binary"][0]["type"] == "application"


def test_dpkg_owned_executables_are_claimed(tmp_path):
    root = tmp_path / "root"
    _executable(root / "opt" / "vendor" / "bin" / "owned")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "vendor.list").write_text("/opt\n/opt/vendor\n/opt/vendor/bin/owned\n")
    assert sbom.collect(root, _facts()).by_kind("file") == []


def test_binary_pin_refuses_a_missing_digest_and_renders_its_record():
    with pytest.raises(ValueError, match="sha256"):
        BinaryPin(name="x", version="1", purl="pkg:pypi/x@1", license="MIT", artifact="x.whl", sha256="abc",
                  installed=("/usr/local/bin/x",))
    pin = BinaryPin(name="x", version="1", purl="pkg:pypi/x@1", license="MIT", artifact="x.whl", sha256=SHA,
                    installed=("/usr/local/bin/x",))
    assert json.loads(pin.to_json())["installed"] == ["/usr/local/bin/x"]
    step = pin.record()
    assert "binaries.d/x.json" in step.script and pin.to_json() in step.script
    assert f"echo '{SHA}  '/w/x.whl | sha256sum -c -" in pin.check("/w")


@pytest.mark.parametrize("text, expected", [
    ("see /usr/share/common-licenses/GPL-2'.\nor (at your option) any later version.", "GPL-2.0-or-later"),
    ("see `/usr/share/common-licenses/LGPL-2.1' and /usr/share/common-licenses/Apache-2.0.",
     "Apache-2.0 AND LGPL-2.1-only"),
    ("The overall license is the GNU Lesser General Public\nLicense, version 2.1 (or, at your option, any later "
     "version)", "LGPL-2.1-or-later"),
    ("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2\n... Permission is hereby granted, free of charge, to any "
     "person obtaining a copy", "PSF-2.0"),
    ("Permission is hereby granted, free of charge, to any person obtaining a copy of\nthis software", "MIT"),
    ("All rights reserved. Ask the author.", None),
])
def test_free_form_debian_copyright_files(text, expected):
    from imagefactory.sbom.packages import _common_licenses_named

    assert _common_licenses_named(text, {}) == expected


def test_a_deb_without_copyright_file_takes_its_source_packages_licence(tmp_path):
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: gcc-14-base\nStatus: install ok installed\nVersion: 14.2.0-19\nArchitecture: amd64\n"
        "Source: gcc-14\n\n"
        "Package: libstdc++6\nStatus: install ok installed\nVersion: 14.2.0-19\nArchitecture: amd64\n"
        "Source: gcc-14\n")
    doc = root / "usr/share/doc/gcc-14-base"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("GCC is under /usr/share/common-licenses/GPL-3, any later version.\n")
    comps = {c.name: c for c in sbom.collect(root, _facts()).by_kind("deb")}
    assert comps["libstdc++6"].license == comps["gcc-14-base"].license == "GPL-3.0-or-later"
    assert ("imagefactory:deb:license-from", "gcc-14-base (same source package)") in comps["libstdc++6"].properties
