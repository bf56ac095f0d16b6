"""BuildLibrary: cache keys from render (fast), and real cJSON + llhttp builds in both profiles (buildah, slow).

The real builds are the shared images of lib_images.py (``a`` = cJSON debug + llhttp release,
``b`` = cJSON release + llhttp debug). Both are verified with the ELF verifier and their build
manifests are checked against the pins and patches.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import SHARED_SOURCES
from lib_images import REVISION, git_head

from imagefactory import config
from imagefactory.libraries import (
    BUILD_DEPS,
    MANIFEST,
    PATCH_MOUNT,
    SRC_MOUNT,
    BuildLibrary,
    LibrarySpec,
    library_labels,
)
from imagefactory.prepare import FileDigests, StepInputs
from imagefactory.steps import RenderContext, StepError
from imagefactory.walk import step_key
from imagefactory.platforms import get_platform
from imagefactory.recipe import Recipe
from imagefactory.sources import sha256_file
from imagefactory.toolchain import DEBUG, RELEASE
from recipes.libs import ALL, CJSON, LLHTTP

REPO_PATCHES = Path(__file__).resolve().parents[1] / "patches"


# --- rendering: no buildah ----------------------------------------------------------------
class _Ctx:
    """Prepare (fetch, verify, check patches) then render, as the planner does for a recipe."""

    def __init__(self, tmp_path: Path):
        self.settings = config.load(env={}, overrides={"source_cache": str(tmp_path / "cache"),
                                                       "source_mirrors": [str(SHARED_SOURCES)],
                                                       "state_dir": str(tmp_path / "state")})
        self.prep = StepInputs(self.settings, Recipe, FileDigests())

    def render(self, step):
        return step.prepare(self.prep).render(RenderContext(self.settings, get_platform("debian"), self.prep.recipe))


def _ctx(tmp_path: Path) -> _Ctx:
    return _Ctx(tmp_path)


def _render(step: BuildLibrary, ctx: _Ctx):
    return ctx.render(step)


def _key(step: BuildLibrary, ctx: _Ctx) -> str:
    return step_key("parent-image-id", _render(step, ctx))


def test_patch_bytes_profile_and_archive_are_in_the_key(tmp_path):
    ctx = _ctx(tmp_path)
    patch_root = tmp_path / "patches"
    folder = patch_root / "cjson" / "1.7.19"
    folder.mkdir(parents=True)
    original = (REPO_PATCHES / "cjson" / "1.7.19" / "0001-cmake-policy-range.patch").read_bytes()
    (folder / "0001-cmake-policy-range.patch").write_bytes(original)
    spec = LibrarySpec(CJSON.pin, CJSON.kind, CJSON.options, patch_root=patch_root)
    step = BuildLibrary(spec, DEBUG)
    r = _render(step, ctx)
    before = _key(step, ctx)
    assert _key(step, ctx) == before  # stable
    # the archive comes in through a read-only bind mount of its cache folder, never a copy
    (call,) = r.calls
    mounts = {m.target: m for m in call.mounts}
    assert mounts[SRC_MOUNT].readonly and mounts[SRC_MOUNT].type == "bind"
    assert Path(mounts[SRC_MOUNT].source) == tmp_path / "cache" / CJSON.pin.sha256
    assert Path(mounts[PATCH_MOUNT].source) == folder
    assert f"archive cJSON-1.7.19.tar.gz sha256:{CJSON.pin.sha256}" in r.inputs
    assert f"patch 0001-cmake-policy-range.patch sha256:{sha256_file(folder / '0001-cmake-policy-range.patch')}" in r.inputs
    assert "patch -p1" in call.argv[-1] and "-O2 -g" in call.argv[-1]
    # one more byte in the patch: new key
    (folder / "0001-cmake-policy-range.patch").write_bytes(original + b"\n")
    changed = _key(step, ctx)
    assert changed != before
    # a second patch: new key, applied after the first (name order)
    (folder / "0002-more.patch").write_bytes(b"--- /dev/null\n+++ b/NEWFILE\n@@ -0,0 +1 @@\n+hello\n")
    script = _render(step, ctx).calls[0].argv[-1]
    assert script.index("0001-cmake-policy-range.patch") < script.index("0002-more.patch")
    assert _key(step, ctx) not in (before, changed)
    # the profile's flags are part of the key too
    (folder / "0002-more.patch").unlink()
    (folder / "0001-cmake-policy-range.patch").write_bytes(original)
    assert _key(step, ctx) == before
    assert _key(BuildLibrary(spec, RELEASE), ctx) != before
    assert _key(BuildLibrary(spec, DEBUG.with_(extra_cflags=["-DX=1"])), ctx) != before


def test_alternate_archive_is_rendered_with_its_tree_root(tmp_path):
    r = _render(BuildLibrary(LLHTTP, RELEASE), _ctx(tmp_path))
    script = r.calls[0].argv[-1]
    assert "httptools-0.9.0.tar.gz" in r.summary and "alternate" in r.summary
    assert 'cd "$W/src"/httptools-0.9.0/vendor/llhttp' in script
    assert '"alternate": true' in script and "strip --strip-unneeded" in script
    assert PATCH_MOUNT not in {m.target for m in r.calls[0].mounts}  # llhttp has no patches


def test_library_labels_and_build_deps():
    labels = library_labels(ALL)
    assert labels["io.imagefactory.lib.wolfssl"] == "5.9.2"
    assert labels["io.imagefactory.lib.llhttp"] == "9.4.3"
    assert library_labels([BuildLibrary(CJSON, DEBUG)]) == {"io.imagefactory.lib.cjson": "1.7.19"}
    assert {"gcc", "make", "cmake", "pkgconf", "patch"} <= set(BUILD_DEPS)


# --- real builds (the shared images of lib_images.py) --------------------------------------
def _timings(report) -> list[str]:
    return [f"{r.name}: {s.summary} {s.seconds:.1f}s" for r in report.results for s in r.steps
            if s.kind == "library" and s.status == "run"]


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST.lstrip("/")).read_text())


@pytest.mark.buildah
@pytest.mark.slow
@pytest.mark.parametrize("image, cjson_profile, llhttp_profile", [("a", "debug", "release"),
                                                                   ("b", "release", "debug")])
def test_built_libraries_verify_and_manifest(lib_images, image, cjson_profile, llhttp_profile):
    from imagefactory.verify import verify_tree

    store, recipes, report, seconds = lib_images
    print(f"\ntest images ready in {seconds:.0f}s ({report.containers_started} containers started); "
          + "; ".join(_timings(report)))
    assert report.ok
    with store.buildah().mounted_image(recipes[image].image_ref()) as root:
        result = verify_tree(root)
        assert result.ok, result.failures
        assert result.file("usr/local/lib/libcjson.so.1.7.19").profile == cjson_profile
        assert result.file("usr/local/lib/libcjson_utils.so.1.7.19").profile == cjson_profile
        assert result.file("usr/local/lib/libllhttp.so.9.4.3").profile == llhttp_profile
        for path in ("usr/local/lib/libcjson.so.1.7.19", "usr/local/lib/libllhttp.so.9.4.3"):
            assert result.file(path).checks["relro"].status == "pass"
        manifest = _manifest(root)
        assert manifest["schema"] == 1
        libs = {lib["name"]: lib for lib in manifest["libraries"]}
        assert set(libs) == {"cjson", "llhttp"}
        cj, ll = libs["cjson"], libs["llhttp"]
        assert (cj["version"], cj["license"], cj["purl"]) == ("1.7.19", "MIT", "pkg:github/davegamble/cjson@v1.7.19")
        assert cj["archive"] == {"name": "cJSON-1.7.19.tar.gz", "sha256": CJSON.pin.sha256, "url": CJSON.pin.url,
                                 "alternate": False, "tree_root": "cJSON-1.7.19/"}
        patch = REPO_PATCHES / "cjson" / "1.7.19" / "0001-cmake-policy-range.patch"
        assert cj["patches"] == [{"name": patch.name, "sha256": sha256_file(patch)}]
        assert ll["archive"]["name"] == "httptools-0.9.0.tar.gz" and ll["archive"]["alternate"] is True
        assert ll["archive"]["url"] is None and ll["upstream_url"] == LLHTTP.pin.url and ll["patches"] == []
        want = {"debug": DEBUG, "release": RELEASE}
        assert cj["profile"] == cjson_profile and cj["flags"] == want[cjson_profile].flags()
        assert ll["profile"] == llhttp_profile and ll["flags"] == want[llhttp_profile].flags()
        assert "-DENABLE_CJSON_UTILS=On" in cj["options"]
        for f in ("/usr/local/lib/libllhttp.so.9.4.3", "/usr/local/lib/libllhttp.so.9", "/usr/local/lib/libllhttp.a",
                  "/usr/local/lib/pkgconfig/llhttp.pc", "/usr/local/include/llhttp.h"):
            assert f in ll["files"]
        for f in ("/usr/local/lib/libcjson.a", "/usr/local/lib/libcjson_utils.a", "/usr/local/lib/pkgconfig/libcjson.pc",
                  "/usr/local/lib/pkgconfig/libcjson_utils.pc", "/usr/local/include/cjson/cJSON.h"):
            assert f in cj["files"]
        for files in (cj["files"], ll["files"]):
            assert all((root / f.lstrip("/")).exists() or (root / f.lstrip("/")).is_symlink() for f in files)
        # sources and build trees are gone; the archive never entered a layer
        assert not [p for p in (root / "tmp").iterdir()]
        leftovers = [p for p in root.rglob("*.tar.gz") if "imagefactory" in str(p) or p.name.startswith(("cJSON", "httptools"))]
        assert leftovers == []
        assert "9.4.3" in (root / "usr/local/lib/pkgconfig/llhttp.pc").read_text()


@pytest.mark.buildah
@pytest.mark.slow
def test_one_layer_per_library_and_a_cached_rebuild(lib_images):
    from imagefactory.execute import Executor
    from imagefactory.plan import build_plan

    store, recipes, report, _ = lib_images
    a = next(r for r in report.results if r.name == recipes["a"].name)
    kinds = [s.kind for s in a.steps]
    assert kinds == ["library", "library", "run", "final"]
    assert len({s.key for s in a.steps[:3]}) == 3  # each library step is its own commit
    again = Executor(store.settings(), store.buildah()).execute(build_plan([recipes["a"], recipes["b"]], store.settings()))
    for result in again.results:
        ran = [s.summary for s in result.steps if s.status in ("run", "final")]
        if git_head() == REVISION.get("at_build"):
            assert ran == [], f"{result.name} rebuilt {ran}"
        else:  # a commit landed meanwhile: only the revision-label commit may be redone
            assert all("revision labels" in r for r in ran), f"{result.name} rebuilt {ran}"


def test_missing_source_is_a_plan_error_naming_the_recipe(tmp_path):
    from imagefactory.sources import RetryPolicy, Sources
    from imagefactory.steps import StepError

    class Nowhere(Recipe):
        name = "imagefactory-test-libs-nowhere"
        hidden = True

    ctx = _ctx(tmp_path)
    ctx.prep.recipe = Nowhere
    offline = Sources(tmp_path / "empty-cache", [str(tmp_path / "no-mirror")], retry=RetryPolicy(attempts=1, timeout=1))
    bogus = LibrarySpec(CJSON.pin.__class__(**{**CJSON.pin.__dict__, "url": "http://127.0.0.1:9/none.tar.gz",
                                                 "library": "cjson-offline"}), "cmake")
    with pytest.raises(StepError, match="imagefactory-test-libs-nowhere.*cjson-offline 1.7.19: no source archive found"):
        _render(BuildLibrary(bogus, DEBUG, _sources=offline), ctx)


# --- the make kind, dependencies, the library table: no buildah ---------------------------------
def test_make_kind_expands_only_plain_variables(tmp_path):
    from recipes.libs import WOLFSENTRY

    script = _render(BuildLibrary(WOLFSENTRY, RELEASE), _ctx(tmp_path)).calls[0].argv[-1]
    assert 'make -j"$JOBS" PREFIX="$PREFIX" "BUILD_DYNAMIC=1" "EXTRA_CFLAGS=$CFLAGS -Wno-error' in script
    assert 'make PREFIX="$PREFIX" DESTDIR="$STAGE" "BUILD_DYNAMIC=1"' in script and '"INSTALL_DIR=$STAGE$PREFIX"' in script
    assert script.rstrip().count(" install\n") == 1
    assert '"kind"' not in script and '"build": "make"' in script
    assert "0001-pkg-config-and-public-options-header.patch" in script  # patches/wolfsentry/1.6.2
    for bad in ("X=$(id)", "X=`id`", "X=${HOME}"):
        with pytest.raises(StepError, match="only plain \\$NAME references"):
            LibrarySpec(WOLFSENTRY.pin, "make", (bad,))


def test_build_order_follows_needs():
    from recipes.libs import LIBRARIES, in_build_order

    names = [lib.name for lib in ALL]
    assert names.index("wolfsentry") < names.index("wolfssl") < names.index("wolfclu")
    assert sorted(names) == sorted(lib.name for lib in LIBRARIES)
    late = LibrarySpec(CJSON.pin, "cmake", needs=("llhttp",))
    assert [lib.name for lib in in_build_order((late, LLHTTP))] == ["llhttp", "cjson"]
    with pytest.raises(ValueError, match="cjson needs nosuch"):
        in_build_order((LibrarySpec(CJSON.pin, "cmake", needs=("nosuch",)),))
    loop_a = LibrarySpec(CJSON.pin, "cmake", needs=("llhttp",))
    loop_b = LibrarySpec(LLHTTP.pin, "custom", script="true", needs=("cjson",))
    with pytest.raises(ValueError, match="dependency cycle"):
        in_build_order((loop_a, loop_b))


# --- "a new library is one file": a library the test makes, end to end (buildah, slow) ------------
TINY_FILES = {
    "tiny-0.1/tiny.h": "const char *tiny_greeting(void);\nconst char *tiny_version(void);\nint tiny_add(int, int);\n",
    "tiny-0.1/tiny.c": ('#include <string.h>\n#include "tiny.h"\n'
                        'const char *tiny_greeting(void) { return "hello"; }\n'
                        'const char *tiny_version(void) { return "0.1"; }\n'
                        'int tiny_add(int a, int b) { char buf[8]; memset(buf, 0, sizeof buf); return a + b + buf[0]; }\n'),
    # a plain Makefile (kind="make"): CFLAGS from the environment, LDFLAGS from the make option
    "tiny-0.1/Makefile": (
        "PREFIX ?= /usr/local\nCFLAGS ?= -O2\n"
        "all: libtiny.so.0 libtiny.a\n"
        "tiny.o: tiny.c tiny.h\n\t$(CC) $(CFLAGS) -fPIC -c tiny.c -o tiny.o\n"
        "libtiny.so.0: tiny.o\n\t$(CC) $(CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libtiny.so.0 -o $@ tiny.o\n"
        "libtiny.a: tiny.o\n\t$(AR) rcs $@ tiny.o\n"
        "install: all\n"
        "\tinstall -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include\n"
        "\tinstall -m 0755 libtiny.so.0 $(DESTDIR)$(PREFIX)/lib/\n"
        "\tln -sf libtiny.so.0 $(DESTDIR)$(PREFIX)/lib/libtiny.so\n"
        "\tinstall -m 0644 libtiny.a $(DESTDIR)$(PREFIX)/lib/\n"
        "\tinstall -m 0644 tiny.h $(DESTDIR)$(PREFIX)/include/\n"
        "\tprintf 'prefix=$(PREFIX)\\nlibdir=$${prefix}/lib\\nincludedir=$${prefix}/include\\n\\n"
        "Name: tiny\\nDescription: test library\\nVersion: 0.1\\nLibs: -L$${libdir} -ltiny\\n"
        "Cflags: -I$${includedir}\\n' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tiny.pc\n"),
}
TINY_PATCH = """Say more than hello (shows a patch folder next to the pin).
--- a/tiny.c
+++ b/tiny.c
@@ -1,5 +1,5 @@
 #include <string.h>
 #include "tiny.h"
