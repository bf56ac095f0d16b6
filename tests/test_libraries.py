"""BuildLibrary: cache keys from render (fast), and real cJSON + llhttp builds in both profiles (buildah, slow).

The real builds are the shared images of lib_images.py (``a`` = cJSON debug + llhttp release,
``b`` = cJSON release + llhttp debug). Both are verified with the ELF verifier and their build
manifests are checked against the pins and patches.
"""

from __future__ import annotations

import json
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
from imagefactory.steps import RenderContext
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
