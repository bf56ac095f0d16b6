"""Independent library stages against real buildah, with a family that builds in seconds.

Four tiny libraries (``ta``; ``tb`` needs ``ta``; ``tc``; ``td`` needs ``tb`` and ``tc``) go through the ocserv recipes' own
:func:`~recipes.ocserv.library_stages` and :func:`~recipes.ocserv.assemble_libraries` and the real
:class:`~imagefactory.libraries.BuildLibrary` script, on a busybox base with every applet plus the
host's ldconfig (static on Debian): the whole library machinery, minus a compiler. Changing one
library's flags or patches must rebuild that library's stage, the stages that need it and the
assembly's copies from that library on, and nothing else.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from conftest import TINY_BASE
from imagefactory.execute import Executor
from imagefactory.libraries import MANIFEST, MANIFEST_DIR, LibrarySpec
from imagefactory.plan import build_plan
from imagefactory.recipe import Recipe
from imagefactory.sources import SourcePin, sha256_file
from imagefactory.steps import Copy, Run
from imagefactory.toolchain import DEBUG
from recipes.ocserv import assemble_libraries, library_stages

# A custom build writes what the step saw: its CFLAGS, a patched file when there is one, and (for a
# library that needs another) the other library's file, which proves the need is in /usr/local.
SCRIPT = r"""
mkdir -p "$STAGE$PREFIX/share/{name}" "$STAGE$PREFIX/lib"
printf '%s\n' "$CFLAGS" > "$STAGE$PREFIX/share/{name}/cflags"
echo "{name} $VERSION" > "$STAGE$PREFIX/lib/lib{name}.so.1"
if [ -f PATCHED ]; then cp PATCHED "$STAGE$PREFIX/share/{name}/patched"; fi
for need in {needs}; do cp "$PREFIX/share/$need/cflags" "$STAGE$PREFIX/share/{name}/built-on-$need"; done
"""
PATCH = """\
--- /dev/null
+++ b/PATCHED
@@ -0,0 +1 @@
+patched
"""


# What BuildLibrary's script needs beyond busybox: find -delete, patch --forward --batch, ldconfig,
# and a /bin/sh that looks commands up on PATH (Debian's static busybox sh runs its own applets first).
# Tool → where it goes in the image (None: the host's path).
HOST_TOOLS = {"find": None, "patch": None, "ldconfig": None, "dash": "/bin/sh"}


def _host_tools(folder: Path, tools: dict[str, str | None]) -> Path:
    """The host's binaries of ``tools`` and the shared libraries they load, under ``folder`` (a tree
    to copy to /): real GNU tools in a busybox image, without a package manager."""
    import subprocess

    files: dict[Path, str] = {}
    for tool, target in tools.items():
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if found is None:
            pytest.fail(f"{tool} is not installed on this machine: run ci/setup")
        binary = Path(found).resolve()
        files[binary] = target or str(binary)
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        files.update({Path(w): w for line in ldd.splitlines() for w in line.split() if w.startswith("/")})
    for path, target in files.items():
        dest = folder / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), dest)  # the file itself where a library's name is a symlink
    return folder


def _tiny_libraries(tmp: Path) -> tuple[tuple[LibrarySpec, ...], Path, Path]:
    mirror, patches = tmp / "mirror", tmp / "patches"
    mirror.mkdir()
    patches.mkdir()
    specs = []
    for name, needs in (("ta", ()), ("tb", ("ta",)), ("tc", ()), ("td", ("tb", "tc"))):
        archive = mirror / f"{name}-1.0.tar"  # plain tar: busybox tar -xf does not detect gzip
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(f"{name}-1.0/README")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"tiny"))
        pin = SourcePin(library=name, version="1.0", license="MIT", url=f"https://example.invalid/{name}-1.0.tar",
                        sha256=sha256_file(archive), filename=archive.name, tree_root=f"{name}-1.0/",
                        purl=f"pkg:generic/{name}@1.0")
        specs.append(LibrarySpec(pin=pin, kind="custom", script=SCRIPT.format(name=name, needs=" ".join(needs)),
                                 needs=needs, patch_root=patches))
    return tuple(specs), mirror, patches


@pytest.fixture
def family(tiny_store, tmp_path):
    libs, mirror, patches = _tiny_libraries(tmp_path)
    tag = uuid.uuid4().hex[:6]

    host_tools = _host_tools(tmp_path / "host-tools", HOST_TOOLS)

    class Toolchain(Recipe):
        """test: busybox with every applet, plus the host's GNU find and patch and its ldconfig"""

        name = f"imagefactory-test-libtoolchain-{tag}"
        parent = TINY_BASE
        hidden = True

        def steps(self):
            yield Run("mkdir -p /usr/local/lib /var/cache/ldconfig\n/bin/busybox --install -s /bin\n"
                      "rm /bin/sh  # the host's dash takes its place", title="every busybox applet in /bin")
            yield Copy(str(host_tools), "/")  # /usr/bin comes before /bin on buildah's default PATH

    class Assembled(Toolchain):
        """test: the libraries assembled as dev and build do"""

        name = f"imagefactory-test-libassembled-{tag}"
        hidden = False
        squash = False
        stages = library_stages(DEBUG, libs, toolchain=Toolchain, prefix=f"imagefactory-test-lib-{tag}")

        def steps(self):
            yield from assemble_libraries(libs)

    def build(**values: str) -> dict[str, dict[str, str]]:
        """Build; per image, each step's status by summary (copies by the library they copy)."""
        settings = tiny_store.settings(source_mirrors=[str(mirror)], jobs=2,
                                       values={k.replace("__", "."): v for k, v in values.items()})
        report = Executor(settings, tiny_store.buildah()).execute(build_plan([Assembled], settings))
        assert report.ok, [(r.name, r.error) for r in report.results]
        out: dict[str, dict[str, str]] = {}
        for result in report.results:
            steps = {}
            for s in result.steps:
                if s.kind == "copy-from":
                    steps["copy " + s.summary.split("/staged/")[1].split("/")[0]] = s.status
                elif s.kind in ("library", "run"):
                    steps[s.summary.split()[0] if s.kind == "library" else s.summary] = s.status
            out[result.name.removeprefix(f"imagefactory-test-lib-{tag}-").removesuffix("-debug")] = steps
        return out

    return {"build": build, "store": tiny_store, "image": Assembled, "patches": patches, "tag": tag}


