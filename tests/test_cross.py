"""Cross-compiled libraries: the rendered scripts (fast), and real arm64 builds on this machine (buildah, slow).

The real build installs BUILD_DEPS + cross_build_deps("arm64") into the library test base
(lib_images.py's ``deps``: the same store and layers, so a full run builds them once) and
cross-compiles one library of each build kind: wolfSentry (make; its ``make install`` runs its
unit tests under qemu-user), wolfSSL (autotools, against that wolfSentry), llhttp (custom
script) and cJSON (CMake toolchain file). A program cross-linked against three of them then
runs under qemu through binfmt_misc, in the build and again from this test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import require_tool, run_lock, shared_store
from lib_images import consumer_program
from packageurl import PackageURL
from test_libraries import _Ctx

from imagefactory.arches import get_arch, host_arch
from imagefactory.libraries import BuildLibrary, cmake_toolchain, cross_build_deps
from imagefactory.toolchain import DEBUG, RELEASE
from imagefactory.walk import step_key
from recipes.libs import ALL, CJSON, LLHTTP, WOLFSENTRY

ARM64 = get_arch("arm64")


def _script(ctx: _Ctx, step: BuildLibrary) -> str:
    return ctx.render(step).calls[0].argv[-1]


def _manifest_entry(script: str) -> dict:
    """The manifest fragment the script writes (its JSON head, closed without the file list)."""
    head = script.split("printf \"%s\" '", 1)[1].split(', "files": [', 1)[0]
    return json.loads(head + "}")


# --- rendering: no buildah ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx():
    with tempfile.TemporaryDirectory() as tmp:
        yield _Ctx(Path(tmp))


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.name)
def test_native_scripts_carry_nothing_of_cross_builds(ctx, spec):
    """What a native build renders is what it rendered before cross builds existed."""
    native = BuildLibrary(spec, RELEASE)
    assert native.cross is None and native.target is None
    script = _script(ctx, native)
    for marker in ("QEMU_LD_PREFIX", "aarch64", "--host=", "toolchain.cmake", "export CC=", "PKG_CONFIG_LIBDIR"):
        assert marker not in script
    assert "ldconfig && rm -f /var/cache/ldconfig/aux-cache" in script
    assert 'then strip --strip-unneeded "$f"' in script
    assert "arch" not in _manifest_entry(script)
    assert _manifest_entry(script)["flags"] == RELEASE.flags()
    # naming the build machine's own architecture is a native build too
    assert _script(ctx, BuildLibrary(spec, RELEASE, cross=host_arch().name)) == script


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.name)
def test_cross_scripts_use_the_target_toolchain(ctx, spec):
    if host_arch().name == "arm64":  # the suite runs on amd64 machines: say so, never pass silently
        pytest.fail("this test cross-compiles for arm64 from amd64; on an arm64 machine arm64 builds are native")
    step = BuildLibrary(spec, RELEASE, cross="aarch64")  # uname names work too
    assert step.cross == "arm64" and step.target == ARM64
    rendered = ctx.render(step)
    script = rendered.calls[0].argv[-1]
    assert "cross-compiled for arm64" in rendered.summary
    assert "export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar" in script
    assert "export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu" in script
    assert "export PKG_CONFIG_LIBDIR=/usr/local/lib/pkgconfig:/usr/lib/aarch64-linux-gnu/pkgconfig:" in script
    assert 'then aarch64-linux-gnu-strip --strip-unneeded "$f"' in script
    assert "ldconfig &&" not in script
    entry = _manifest_entry(script)
    assert entry["arch"] == "arm64"
    assert entry["flags"] == RELEASE.for_arch("arm64").flags()
    assert "-mbranch-protection=standard" in entry["flags"]["CFLAGS"] and "-fcf-protection" not in script
    if spec.kind == "autotools":
        assert './configure --build="$(gcc -dumpmachine)" --host=aarch64-linux-gnu --prefix=/usr/local' in script
    if spec.kind == "cmake":
        assert cmake_toolchain(ARM64) in script
        assert 'cmake -S . -B "$W/build" "-DCMAKE_TOOLCHAIN_FILE=$W/toolchain.cmake" -DCMAKE_INSTALL_PREFIX' in script
    if spec.kind == "custom":
        assert '"${CC:-cc}" $CFLAGS' in script and '"${AR:-ar}" rcs' in script
    # the target is key material: an arm64 layer never answers for an amd64 one
    native = ctx.render(BuildLibrary(spec, RELEASE))
    assert step_key("parent", rendered) != step_key("parent", native)


def test_cmake_toolchain_file():
    text = cmake_toolchain(ARM64)
    for line in ("set(CMAKE_SYSTEM_NAME Linux)", "set(CMAKE_SYSTEM_PROCESSOR aarch64)",
                 "set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)", "set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)",
                 "set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/local)",
                 "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)"):
        assert line in text.splitlines()


def test_cross_build_deps_are_debian_package_names():
    assert cross_build_deps("arm64") == ("gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu",
                                         "binutils-aarch64-linux-gnu", "libc6-dev-arm64-cross")
    # Debian writes the x86-64 triple with a hyphen in package names (building amd64 on arm64)
    assert cross_build_deps("amd64", build=ARM64)[0] == "gcc-x86-64-linux-gnu"
    assert cross_build_deps("amd64", build=ARM64)[-1] == "libc6-dev-amd64-cross"
    assert cross_build_deps("arm64", build=ARM64) == () == cross_build_deps(host_arch().name)  # native: nothing
    with pytest.raises(ValueError, match="unknown architecture 'sparc'"):
        cross_build_deps("sparc")
    with pytest.raises(ValueError, match="unknown architecture 'mips'"):
        BuildLibrary(CJSON, RELEASE, cross="mips")


def test_profile_for_arch_swaps_only_the_control_flow_flags():
    for profile in (DEBUG, RELEASE):
        arm = profile.for_arch("arm64")
        x86 = profile.for_arch("amd64")
        for flags in (arm.cflags, arm.cxxflags):
            assert "-mbranch-protection=standard" in flags and "-fcf-protection=full" not in flags
        for flags in (x86.cflags, x86.cxxflags):
            assert "-fcf-protection=full" in flags and "-mbranch-protection=standard" not in flags
        # same flags otherwise, same place, same name
        assert [f for f in arm.cflags if f != "-mbranch-protection=standard"] == \
               [f for f in x86.cflags if f != "-fcf-protection=full"]
        assert arm.cflags.index("-mbranch-protection=standard") == x86.cflags.index("-fcf-protection=full")
        assert arm.ldflags == x86.ldflags and arm.name == profile.name
        assert arm.for_arch("x86_64") == x86 and x86.for_arch("aarch64") == arm
    assert RELEASE.for_arch(host_arch().name) is RELEASE
    bare = RELEASE.with_(drop=["-fcf-protection=full", "-mbranch-protection=standard"])
    assert bare.for_arch("arm64") == bare  # a profile without the flags does not grow them


# --- real cross builds (buildah, slow) ----------------------------------------------------------
CROSS_CHECK = r"""
d=$(mktemp -d); cd "$d"
cat > t.c <<'EOF'
""" + consumer_program(r'''printf("arm64 ok: cjson %s, llhttp %d.%d.%d\n", cJSON_Version(), LLHTTP_VERSION_MAJOR,
         LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);''') + r"""EOF
