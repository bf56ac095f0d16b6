"""End to end: build the four ocserv-modern images for real, then prove they work.

One build of ``dev test build ci`` per run (module fixture) in the shared e2e store; the tests
then read its JSON report and run the images with ``buildah run`` (chroot isolation). The
cold build time of each image is printed (``pytest -s``) and attached as a test property.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO
from recipes.libs import ALL

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.buildah, pytest.mark.xdist_group("e2e")]

TARGETS = ("dev", "test", "build", "ci")
IMAGES = {"dev": "ocserv-modern-dev", "test": "ocserv-modern-test", "build": "ocserv-modern-build",
          "ci": "ocserv-modern-ci"}
USERS = {"dev": "developer", "test": "developer", "build": "builder", "ci": "builder"}
LIBS = tuple(lib.name for lib in ALL)  # build order: wolfsentry, wolfssl, wolfclu, libuv, llhttp, cjson, mimalloc
SAMPLE = REPO / "tests" / "data" / "sample-project"
def build(store, *targets: str, report: Path, extra: tuple[str, ...] = ()) -> dict:
    store.cli("build", *targets, "--jobs", "2", "--report", str(report), *extra, timeout=3 * 3600)
    return json.loads(report.read_text())


def images_of(report: dict) -> dict[str, dict]:
    data = report.get("data", report)
    return {img["name"]: img for img in data["images"]}


def data_of(report: dict) -> dict:
    return report.get("data", report)


@pytest.fixture(scope="module")
def ocserv(e2e_store, tmp_path_factory):
    """The four images, built once; returns the cold build's report."""
    out = tmp_path_factory.mktemp("ocserv")
    t0 = time.monotonic()
    report = build(e2e_store, *TARGETS, report=out / "cold.json")
    wall = time.monotonic() - t0
    imgs = images_of(report)
    lines = [f"ocserv-modern e2e build: {wall:.0f}s wall"]
    for t in TARGETS:
        img = imgs[IMAGES[t]]
        lines.append(f"  {t:<6} {img['status']:<7} {img['seconds']:7.1f}s  {img['size'] / 1e6:6.0f} MB"
                     f" (budget {img['size_budget_mb']})")
    print("\n".join(lines))
    (out / "times.txt").write_text("\n".join(lines) + "\n")
    return {"report": report, "dir": out, "wall": wall}


