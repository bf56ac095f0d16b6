"""The four ocserv-modern recipes as plans: no buildah, no network (the source mirror is local).

Rendering BuildLibrary steps verifies the pinned archives, so these tests need the source
mirror at ../shared/sources (or a warm source cache), like every developer machine and CI.
"""

from __future__ import annotations

import pytest

from imagefactory.platforms import APT_NET_OPTS

from imagefactory import config
from imagefactory.describe import describe_plan
from imagefactory.libraries import BUILD_DEPS
from imagefactory.platforms import PACKAGE_NAMES
from imagefactory.recipe import CATALOGUE
from imagefactory.loader import load_recipes

from conftest import SHARED_SOURCES

TARGETS = ["dev", "test", "build", "ci"]
IMAGES = {"dev": "ocserv-modern-dev", "test": "ocserv-modern-test", "build": "ocserv-modern-build",
          "ci": "ocserv-modern-ci"}
# build order: wolfSSL is built with wolfSentry's hooks, wolfCLU against wolfSSL
LIBS = ["wolfsentry", "wolfssl", "wolfclu", "libuv", "llhttp", "cjson", "mimalloc"]
PINNED = (("wolfsentry", "1.6.2"), ("wolfssl", "5.9.2"), ("wolfclu", "0.2.0"), ("libuv", "1.52.1"),
          ("llhttp", "9.4.3"), ("cjson", "1.7.19"), ("mimalloc", "3.4.3"))
# `build dev test build ci` on Debian 13, sizes as `buildah images` reports them (MB); see the
# recipes' docstrings and docs/performance.md. The e2e tests check the real images against the budgets.
MEASURED_DEBIAN_MB = {"dev": 769, "test": 822, "build": 283, "ci": 282}


def settings(tmp_path, platform="debian", **values):
    return config.load(env={}, overrides={
        "platform": platform,
        "source_mirrors": [str(SHARED_SOURCES)],
        "source_cache": str(tmp_path / "sources"),
        "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "logs"),
        "values": {k.replace("__", "."): v for k, v in values.items()},
    })


@pytest.fixture(scope="module")
def recipes():
    load_recipes()
    return CATALOGUE


def plan(tmp_path, platform="debian", **values) -> dict[str, dict]:
    data = describe_plan(TARGETS, settings(tmp_path, platform, **values), read_store=False)
    return {img["image"]: img for img in data}


def run_script(call: str) -> str:
    """The shell script of a rendered `buildah run ... -- /bin/sh -ec SCRIPT` call."""
    import shlex

    argv = shlex.split(call)
    return argv[argv.index("-ec") + 1]


def installs(img: dict) -> list[str]:
    return [run_script(s["calls"][0]) for s in img["steps"] if s["kind"] == "install"]


def library_steps(img: dict) -> list[dict]:
    return [s for s in img["steps"] if s["kind"] == "library"]


# --- shape -----------------------------------------------------------------------------------
def test_recipes_registered_with_budgets_and_parents(recipes):
    dev, test, build, ci = (recipes.get(t) for t in TARGETS)
    assert [c.name for c in (dev, test, build, ci)] == list(IMAGES.values())
    assert (dev.base, build.base) == ("full", "slim")
    assert test.declared_parent() is dev and ci.declared_parent() is build
    for cls in (dev, test, build, ci):
        assert cls.description(), f"{cls.name} needs a one-line description"
        for lib, version in PINNED:
            assert any(k.endswith(f".{lib}") and v == version for k, v in _all_labels(cls).items()), (cls, lib)


def _all_labels(cls) -> dict[str, str]:
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(getattr(klass, "__dict__", {}).get("labels", {}) or {})
    return out