def _ran(statuses: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    return {image: sorted(step for step, status in steps.items() if status == "run")
            for image, steps in statuses.items() if any(status == "run" for status in steps.values())}


@pytest.mark.buildah
@pytest.mark.slow  # four builds of six small images: 45-110 s on the shared 2-core machine
def test_one_librarys_change_rebuilds_its_stage_what_needs_it_and_the_copies_from_it_on(family):
    assembled = family["image"].name
    merge = "manifest.json from manifest.d, ldconfig: register the libraries in /usr/local/lib"
    # td builds FROM tb's stage (which holds ta and tb) and copies tc in, then runs ldconfig
    td_own = ["copy tc", "ldconfig: register the libraries this one builds against", "td"]
    cold = family["build"]()
    assert {"ta", "tb", "tc", "td", assembled} <= set(cold)
    assert cold[assembled] == {"copy ta": "run", "copy tb": "run", "copy tc": "run", "copy td": "run", merge: "run"}
    assert sorted(cold["td"]) == td_own

    # the image: each library's files once, the stage's kept trees not at all, one merged manifest
    with family["store"].buildah().mounted_image(family["image"].image_ref()) as root:
        local = root / "usr" / "local"
        assert (local / "share/tb/built-on-ta").read_text() == (local / "share/ta/cflags").read_text()
        assert (local / "share/td/built-on-tc").read_text() == (local / "share/tc/cflags").read_text()
        manifest = json.loads((root / MANIFEST.lstrip("/")).read_text())
        assert [lib["name"] for lib in manifest["libraries"]] == ["ta", "tb", "tc", "td"]
        for name, needs in (("tb", ["ta"]), ("td", ["tb", "tc"])):  # only its own files, none of its needs'
            entry = json.loads((root / MANIFEST_DIR.lstrip("/") / f"{name}.json").read_text())
            assert entry["files"] == [f"/usr/local/lib/lib{name}.so.1",
                                      *(f"/usr/local/share/{name}/built-on-{need}" for need in needs),
                                      f"/usr/local/share/{name}/cflags"]
        assert not (root / "var/lib/ocserv-modern").exists()

    # tb's flags: tb's stage and td's (it needs tb), then the copies from tb on; ta and tc stay cached
    flag = family["build"](ocserv__cflags__tb="-DIMAGEFACTORY_TEST_VARIANT=1")
    assert _ran(flag) == {"tb": ["tb"], "td": td_own, assembled: ["copy tb", "copy tc", "copy td", merge]}
    with family["store"].buildah().mounted_image(family["image"].image_ref()) as root:
        assert "IMAGEFACTORY_TEST_VARIANT" in (root / "usr/local/share/tb/cflags").read_text()

    # a patch for tc: its stage, td's (which copies tc in) and the copies from tc on
    folder = family["patches"] / "tc" / "1.0"
    folder.mkdir(parents=True)
    (folder / "0001-patched.patch").write_text(PATCH)
    patched = family["build"]()
    assert _ran(patched) == {"tc": ["tc"], "td": td_own, assembled: ["copy tc", "copy td", merge]}
    with family["store"].buildah().mounted_image(family["image"].image_ref()) as root:
        assert (root / "usr/local/share/tc/patched").read_text() == "patched\n"
        assert "IMAGEFACTORY_TEST_VARIANT" not in (root / "usr/local/share/tb/cflags").read_text()

    # ta's flags: ta and everything that needs it (tb, td); tc does not rebuild
    needed = family["build"](ocserv__cflags__ta="-DIMAGEFACTORY_TEST_VARIANT=2")
    assert _ran(needed) == {"ta": ["ta"], "tb": ["tb"], "td": td_own,
                            assembled: ["copy ta", "copy tb", "copy tc", "copy td", merge]}
    with family["store"].buildah().mounted_image(family["image"].image_ref()) as root:
        assert "VARIANT=2" in (root / "usr/local/share/tb/built-on-ta").read_text()