def buildah(store, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["buildah", *store.args(), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def run_in(store, image: str, argv: list[str], *, user: str | None = None, volumes: tuple[str, ...] = (),
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``buildah run`` ARGV in a fresh container of IMAGE (its configured user unless USER); removed after."""
    ctr = buildah(store, "from", "--pull=never", "--quiet", f"localhost/{image}:latest").stdout.strip()
    try:
        args = ["run", "--isolation", "chroot"]
        if user:
            args += ["--user", user]
        for v in volumes:
            args += ["--volume", v]
        return buildah(store, *args, ctr, "--", *argv, check=False, timeout=timeout)
    finally:
        buildah(store, "rm", ctr, check=False)


def image_config(store, image: str) -> dict:
    info = json.loads(buildah(store, "inspect", "--type", "image", f"localhost/{image}:latest").stdout)
    return info["OCIv1"]["config"]


# --- build and cache -------------------------------------------------------------------------
def test_cold_build_built_all_four(ocserv):
    imgs = images_of(ocserv["report"])
    assert data_of(ocserv["report"])["ok"]
    for t in TARGETS:
        assert imgs[IMAGES[t]]["status"] in ("built", "cached")
    for profile in ("debug", "release"):
        for lib in LIBS:
            steps = imgs[f"ocserv-modern-lib-{lib}-{profile}"]["steps"]
            assert [s["summary"].split()[0] for s in steps if s["kind"] == "library"] == [lib], "one stage per library"


def test_second_build_is_all_cache_hits(e2e_store, ocserv):
    report = build(e2e_store, *TARGETS, report=ocserv["dir"] / "warm.json")
    data = data_of(report)
    assert data["containers_started"] == 0
    assert data["commits"] == 0
    for name, img in images_of(report).items():
        assert img["status"] == "cached", name
        assert not [s for s in img["steps"] if s["status"] in ("run", "final")], name
    print(f"ocserv-modern no-op build: {data['seconds']:.1f}s")


# --- the images ------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_verify_hardening(e2e_store, ocserv, target):
    proc = e2e_store.cli("verify", target, check=False)
    assert proc.returncode == 0, f"verify {target}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("target", TARGETS)
def test_verify_with_size_budget(e2e_store, ocserv, target):
    """Each image fits its Debian budget (its measured floor plus at most 5 %): the pipelines' gate."""
    proc = e2e_store.cli("verify", target, "--size", check=False)
    img = images_of(ocserv["report"])[IMAGES[target]]
    print(f"{target}: {img['size'] / 1e6:.0f} MB (budget {img['size_budget_mb']})")
    assert proc.returncode == 0, f"verify {target} --size\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "within its size budget" in " ".join(proc.stdout.split())
    assert not img["over_budget"]


@pytest.mark.parametrize("target", TARGETS)
def test_no_docs_man_pages_or_locales_in_any_layer(e2e_store, ocserv, target):
    """dpkg skipped them from the bootstrap on, so no layer holds them (deleting them in a later layer
    would still ship their bytes below it): the final tree and every layer's own files are checked."""
    image = f"localhost/{IMAGES[target]}:latest"
    with e2e_store.buildah().mounted_image(image) as root:
        assert not doc_files(root), doc_files(root)[:10]
        assert (root / "usr/share/doc/libc6/copyright").is_file(), "copyright files stay (SBOM licenses)"
    layers = layer_trees(e2e_store, image)
    assert layers, image  # leaves are squashed into one layer, intermediates keep theirs
    for tree in layers:
        assert not doc_files(tree), f"layer {tree.parent.name} holds {doc_files(tree)[:10]}"


def doc_files(tree: Path) -> list[Path]:
    """Regular files under the doc, man, info and locale folders, but copyright files, locale.alias
    and install-info's index (dpkg keeps the symlinks of excluded paths: they cost no bytes)."""
    keep = ("copyright", "locale.alias")
    return [p for folder in ("usr/share/man", "usr/share/info", "usr/share/doc", "usr/share/locale")
            for p in (tree / folder).rglob("*")
            if p.is_file() and not p.is_symlink() and p.name not in keep and p != tree / "usr/share/info/dir"]


def layer_trees(store, image: str) -> list[Path]:
    """The folder of each layer of IMAGE in the store (overlay: the layer's own diff; vfs: its tree),
    bottom first, read from containers-storage's own records, so a deleted file still shows where it
    was added."""
    driver = "overlay" if (store.root / "overlay-images").is_dir() else "vfs"
    images = json.loads((store.root / f"{driver}-images" / "images.json").read_text())
    layers = {la["id"]: la for la in json.loads((store.root / f"{driver}-layers" / "layers.json").read_text())}
    top = next(i["layer"] for i in images if image in i.get("names", []))
    chain = []
    while top:
        chain.append(store.root / "overlay" / top / "diff" if driver == "overlay" else store.root / "vfs" / "dir" / top)
        top = layers[top].get("parent")
    assert all(p.is_dir() for p in chain), chain
    return chain[::-1]


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_the_non_root_user(e2e_store, ocserv, target):
    cfg = image_config(e2e_store, IMAGES[target])
    assert cfg.get("User") == USERS[target]
    assert cfg.get("WorkingDir") == "/workspace"
    proc = run_in(e2e_store, IMAGES[target], ["sh", "-c", "id -u; id -g; id -un; test -w /workspace && echo w"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1000", "1000", USERS[target], "w"]


def test_labels_carry_library_versions(e2e_store, ocserv):
    for t in TARGETS:
        labels = image_config(e2e_store, IMAGES[t]).get("Labels") or {}
        versions = {k.rsplit(".", 1)[-1]: v for k, v in labels.items() if k.startswith("io.imagefactory.lib.")}
        assert versions == {"wolfsentry": "1.6.2", "wolfssl": "5.9.2", "wolfclu": "0.2.0", "libuv": "1.52.1",
                            "llhttp": "9.4.3", "cjson": "1.7.19", "mimalloc": "3.4.3"}, t
        assert labels.get("org.opencontainers.image.title") == IMAGES[t]


def test_ci_quick_validate_passes(e2e_store, ocserv):
    # how long it takes is measured by `bench/bench.py --only quick-validate`, not asserted here
    proc = run_in(e2e_store, IMAGES["ci"], ["quick-validate"], user="1000", timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    assert "FAIL" not in out.replace("0 check(s) failed", "")
    for check in ("wolfSSL SHA-256", "wolfSSL TLS 1.3 context", "libuv timer", "llhttp parse request",
                  "cJSON document", "cJSON round trip", "cJSON uses mimalloc", "mimalloc mi_malloc",
                  "wolfSSL version", "libuv version", "llhttp version", "cJSON version", "mimalloc version",
                  "wolfSSL wolfSentry hooks", "wolfSentry JSON policy", "wolfSentry blocks", "wolfSentry allows",
                  "wolfSentry default", "wolfSentry version", "wolfclu runs", "wolfCLU sha256", "wolfCLU sha256 (short)", "wolfCLU version",
                  "wolfCLU links wolfSSL",
                  "pkg-config wolfsentry"):
        assert f"PASS  {check}" in out, check
    for lib in LIBS:  # every library with a check program had it compiled and run
        if (REPO / "recipes" / "files" / "checks" / f"{lib}.c").exists():
            assert f"PASS  compile {lib}.c" in out, lib
    assert out.rstrip().endswith("quick-validate: PASS")


def test_quick_validate_fails_on_a_wrong_version(e2e_store, ocserv, tmp_path):
    versions = tmp_path / "versions"
    versions.write_text("".join(f"{lib.name}={'0.0.1' if lib.name == 'cjson' else lib.version}\n" for lib in ALL))
    versions.chmod(0o644)
    tmp_path.chmod(0o755)
    proc = run_in(e2e_store, IMAGES["ci"], ["env", "QUICK_VALIDATE_VERSIONS=/check/versions", "quick-validate"],
                  user="1000", volumes=(f"{tmp_path}:/check:ro",))
    assert proc.returncode == 1, proc.stdout
    assert "FAIL  cJSON version" in proc.stdout and "(expected 0.0.1)" in proc.stdout
    assert proc.stdout.rstrip().endswith("quick-validate: FAIL")


def test_ci_env_lists_every_library(e2e_store, ocserv):
    proc = run_in(e2e_store, IMAGES["ci"], ["ci-env"], user="1000")
    assert proc.returncode == 0, proc.stderr
    for lib in ALL:
        line = next((x for x in proc.stdout.splitlines() if x.startswith(f"{lib.name}:")), "")
        assert f"pinned {lib.version}" in line and "missing" not in line, proc.stdout
    assert "wolfclu:" in proc.stdout and "0.2.0" in proc.stdout


def test_test_image_default_command_covers_a_mounted_project(e2e_store, ocserv, tmp_path):
    ws = tmp_path / "workspace"
    shutil.copytree(SAMPLE, ws)
    subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)
    cmd = image_config(e2e_store, IMAGES["test"])["Cmd"]
    assert cmd == ["run-tests"]
    proc = run_in(e2e_store, IMAGES["test"], cmd, volumes=(f"{ws}:/workspace",), timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-5000:]}\n{proc.stderr[-3000:]}"
    assert "Makefile project in /workspace" in proc.stdout
    assert "3 test(s)" in proc.stdout and "tests PASSED" in proc.stdout
    for name in ("index.html", "coverage.xml", "summary.txt"):
        assert (ws / "coverage" / name).is_file(), name
    xml = (ws / "coverage" / "coverage.xml").read_text()
    assert 'filename="calc.c"' in xml
    assert "calc.c" in (ws / "coverage" / "summary.txt").read_text()
    assert list(ws.glob("*.gcda")), "the tests ran with --coverage"
    assert (ws / "coverage").stat().st_uid == 1000


def test_test_image_self_test_without_a_project(e2e_store, ocserv):
    proc = run_in(e2e_store, IMAGES["test"], ["run-tests"], timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-5000:]}\n{proc.stderr[-3000:]}"
    assert "running the image's SELF-TEST" in proc.stdout
    assert "quick-validate: PASS" in proc.stdout
    assert "self-test PASSED" in proc.stdout
    for name in ("wolfsentry.c", "wolfssl.c", "llhttp.c"):  # the coverage summary names the check programs
        assert name in proc.stdout, name


def test_dev_has_the_tools_and_debug_libraries(e2e_store, ocserv):
    script = ("for t in gcc g++ make cmake meson ninja autoconf automake libtool pkg-config git gdb valgrind "
              "strace perf protoc-c gperf; do command -v $t >/dev/null || echo MISSING $t; done; "
              "pkg-config --exists wolfsentry wolfssl libuv llhttp libcjson libcjson_utils mimalloc talloc "
              "libnl-route-3.0 libseccomp libprotobuf-c || echo MISSING pc; command -v wolfssl >/dev/null || echo MISSING wolfclu; "
              "grep -o '\"profile\": \"[a-z]*\"' /usr/local/share/imagefactory/manifest.json | sort | uniq -c")
    proc = run_in(e2e_store, IMAGES["dev"], ["sh", "-c", script])
    assert "MISSING" not in proc.stdout, proc.stdout
    assert f'{len(ALL)} "profile": "debug"' in proc.stdout


def test_build_has_packaging_tools_and_no_debuggers(e2e_store, ocserv):
    """Debian's own packaging tools; rpm tooling only with ocserv.packaging.rpm (off by default)."""
    script = ("for t in gcc cc make pkg-config dpkg-buildpackage dpkg-source ar ld; do "
              "command -v $t >/dev/null || echo MISSING $t; done; "
              "for t in gdb valgrind strace perf rpmbuild createrepo_c; do command -v $t >/dev/null && echo UNWANTED $t; done; "
              "grep -o '\"profile\": \"[a-z]*\"' /usr/local/share/imagefactory/manifest.json | sort | uniq -c; "
              "printf 'int main(void){return 0;}' > /tmp/t.c && cc -O2 -flto -o /tmp/t /tmp/t.c && /tmp/t && echo LTO-OK")
    proc = run_in(e2e_store, IMAGES["build"], ["sh", "-c", script])
    assert "MISSING" not in proc.stdout and "UNWANTED" not in proc.stdout, proc.stdout
    assert f'{len(ALL)} "profile": "release"' in proc.stdout
    assert "LTO-OK" in proc.stdout, proc.stdout + proc.stderr


# --- what the images hold: the same files and manifests as before the library stages --------------
GOLDEN = REPO / "tests" / "data" / "ocserv-usr-local"


def usr_local_listing(root: Path) -> list[str]:
    """Every path under ``root``/usr/local, sorted: directories end in ``/``, symlinks show their target."""
    base = root / "usr" / "local"
    out = []
    for path in base.rglob("*"):
        rel = "/usr/local/" + path.relative_to(base).as_posix()
        if path.is_symlink():
            out.append(f"{rel} -> {path.readlink()}")
        else:
            out.append(rel + ("/" if path.is_dir() else ""))
    return sorted(out)


def manifest_entries(root: Path) -> list[str]:
    """The library entries of manifest.json, each as canonical JSON, sorted."""
    data = json.loads((root / "usr/local/share/imagefactory/manifest.json").read_text())
    return sorted(json.dumps(entry, sort_keys=True) for entry in data["libraries"])


@pytest.mark.parametrize("target", ["build", "dev"])
def test_usr_local_and_library_manifests_are_what_they_were(e2e_store, ocserv, target):
    """Keep: the files of /usr/local and the manifest entries equal those recorded from the images
    built before the libraries moved to their own stages (tests/data/ocserv-usr-local/README.md)."""
    with e2e_store.buildah().mounted_image(f"localhost/{IMAGES[target]}:latest") as root:
        listing, entries = usr_local_listing(root), manifest_entries(root)
    golden = (GOLDEN / f"{target}.txt").read_text().splitlines()
    assert listing == golden, (f"/usr/local of {target} differs from {GOLDEN.name}/{target}.txt: "
                               f"new {sorted(set(listing) - set(golden))[:20]}, gone {sorted(set(golden) - set(listing))[:20]}")
    assert entries == (GOLDEN / f"{target}.manifest.jsonl").read_text().splitlines()


# --- last: one library's flags change → only its stages and the copies from it on rebuild -------
def test_one_library_flag_change_rebuilds_only_it_and_later(e2e_store, ocserv):
    """What rebuilds is checked here; how long it takes is `bench/bench.py --only flag` (docs/performance.md)."""
    t0 = time.monotonic()
    variant = build(e2e_store, "ci", report=ocserv["dir"] / "variant.json",
                    extra=("--set", "ocserv.cflags.cjson=-DIMAGEFACTORY_E2E_VARIANT=1"))
    seconds = time.monotonic() - t0
    imgs = images_of(variant)
    ran = {name: [s["summary"] for s in img["steps"] if s["status"] == "run"] for name, img in imgs.items()}
    stages = {name for name in imgs if name.startswith("ocserv-modern-lib-")}
    assert {name for name in stages if ran[name]} == {"ocserv-modern-lib-cjson-release"}, ran
    assert [r.split()[0] for r in ran["ocserv-modern-lib-cjson-release"]] == ["cjson"]
    # build: its packages and the copies of the libraries before cJSON stay cached; cJSON's copy and later run
    build_steps = imgs["ocserv-modern-build"]["steps"]
    assert [s["status"] for s in build_steps if s["kind"] == "install"] == ["hit"]
    copies = [(s["summary"].split(":")[0].removeprefix("ocserv-modern-lib-").removesuffix("-release"), s["status"])
              for s in build_steps if s["kind"] == "copy-from"]
    assert copies == [(lib, "hit" if LIBS.index(lib) < LIBS.index("cjson") else "run") for lib in LIBS]
    assert imgs["ocserv-modern-ci"]["status"] == "built"
    assert imgs["imagefactory-base-debian-slim"]["status"] == "cached"
    print(f"variant rebuild (cjson flags): {seconds:.0f}s, steps run: {sum(map(len, ran.values()))}")
    # the variant's flags are in the manifest of the rebuilt image...
    proc = run_in(e2e_store, IMAGES["build"], ["grep", "-c", "IMAGEFACTORY_E2E_VARIANT",
                                               "/usr/local/share/imagefactory/manifest.d/cjson.json"])
    assert proc.stdout.strip() == "1"
    # ...and building without it again is all cache hits that put the original images back
    back = build(e2e_store, "ci", report=ocserv["dir"] / "restore.json")
    assert data_of(back)["containers_started"] == 0
    assert all(img["status"] == "cached" for img in images_of(back).values())
    proc = run_in(e2e_store, IMAGES["build"], ["grep", "-c", "IMAGEFACTORY_E2E_VARIANT",
                                               "/usr/local/share/imagefactory/manifest.d/cjson.json"])
    assert proc.stdout.strip() == "0"