@pytest.mark.parametrize("platform", ["debian", "ubi9"])
def test_all_four_render_with_parents_and_one_step_per_library(tmp_path, recipes, platform):
    imgs = plan(tmp_path, platform)
    assert imgs["ocserv-modern-test"]["parent"] == "ocserv-modern-dev"
    assert imgs["ocserv-modern-ci"]["parent"] == "ocserv-modern-build"
    base = {"debian": ("imagefactory-base-debian-full", "imagefactory-base-debian-slim"),
            "ubi9": ("imagefactory-base-ubi9", "imagefactory-base-ubi9-minimal")}[platform]
    assert imgs["ocserv-modern-dev"]["parent"] == base[0]
    assert imgs["ocserv-modern-build"]["parent"] == base[1]
    toolchain = "ocserv-modern-lib-toolchain"
    assert imgs[toolchain]["parent"] == base[1]  # the slim base, for both profiles
    # one stage per library and profile: on the toolchain, or FROM the stage of what it needs
    parents = {"wolfssl": "wolfsentry", "wolfclu": "wolfssl"}
    for image, profile in (("ocserv-modern-dev", "debug"), ("ocserv-modern-build", "release")):
        stages = [f"ocserv-modern-lib-{lib}-{profile}" for lib in LIBS]
        assert imgs[image]["deps"][1:] == stages
        for lib, stage in zip(LIBS, stages):
            (step,) = library_steps(imgs[stage])
            assert step["summary"].split()[0] == lib and f"({profile})" in step["summary"]
            parent = f"ocserv-modern-lib-{parents[lib]}-{profile}" if lib in parents else toolchain
            assert imgs[stage]["parent"] == parent, stage
            assert not [s for s in imgs[stage]["steps"] if s["kind"] == "copy-from"], "parents hold the needs"
        copies = [s["summary"] for s in imgs[image]["steps"] if s["kind"] == "copy-from"]
        assert copies == [f"{stage}:/var/lib/ocserv-modern/staged/{lib}/usr/local → /usr/local"
                          for lib, stage in zip(LIBS, stages)], "one copy layer per library, in the list's order"
        after = imgs[image]["steps"][[s["kind"] for s in imgs[image]["steps"]].index("copy-from") + len(LIBS)]
        assert after["kind"] == "run" and "ldconfig" in after["summary"]
        assert "manifest.json" in run_script(after["calls"][0])
    for image in IMAGES.values():
        assert not library_steps(imgs[image]), "libraries are built once, in their stages"
    for squashed in ("ocserv-modern-test", "ocserv-modern-ci"):
        assert imgs[squashed]["squash"] is True
    for mid in ("ocserv-modern-dev", "ocserv-modern-build", toolchain, "ocserv-modern-lib-cjson-release"):
        assert imgs[mid]["squash"] is False, "intermediates keep one layer per library"


def test_every_package_has_a_ubi9_name():
    from recipes.packages import ALL_GROUPS

    used = set(BUILD_DEPS).union(*ALL_GROUPS.values())
    missing = sorted(p for p in used if "ubi9" not in PACKAGE_NAMES.get(p, {}))
    assert not missing, f"add PACKAGE_NAMES entries for {missing}"


# --- exact install commands -----------------------------------------------------------------
def test_ubi9_build_uses_microdnf_with_mapped_names(tmp_path, recipes):
    imgs = plan(tmp_path, "ubi9")
    build = imgs["ocserv-modern-build"]
    first = installs(build)[0]
    assert first.splitlines()[0] == (
        "microdnf install -y --nodocs --setopt=install_weak_deps=0 binutils "
        "createrepo_c file gcc glibc-devel make patch pkgconf-pkg-config rpm-build xz")
    libs = installs(imgs["ocserv-modern-lib-toolchain"])[0]
    assert libs.splitlines()[0] == (
        "microdnf install -y --nodocs --setopt=install_weak_deps=0 autoconf automake binutils cmake "
        "file gcc gcc-c++ glibc-devel gzip libtool make patch pkgconf-pkg-config tar xz")
    assert first.splitlines()[1] == "microdnf clean all"
    assert "dpkg" not in first  # dpkg-dev has no UBI package: dropped
    # the unused files go in the same step (layer) as the install
    step = next(s for s in build["steps"] if s["kind"] == "install")
    assert "rm -rf /usr/bin/*lto-dump* /usr/share/cmake-*/Help" in run_script(step["calls"][1])


def test_ubi9_dev_and_test_use_dnf(tmp_path, recipes):
    imgs = plan(tmp_path, "ubi9")
    dev = installs(imgs["ocserv-modern-dev"])
    assert dev[2] == ("dnf install -y --nodocs --setopt=install_weak_deps=False gdb perf strace valgrind\n"
                      "dnf clean all")
    assert dev[1].startswith("dnf install -y --nodocs --setopt=install_weak_deps=False gperf krb5-devel "
                             "libev-devel libmaxminddb-devel libnl3-devel liboath-devel libseccomp-devel")
    assert installs(imgs["ocserv-modern-test"]) == [
        "dnf install -y --nodocs --setopt=install_weak_deps=False check-devel gcovr iperf3 lcov libcmocka-devel "
        "python3-pytest tcpdump\ndnf clean all"]