aarch64-linux-gnu-gcc $CFLAGS $(pkg-config --cflags libcjson llhttp) t.c -o cross-check $EXE_LDFLAGS $LDFLAGS \
  $(pkg-config --libs libcjson llhttp)
aarch64-linux-gnu-strip --strip-unneeded cross-check
mkdir -p /opt/cross && install -m 0755 cross-check /opt/cross/check
LD_LIBRARY_PATH=/usr/local/lib /opt/cross/check
cd / && rm -rf "$d"
"""


def _elf_machines(root: Path, under: str) -> dict[str, str]:
    from elftools.elf.elffile import ELFFile

    out = {}
    for path in sorted((root / under).rglob("*")):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            with path.open("rb") as fh:
                out[str(path.relative_to(root))] = ELFFile(fh)["e_machine"]
    return out


def build_arm64_libs(store):
    """An amd64 build stage holding arm64 builds of wolfSentry (make), llhttp (custom) and cJSON (cmake).

    The autotools kind (wolfSSL, wolfCLU) is cross-built by the e2e multi-arch test
    (test_e2e_multiarch.py), in the shared e2e store: wolfSSL alone takes minutes, once per run is enough.
    """
    from lib_images import _define_recipes

    from imagefactory.execute import Executor
    from imagefactory.plan import build_plan
    from imagefactory.steps import Install, Run

    if host_arch().name == "arm64":
        pytest.fail("the cross-build test cross-compiles for arm64 from amd64: run it on an amd64 machine")

    class CrossArm64(_define_recipes()["deps"]):
        """test: libraries cross-compiled for arm64 on the build machine"""

        name = "imagefactory-test-libs-cross-arm64"

        def steps(self):
            yield Install(*cross_build_deps("arm64"), "netbase")  # netbase: wolfSentry's tests resolve "tcp"
            yield BuildLibrary(WOLFSENTRY, DEBUG, cross="arm64")  # DEBUG: -O2 without LTO, the faster build
            yield BuildLibrary(LLHTTP, RELEASE, cross="arm64")
            yield BuildLibrary(CJSON, RELEASE, cross="arm64")
            flags = RELEASE.for_arch("arm64")
            yield Run(f"export CFLAGS='{flags.CFLAGS}' LDFLAGS='{flags.LDFLAGS}' EXE_LDFLAGS=-pie "
                      "PKG_CONFIG_LIBDIR=/usr/local/lib/pkgconfig QEMU_LD_PREFIX=/usr/aarch64-linux-gnu\n"
                      + CROSS_CHECK, title="cross-link a program against the arm64 libraries and run it under qemu")

    t0 = time.monotonic()
    report = Executor(store.settings(), store.buildah()).execute(build_plan([CrossArm64], store.settings()))
    return store, CrossArm64, report, time.monotonic() - t0


@pytest.fixture(scope="module")
def arm64_libs():
    require_tool("buildah")
    with run_lock("lib-images"):  # the same store and base layers as lib_images.py
        return build_arm64_libs(shared_store("lib-images"))


@pytest.mark.buildah
@pytest.mark.slow
def test_cross_built_libraries_are_arm64_verified_and_run_under_qemu(arm64_libs, tmp_path):
    from imagefactory.verify import verify_file, verify_tree

    store, recipe, report, seconds = arm64_libs
    timings = [f"{s.summary} {s.seconds:.0f}s" for r in report.results for s in r.steps if s.status == "run"]
    print(f"\narm64 cross build in {seconds:.0f}s: " + "; ".join(timings))
    assert report.ok
    with store.buildah().mounted_image(recipe.image_ref()) as root:
        machines = _elf_machines(root, "usr/local")
        assert set(machines.values()) == {"EM_AARCH64"}, machines
        assert _elf_machines(root, "opt/cross") == {"opt/cross/check": "EM_AARCH64"}

        manifest = json.loads((root / "usr/local/share/imagefactory/manifest.json").read_text())
        libs = {lib["name"]: lib for lib in manifest["libraries"]}
        assert set(libs) == {"wolfsentry", "llhttp", "cjson"}
        for name, lib in libs.items():
            assert [f for f in lib["files"] if f.lstrip("/") in machines], f"{name} installed no ELF file"
            profile = {"debug": DEBUG, "release": RELEASE}[lib["profile"]]
            assert lib["arch"] == "arm64", name
            assert lib["flags"] == profile.for_arch("arm64").flags(), name
            assert "-mbranch-protection=standard" in lib["flags"]["CFLAGS"]
            assert "-fcf-protection=full" not in lib["flags"]["CFLAGS"]

        # in the build stage the arm64 libraries' libc is not on a loader path (the stage is amd64) ...
        stage = verify_tree(root)
        assert {(check, detail.split(": ", 1)[0]) for _, check, detail in stage.failures} == \
            {("needed", "not found in image")}
        # ... in the arm64 image it is: copy /usr/local next to an arm64 libc, as the image gets them
        image = tmp_path / "arm64-image"
        shutil.copytree(root / "usr/local", image / "usr/local", symlinks=True)
        shutil.copytree(root / "usr/aarch64-linux-gnu/lib", image / "lib/aarch64-linux-gnu", symlinks=True)
        (image / "lib/ld-linux-aarch64.so.1").symlink_to("aarch64-linux-gnu/ld-linux-aarch64.so.1")  # as Debian has it
        result = verify_tree(image)
        assert result.ok, result.failures
        assert {f.path for f in result.files} == {f.path for f in stage.files}
        for f in result.files:
            # Debian 13's arm64 crt files are marked, so our -mbranch-protection=standard survives the link
            assert "cet" not in f.checks and f.checks["bti-pac"].status == "pass", (f.path, f.checks["bti-pac"])
            assert f.checks["relro"].status == "pass" and f.checks["nx-stack"].status == "pass"
        shutil.copy2(root / "opt/cross/check", image / "usr/local/bin-check")
        exe = verify_file(image, image / "usr/local/bin-check", "/usr/local/bin-check", "release")
        assert exe.kind == "exe" and exe.checks["pie"].status == "pass"
        assert exe.checks["needed"].status == "pass", exe.checks["needed"]

        # the SBOM of the (amd64) stage names the libraries as the arm64 builds they are
        from imagefactory import sbom

        facts = sbom.ImageFacts(name=recipe.name, tag="latest", image_id="0" * 64, architecture="amd64")
        source = {c.name: PackageURL.from_string(c.purl) for c in sbom.collect(root, facts).by_kind("source")}
        assert {name: p.qualifiers.get("arch") for name, p in source.items()} == dict.fromkeys(libs, "arm64")

        # run the arm64 program from here too: binfmt_misc's qemu-aarch64 handler, the image's libraries
        proc = subprocess.run([str(root / "opt/cross/check")], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "QEMU_LD_PREFIX": "/usr/aarch64-linux-gnu",
                                   "LD_LIBRARY_PATH": str(root / "usr/local/lib")})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("arm64 ok: cjson 1.7.19, llhttp 9.4.3"), proc.stdout


def test_a_native_build_in_a_foreign_image_compiles_with_that_architectures_flags(ctx):
    """Compiling inside an arm64 image (under qemu, no cross toolchain) must not pass x86 flags to gcc."""
    from imagefactory.platforms import get_platform
    from imagefactory.steps import RenderContext

    step = BuildLibrary(CJSON, RELEASE).prepare(ctx.prep)
    arm64 = step.render(RenderContext(ctx.settings, get_platform("debian"), ctx.prep.recipe, None, "arm64"))
    script = arm64.calls[0].argv[-1]
    assert "-mbranch-protection=standard" in script and "-fcf-protection" not in script
    assert "export CC=" not in script and "--host=" not in script  # native to that image, not cross
    native = step.render(RenderContext(ctx.settings, get_platform("debian"), ctx.prep.recipe, None, host_arch().name))
    assert native.calls[0].argv[-1] == _script(ctx, BuildLibrary(CJSON, RELEASE))
