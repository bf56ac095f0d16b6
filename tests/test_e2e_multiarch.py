"""End to end on two architectures: ``ci`` for amd64 and arm64 as one manifest list.

The amd64 instance is the shared e2e store's ``ci`` (built once per run); this module adds the
arm64 one: its base bootstrapped for arm64 (maintainer scripts under qemu), its packages installed
under emulation, its libraries cross-compiled in stages on this machine, then quick-validate run
in the arm64 image under emulation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import require_tool
from imagefactory.arches import get_arch, host_arch
from recipes.libs import ALL
from test_e2e_ocserv import buildah

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.buildah, pytest.mark.multiarch,
              pytest.mark.xdist_group("e2e")]

HOST = host_arch()
FOREIGN = get_arch("arm64" if HOST.name == "amd64" else "amd64")
CI = "ocserv-modern-ci"


@pytest.fixture(scope="module")
def both(e2e_store, tmp_path_factory):
    """``ci`` for both architectures, with its manifest list; the build's report."""
    require_tool(f"qemu-{FOREIGN.machine}-static")
    out = tmp_path_factory.mktemp("multiarch")
    t0 = time.monotonic()
    e2e_store.cli("build", "ci", "--arch", f"{HOST.name},{FOREIGN.name}", "--jobs", "2", "--report",
                  str(out / "build.json"), timeout=3 * 3600)
    report = json.loads((out / "build.json").read_text())
    report = report.get("data", report)
    print(f"ci for {HOST.name}+{FOREIGN.name}: {time.monotonic() - t0:.0f}s wall")
    return {"report": report, "dir": out}


def _mounted(store, ref: str) -> tuple[str, Path]:
    ctr = buildah(store, "from", "--pull=never", "--quiet", ref).stdout.strip()
    return ctr, Path(buildah(store, "mount", ctr).stdout.strip())


def test_the_manifest_list_names_one_instance_per_architecture(e2e_store, both):
    made = {m["target"]: m for m in both["report"]["manifest_lists"]}["ci"]
    assert [i["arch"] for i in made["instances"]] == [HOST.name, FOREIGN.name]
    listed = json.loads(buildah(e2e_store, "manifest", "inspect", made["list"]).stdout)
    assert sorted(m["platform"]["architecture"] for m in listed["manifests"]) == sorted([HOST.name, FOREIGN.name])
    info = json.loads(buildah(e2e_store, "inspect", f"localhost/{CI}:latest-{FOREIGN.name}").stdout)
    assert info["OCIv1"]["architecture"] == FOREIGN.name


def test_foreign_libraries_are_cross_compiled_and_recorded(e2e_store, both):
    """Every library's files are the foreign architecture's; the manifest says so and how they were built."""
    ctr, root = _mounted(e2e_store, f"localhost/{CI}:latest-{FOREIGN.name}")
    try:
        manifest = json.loads((root / "usr/local/share/imagefactory/manifest.json").read_text())
        libs = {lib["name"]: lib for lib in manifest["libraries"]}
        assert set(libs) == {lib.name for lib in ALL}
        machines = set()
        for lib in libs.values():
            assert lib.get("arch") == FOREIGN.name, lib["name"]
            for f in lib["files"]:
                path = root / f.lstrip("/")
                if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
                    with open(path, "rb") as fh:
                        machines.add(ELFFile(fh)["e_machine"])
        assert machines == {FOREIGN.elf_machine}
    finally:
        buildah(e2e_store, "rm", ctr, check=False)


def test_quick_validate_passes_under_emulation(e2e_store, both):
    ctr = buildah(e2e_store, "from", "--pull=never", "--quiet", f"localhost/{CI}:latest-{FOREIGN.name}").stdout.strip()
    try:
        t0 = time.monotonic()
        proc = buildah(e2e_store, "run", "--isolation", "chroot", "--user", "1000", ctr, "--", "quick-validate",
                       check=False, timeout=1800)
        print(f"quick-validate under emulation: {time.monotonic() - t0:.0f}s")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert proc.stdout.rstrip().endswith("quick-validate: PASS")
        assert "wolfSSL TLS 1.3 context" in proc.stdout and "FAIL " not in proc.stdout
        arch = buildah(e2e_store, "run", "--isolation", "chroot", ctr, "--", "uname", "-m").stdout.strip()
        assert arch == FOREIGN.machine
    finally:
        buildah(e2e_store, "rm", ctr, check=False)


def test_verify_checks_each_instance_by_its_architecture(e2e_store, both, tmp_path):
    proc = e2e_store.cli("verify", "ci", "--arch", f"{HOST.name},{FOREIGN.name}", "--report",
                         str(tmp_path / "v.json"), check=False)
    data = json.loads((tmp_path / "v.json").read_text())
    data = data.get("data", data)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [i["image"] for i in data["images"]] == [f"localhost/{CI}:latest", f"localhost/{CI}:latest-{FOREIGN.name}"]


def test_sbom_of_the_foreign_instance_names_its_architecture(e2e_store, both, tmp_path):
    e2e_store.cli("sbom", "ci", "--arch", FOREIGN.name, "--out", str(tmp_path))
    cdx = json.loads((tmp_path / FOREIGN.name / f"{CI}.cdx.json").read_text())
    purls = [c.get("purl", "") for c in cdx["components"]]
    debs = [p for p in purls if p.startswith("pkg:deb/")]
    assert debs and all(f"arch={FOREIGN.name}" in p or "arch=all" in p for p in debs), debs[:5]
    libs = [p for p in purls if p.startswith("pkg:github/")]
    assert libs and all(f"arch={FOREIGN.name}" in p for p in libs), libs