def test_debian_install_lines(tmp_path, recipes):
    imgs = plan(tmp_path, "debian")
    build = installs(imgs["ocserv-modern-build"])[0].splitlines()
    assert build[0] == f"apt-get update -q --error-on=any {APT_NET_OPTS}"
    assert build[1] == (f"apt-get install -y -q --no-install-recommends {APT_NET_OPTS} binutils "
                        "dpkg-dev file gcc libc6-dev make netbase patch pkgconf xz-utils")  # native packaging only
    for forbidden in ("gdb", "valgrind", "strace", "linux-perf", "meson", "g++", "cmake"):
        assert f" {forbidden} " not in f" {build[1]} ", f"build must not install {forbidden}"
    dev = installs(imgs["ocserv-modern-dev"])
    assert dev[2].splitlines()[1] == f"apt-get install -y -q --no-install-recommends {APT_NET_OPTS} gdb linux-perf strace valgrind"
    for pkg in ("gcc", "g++", "make", "cmake", "meson", "ninja-build", "autoconf", "automake", "libtool-bin",
                "pkgconf", "git"):
        assert f" {pkg} " in f" {dev[0].splitlines()[1]} "
    test = installs(imgs["ocserv-modern-test"])
    assert test[0].splitlines()[1] == (f"apt-get install -y -q --no-install-recommends {APT_NET_OPTS} check gcovr iperf3 lcov "
                                       "libcmocka-dev python3-pytest tcpdump")


@pytest.mark.parametrize("value", ["1", "yes", "On"])
def test_rpm_tooling_on_debian_only_when_a_setting_asks(tmp_path, recipes, value):
    build = installs(plan(tmp_path, "debian", ocserv__packaging__rpm=value)["ocserv-modern-build"])[0]
    assert build.splitlines()[1] == (f"apt-get install -y -q --no-install-recommends {APT_NET_OPTS} binutils "
                                     "createrepo-c dpkg-dev file gcc libc6-dev make netbase patch pkgconf rpm xz-utils")
    off = installs(plan(tmp_path, "debian", ocserv__packaging__rpm="off")["ocserv-modern-build"])[0]
    assert " rpm " not in off and "createrepo" not in off


def test_rpm_setting_rejects_an_unclear_value(tmp_path, recipes):
    from imagefactory.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"ocserv\.packaging\.rpm='maybe' \(ocserv-modern-build\): use 1/true"):
        plan(tmp_path, "debian", ocserv__packaging__rpm="maybe")


def test_budgets_per_platform(recipes):
    """ubi9 keeps the seed's budgets; Debian's are each image's measured floor plus at most 5 %."""
    budgets = {t: (recipes.get(t).size_budget("debian"), recipes.get(t).size_budget("ubi9")) for t in TARGETS}
    assert {t: ubi for t, (_, ubi) in budgets.items()} == {"dev": 500, "test": 500, "build": 200, "ci": 200}
    for target, (debian, _) in budgets.items():
        measured = MEASURED_DEBIAN_MB[target]
        assert measured <= debian <= measured * 1.05, (target, debian, measured)


def test_users_workdirs_and_commands(tmp_path, recipes):
    imgs = plan(tmp_path, "debian")

    def configs(name):
        return " ".join(c for s in imgs[name]["steps"] if s["kind"] == "config" for c in s["calls"])

    def adds(name):
        return [s for s in imgs[name]["steps"] if s["kind"] == "add-user"]

    assert adds("ocserv-modern-dev")[0]["summary"].startswith("developer (1000:1000)")
    assert "chown 1000:1000 /workspace" in run_script(adds("ocserv-modern-dev")[0]["calls"][0])
    assert adds("ocserv-modern-build")[0]["summary"].startswith("builder (1000:1000)")
    assert "--user developer --workingdir /workspace --cmd '[\"bash\"]'" in configs("ocserv-modern-dev")
    # leaves switch to root to install, then back to the image's user
    test_cfg = configs("ocserv-modern-test")
    assert test_cfg.index("--user root") < test_cfg.index("--user developer")
    assert "--cmd '[\"run-tests\"]'" in test_cfg
    ci_cfg = configs("ocserv-modern-ci")
    assert ci_cfg.index("--user root") < ci_cfg.index("--user builder")
    assert "--cmd '[\"quick-validate\"]'" in ci_cfg
    copies = " ".join(s["summary"] for s in imgs["ocserv-modern-ci"]["steps"] if s["kind"] == "copy")
    assert "files/quick-validate → /usr/local/bin/quick-validate" in copies
    assert "files/checks → /usr/local/share/ocserv-modern/checks" in copies
    for image in ("ocserv-modern-ci", "ocserv-modern-test"):
        table = next(s for s in imgs[image]["steps"] if "library table" in s["summary"])
        script = run_script(table["calls"][0])
        for lib, version in PINNED:
            assert f"{lib}={version}" in script
        assert "wolfsentry\t1.6.2\twolfsentry\t-" in script
        assert "wolfclu\t0.2.0\t-\twolfssl -v" in script
        assert "libuv\t1.52.1\tlibuv libuv-static\t-" in script