-const char *tiny_greeting(void) { return "hello"; }
+const char *tiny_greeting(void) { return "hello, patched"; }
 const char *tiny_version(void) { return "0.1"; }
 int tiny_add(int a, int b) { char buf[8]; memset(buf, 0, sizeof buf); return a + b + buf[0]; }
"""
TINY_CHECK = r"""/* tiny: adds, says the patched greeting, reports its version.
 *
 * pkg-config: tiny
 */
#include "check.h"
#include <tiny.h>

int main(void)
{
    char detail[64];
    snprintf(detail, sizeof detail, "2 + 3 = %d", tiny_add(2, 3));
    check(tiny_add(2, 3) == 5, "tiny add", detail);
    check(strcmp(tiny_greeting(), "hello, patched") == 0, "tiny patched", tiny_greeting());
    check_version("tiny", "EXPECT_TINY", tiny_version());
    return finish();
}
"""


def _tiny_library(tmp: Path):
    """What docs/extending.md tells a contributor to add: a pin + build spec, a patch, a check."""
    import io
    import tarfile

    from imagefactory.sources import SourcePin, tree_digest

    mirror = tmp / "mirror"
    mirror.mkdir()
    archive = mirror / "tiny-0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in TINY_FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    patches = tmp / "patches" / "tiny" / "0.1"
    patches.mkdir(parents=True)
    (patches / "0001-greeting.patch").write_text(TINY_PATCH)
    checks = tmp / "checks"
    checks.mkdir()
    (checks / "check.h").write_bytes((REPO_PATCHES.parent / "recipes" / "files" / "checks" / "check.h").read_bytes())
    (checks / "tiny.c").write_text(TINY_CHECK)
    spec = LibrarySpec(
        pin=SourcePin(library="tiny", version="0.1", license="MIT", url="https://example.invalid/tiny-0.1.tar.gz",
                      sha256=sha256_file(archive), tree_sha256=tree_digest(archive, "tiny-0.1/"),
                      filename="tiny-0.1.tar.gz", tree_root="tiny-0.1/", purl="pkg:generic/tiny@0.1"),
        kind="make",
        options=("LDFLAGS=$LDFLAGS -Wl,-z,defs",),
        pkgconfig=("tiny.pc",),
        patch_root=tmp / "patches",
        needs=("mimalloc",),  # only to show the ordering: it is placed after what it needs
        smoke="test -e /usr/local/lib/libtiny.so.0",
    )
    return spec, mirror, checks


@pytest.mark.buildah
@pytest.mark.slow
def test_a_new_library_is_one_spec_a_patch_and_a_check(lib_images, tmp_path):
    """Adding a library the documented way gives a built, verified layer, a manifest entry and
    quick-validate checks, with no other file touched (the slim base + build deps are shared)."""
    import subprocess

    from imagefactory.execute import Executor
    from imagefactory.plan import build_plan
    from imagefactory.sources import Sources
    from imagefactory.verify import verify_tree
    from recipes.libs import LIBRARIES, in_build_order
    from recipes.ocserv import quick_validate_steps

    store, recipes, _, _ = lib_images
    spec, mirror, checks = _tiny_library(tmp_path)
    order = [lib.name for lib in in_build_order((spec, *LIBRARIES))]
    assert order.index("tiny") > order.index("mimalloc")  # listed first, built after what it needs
    sources = Sources(tmp_path / "cache", [str(mirror)])
    files = str(REPO_PATCHES.parent / "recipes" / "files")

    class WithTiny(recipes["deps"]):
        """test: a library added the documented way"""

        name = "imagefactory-test-libs-tiny"

        def steps(self):
            yield BuildLibrary(spec, RELEASE, _sources=sources)
            yield from quick_validate_steps((spec,), files=files, checks=str(checks))

    t0 = time.monotonic()
    report = Executor(store.settings(), store.buildah()).execute(build_plan([WithTiny], store.settings()))
    print(f"\ntiny library image in {time.monotonic() - t0:.0f}s")
    assert report.ok
    with store.buildah().mounted_image(WithTiny.image_ref()) as root:
        assert verify_tree(root).ok
        (entry,) = [lib for lib in _manifest(root)["libraries"] if lib["name"] == "tiny"]
        assert entry["build"] == "make" and entry["patches"][0]["name"] == "0001-greeting.patch"
        assert "/usr/local/lib/pkgconfig/tiny.pc" in entry["files"]
        table = (root / "usr/local/share/ocserv-modern/libraries").read_text()
        assert "tiny\t0.1\ttiny\ttest -e /usr/local/lib/libtiny.so.0" in table
    args = ["buildah", *store.args()]
    ctr = subprocess.run([*args, "from", "--pull=never", "--quiet", WithTiny.image_ref()], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        run = lambda *cmd: subprocess.run([*args, "run", "--isolation", "chroot", ctr, "--", *cmd],  # noqa: E731
                                          capture_output=True, text=True, timeout=300)
        ok = run("quick-validate")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        for line in ("PASS  pkg-config tiny", "PASS  tiny runs", "PASS  compile tiny.c", "PASS  tiny add",
                     "PASS  tiny patched", "PASS  tiny version", "quick-validate: PASS"):
            assert line in ok.stdout, ok.stdout
        # the check can fail: a wrong pinned version is reported by the check program
        bad = run("sh", "-c", "echo tiny=0.2 > /tmp/v && QUICK_VALIDATE_VERSIONS=/tmp/v quick-validate")
        assert bad.returncode == 1 and "FAIL  tiny version" in bad.stdout and "(expected 0.2)" in bad.stdout
        assert bad.stdout.rstrip().endswith("quick-validate: FAIL")
    finally:
        subprocess.run([*args, "rm", ctr], capture_output=True)