# --- cache keys: one library's patches or flags change only its stage and the copies from it on --
class FindsEverything:
    """A cache provider that finds every key (the image ID is the key): the walk then computes every
    key of the plan as if all were built, so two plans compare key by key with nothing built."""

    def find(self, key: str):
        from imagefactory.walk import Found, cache_ref

        return Found(f"sha256:{key}", "local", cache_ref(key))


def _keys(s) -> dict[str, list[tuple[str, str]]]:
    """Per image, each layer's or final commit's (summary, key), from the same walk `plan` and `build` take."""
    from imagefactory.describe import walk_plan
    from imagefactory.plan import build_plan

    out = {}
    for node, decisions in walk_plan(build_plan(TARGETS, s), FindsEverything(), {}):
        out[node.name] = [((d.unit.rendered if d.is_final or d.is_flatten else d.unit.steps[-1].rendered).summary,
                           d.key) for d in decisions]
        assert all(key for _, key in out[node.name]), node.name
    return out


HARMLESS_PATCH = """\
A new text file, no code changed: enough to change cJSON's patch set.

--- /dev/null
+++ b/IMAGEFACTORY-TEST
@@ -0,0 +1 @@
+test
"""


@pytest.mark.parametrize("change", ["flags", "patch"])
def test_changing_one_library_changes_only_its_stages_and_the_copies_from_it_on(tmp_path, recipes, monkeypatch,
                                                                                  change):
    """A cJSON patch or flag change: its two stages and, in dev and build, the cJSON copy and every
    layer after it (then test and ci on top); every other library stage, mimalloc's included, keeps its key."""
    import shutil

    import imagefactory.libraries as libraries

    before = _keys(settings(tmp_path))
    if change == "flags":
        after = _keys(settings(tmp_path, ocserv__cflags__cjson="-DIMAGEFACTORY_VARIANT=1"))
    else:
        patches = tmp_path / "patches"
        shutil.copytree(libraries.PATCHES_ROOT, patches)
        (patches / "cjson" / "1.7.19" / "9999-harmless.patch").write_text(HARMLESS_PATCH)
        monkeypatch.setattr(libraries, "PATCHES_ROOT", patches)
        after = _keys(settings(tmp_path))
    assert before.keys() == after.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"ocserv-modern-lib-cjson-release", "ocserv-modern-lib-cjson-debug", "ocserv-modern-dev",
                       "ocserv-modern-build", "ocserv-modern-test", "ocserv-modern-ci"}
    for name in ("ocserv-modern-lib-cjson-release", "ocserv-modern-lib-cjson-debug"):
        assert before[name][0][0].startswith("cjson ") and before[name][0][1] != after[name][0][1]
    for name in ("ocserv-modern-dev", "ocserv-modern-build"):
        b, a = before[name], after[name]
        first = next(i for i, (x, y) in enumerate(zip(b, a)) if x[1] != y[1])
        assert b[first][0].startswith("ocserv-modern-lib-cjson-"), f"{name}: first changed layer is {b[first][0]}"
        assert b[:first] == a[:first]  # packages and the copies of the libraries before cJSON: same keys
        assert all(x[1] != y[1] for x, y in zip(b[first:], a[first:]))  # cJSON's copy, mimalloc's, the rest
        assert [s.split(":")[0] for s, _ in b[first:first + 2]] == [
            f"ocserv-modern-lib-{lib}-{'debug' if name.endswith('dev') else 'release'}" for lib in ("cjson", "mimalloc")]


def test_library_flag_values_reach_only_that_library(tmp_path, recipes):
    s = settings(tmp_path, "debian", ocserv__cflags__cjson="-DX_ONE=1;-DX_TWO=2", ocserv__ldflags__cjson="-Wl,-O1")
    from recipes.libs import CJSON, LIBUV
    from recipes.ocserv import library_profile

    from imagefactory.toolchain import RELEASE

    p = library_profile(s, CJSON, RELEASE)
    assert p.cflags[-2:] == ("-DX_ONE=1", "-DX_TWO=2") and p.ldflags[-1] == "-Wl,-O1"
    assert p.name == "release"
    assert library_profile(s, LIBUV, RELEASE) is RELEASE
