"""Tests for imagefactory.verify against real binaries built with the host gcc.

Each test assembles a small fake rootfs (usr/local/bin, usr/local/lib, plus a copy of the
host's libc and dynamic loader) so that library resolution happens inside the fake image.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from rich.console import Console

from imagefactory.verify import (
    MANIFEST,
    Status,
    check_size,
    print_report,
    read_elf,
    verify_tree,
)

SRC = Path(__file__).parent / "data" / "verify"

CET = ["-fcf-protection=full"] if platform.machine() in ("x86_64", "i686") else []
HARD_CFLAGS = [
    "-O2",
    "-D_FORTIFY_SOURCE=3",
    "-fstack-protector-strong",
    "-fstack-clash-protection",
    *CET,
]
HARD_EXE = [*HARD_CFLAGS, "-fPIE", "-pie", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack"]
HARD_LIB = [*HARD_CFLAGS, "-fPIC", "-shared", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack"]
SOFT_LINK = ["-Wl,-z,norelro", "-Wl,-z,lazy", "-Wl,-z,execstack"]
SOFT_EXE = ["-O0", "-fno-stack-protector", "-no-pie", *SOFT_LINK, "-Wl,-rpath,/opt/nowhere"]
SOFT_LIB = ["-O0", "-fno-stack-protector", "-fPIC", "-shared", *SOFT_LINK]
ORIGIN_RPATH = "-Wl,-rpath,$ORIGIN/../lib"


def _gcc(*args: object) -> None:
    subprocess.run(["gcc", *map(str, args)], check=True, capture_output=True)


def _lib(out: Path, src: str, flags: list[str]) -> Path:
    _gcc(*flags, f"-Wl,-soname,{out.name}", SRC / src, "-o", out)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Every binary the tests need, compiled once per worker."""
    for tool in ("gcc", "strip", "ar"):  # ci/setup installs them; a missing one fails, never skips
        require_tool(tool)
    out = tmp_path_factory.mktemp("built")
    for variant in ("hard", "soft", "partial", "debug", "abs"):
        (out / variant).mkdir()
    hard_lib = _lib(out / "hard" / "libgreet.so.1", "greet.c", HARD_LIB)
    soft_lib = _lib(out / "soft" / "libgreet.so.1", "greet.c", SOFT_LIB)
    apps = {
        "hard": [*HARD_EXE, ORIGIN_RPATH],
        "soft": SOFT_EXE,
        "partial": [*HARD_EXE[:-3], "-Wl,-z,relro", "-Wl,-z,lazy", "-Wl,-z,noexecstack"],
        "debug": [*HARD_EXE, "-g", ORIGIN_RPATH],
        "abs": [*HARD_EXE, "-Wl,-rpath,/opt/vendor/lib"],
    }
    for variant, flags in apps.items():
        lib = soft_lib if variant == "soft" else hard_lib
        _gcc(*flags, SRC / "app.c", lib, "-o", out / variant / "app")
    _lib(out / "hard" / "libplain.so", "plain.c", HARD_LIB)
    _gcc("-c", SRC / "plain.c", "-o", out / "plain.o")
    subprocess.run(["ar", "rcs", out / "libplain.a", out / "plain.o"], check=True)
    return {
        "libc": Path(os.path.realpath(_gcc_output("-print-file-name=libc.so.6"))),
        "interp": Path(read_elf(out / "hard" / "app", "/app").interp),
        "multiarch": Path(_gcc_output("-print-multiarch")),
        **{f"{v}/{p.name}": p for v in apps for p in (out / v).iterdir()},
        "plain.o": out / "plain.o",
        "libplain.a": out / "libplain.a",
    }


def _gcc_output(arg: str) -> str:
    return subprocess.run(["gcc", arg], check=True, capture_output=True, text=True).stdout.strip()


def _place(root: Path, image_path: str, src: Path) -> Path:
    dest = root / image_path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return dest


def _symlink(root: Path, image_path: str, target: str) -> None:
    link = root / image_path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _add_libc(root: Path, built: dict[str, Path]) -> None:
    """libc and the loader at their multiarch path; the loader's usual path as an absolute symlink."""
    libdir = "/lib/" + str(built["multiarch"])
    _place(root, f"{libdir}/libc.so.6", built["libc"])
    interp = built["interp"]
    real = _place(root, f"{libdir}/{interp.name}", Path(os.path.realpath(interp)))
    if f"/{real.relative_to(root).as_posix()}" != str(interp):
        _symlink(root, str(interp), f"{libdir}/{interp.name}")


@pytest.fixture
def make_root(tmp_path, built):
    """make_root(variant, libc=True, lib=True): app + libgreet of one build variant in a fresh root."""

    def make(variant: str, *, libc: bool = True, lib: bool = True) -> Path:
        root = tmp_path / f"root-{variant}"
        _place(root, "/usr/local/bin/app", built[f"{variant}/app"])
        if lib:
            lib_variant = "soft" if variant == "soft" else "hard"
            _place(root, "/usr/local/lib/libgreet.so.1", built[f"{lib_variant}/libgreet.so.1"])
        if libc:
            _add_libc(root, built)
        return root

    return make


def _strip(path: Path) -> None:
    subprocess.run(["strip", "--strip-unneeded", path], check=True)


def _check(report, path: str, name: str):
    return report.file(path).checks[name]


APP = "usr/local/bin/app"
LIB = "usr/local/lib/libgreet.so.1"


# --- hardened binaries pass -------------------------------------------------------------


def test_hardened_stripped_tree_passes_release(make_root):
    root = make_root("hard")
    _strip(root / APP)
    _strip(root / LIB)
    report = verify_tree(root, profile="release")
    assert report.failures == []
    assert report.ok
    assert [(f.path, f.kind) for f in report.files] == [(APP, "exe"), (LIB, "shared-lib")]
    for result in report.files:
        for name, check in result.checks.items():
            expected = (Status.PASS, Status.INFO, Status.WARN) if name == "cet" else (Status.PASS,)
            assert check.status in expected, (result.path, check)
    assert "pie" not in report.file(LIB).checks
    assert "__printf_chk" in _check(report, APP, "fortify").detail


# --- each check can fail ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "status", "fragment"),
    [
        (APP, "relro", Status.FAIL, "PT_GNU_RELRO"),
        (LIB, "relro", Status.FAIL, "PT_GNU_RELRO"),
        (APP, "stack-protector", Status.FAIL, "__stack_chk_fail"),
        (LIB, "stack-protector", Status.WARN, "canary"),
        (APP, "fortify", Status.FAIL, "printf"),
        (LIB, "fortify", Status.FAIL, "snprintf"),
        (APP, "pie", Status.FAIL, "ET_EXEC"),
        (APP, "nx-stack", Status.FAIL, "execstack"),
        (LIB, "nx-stack", Status.FAIL, "execstack"),
        (APP, "rpath", Status.FAIL, "/opt/nowhere"),
        (APP, "debug-info", Status.FAIL, ".symtab"),
    ],
)
def test_unhardened_binaries_fail_each_check(make_root, path, name, status, fragment):
    report = verify_tree(make_root("soft"), profile="release")
    check = _check(report, path, name)
    assert check.status == status
    assert fragment in check.detail
    assert not report.ok
    if status == Status.FAIL:
        assert (path, name, check.detail) in report.failures


def test_cet_is_report_only(make_root):
    report = verify_tree(make_root("soft"), profile="release")
    assert all(check != "cet" for _, check, _ in report.failures)
    assert _check(report, APP, "cet").status in (Status.INFO, Status.WARN, Status.PASS)


def test_partial_relro_fails_without_bind_now(make_root):
    report = verify_tree(make_root("partial"), profile="release")
    check = _check(report, APP, "relro")
    assert check.status == Status.FAIL
    assert "BIND_NOW" in check.detail


def test_library_without_canary_or_libc_calls(tmp_path, built):
    _place(tmp_path, "/usr/local/lib/libplain.so", built["hard/libplain.so"])
    _add_libc(tmp_path, built)
    report = verify_tree(tmp_path, profile="debug")
    assert _check(report, "usr/local/lib/libplain.so", "fortify").status == Status.PASS
    assert _check(report, "usr/local/lib/libplain.so", "stack-protector").status == Status.WARN


# --- debug info per profile -------------------------------------------------------------


def test_release_fails_unstripped_and_passes_after_strip(make_root):
    root = make_root("hard")
    assert _check(verify_tree(root, profile="release"), APP, "debug-info").status == Status.FAIL
    _strip(root / APP)
    assert _check(verify_tree(root, profile="release"), APP, "debug-info").status == Status.PASS


def test_debug_profile_needs_debug_info(make_root):
    root = make_root("debug")
    assert _check(verify_tree(root, profile="debug"), APP, "debug-info").status == Status.PASS
    release = _check(verify_tree(root, profile="release"), APP, "debug-info")
    assert release.status == Status.FAIL and ".debug_info" in release.detail
    _strip(root / APP)
    check = _check(verify_tree(root, profile="debug"), APP, "debug-info")
    assert check.status == Status.FAIL


# --- library resolution stays inside the image ------------------------------------------


def test_missing_needed_library_is_named(make_root):
    root = make_root("hard", lib=False)
    check = _check(verify_tree(root, profile="release"), APP, "needed")
    assert check.status == Status.FAIL
    assert "libgreet.so.1" in check.detail
    assert "libc.so.6" not in check.detail


def test_needed_resolves_in_image_not_on_host(make_root):
    root = make_root("hard", libc=False)
    report = verify_tree(root, profile="release")
    app, lib = _check(report, APP, "needed"), _check(report, LIB, "needed")
    assert app.status == Status.FAIL and "libc.so.6" in app.detail and "interpreter" in app.detail
    assert lib.status == Status.FAIL and "libc.so.6" in lib.detail


def test_needed_found_through_ld_so_conf(make_root, built):
    root = make_root("hard", lib=False)
    _place(root, "/opt/vendor/lib/libgreet.so.1", built["hard/libgreet.so.1"])
    assert _check(verify_tree(root, profile="release"), APP, "needed").status == Status.FAIL
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("# system\ninclude /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/vendor.conf").write_text("/opt/vendor/lib\n")
    assert _check(verify_tree(root, profile="release"), APP, "needed").status == Status.PASS


def test_absolute_rpath_must_exist_in_image(make_root, built):
    root = make_root("abs", lib=False)
    check = _check(verify_tree(root, profile="release"), APP, "rpath")
    assert check.status == Status.FAIL and "/opt/vendor/lib" in check.detail
    _place(root, "/opt/vendor/lib/libgreet.so.1", built["hard/libgreet.so.1"])
    report = verify_tree(root, profile="release")
    assert _check(report, APP, "rpath").status == Status.PASS
    assert _check(report, APP, "needed").status == Status.PASS


# --- which files are checked ------------------------------------------------------------


def test_symlinks_checked_once_and_non_elf_skipped(make_root, built):
    root = make_root("hard")
    _symlink(root, "/usr/local/lib/libgreet.so", "libgreet.so.1")
    _symlink(root, "/usr/local/bin/app-abs", "/usr/local/bin/app")
    _symlink(root, "/usr/local/bin/dangling", "/nowhere")
    (root / "usr/local/bin/script.sh").write_text("#!/bin/sh\necho hi\n")
    _place(root, "/usr/local/lib/libplain.a", built["libplain.a"])
    _place(root, "/usr/local/lib/plain.o", built["plain.o"])
    report = verify_tree(root, profile="release")
    assert [f.path for f in report.files] == [APP, LIB]


# --- profiles from the manifest ---------------------------------------------------------


def _manifest(root: Path, libraries: list[dict]) -> None:
    path = root / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "libraries": libraries}))


def test_profile_from_manifest_single_profile(make_root):
    root = make_root("hard")
    _manifest(root, [{"name": "greet", "version": "1", "profile": "release"}])
    report = verify_tree(root)
    assert {f.profile for f in report.files} == {"release"}
    assert _check(report, APP, "debug-info").status == Status.FAIL


def test_profile_from_manifest_per_file(make_root):
    root = make_root("debug")
    _strip(root / LIB)
    _manifest(
        root,
        [
            {
                "name": "greet",
                "version": "1",
                "profile": "release",
                "files": ["/usr/local/lib/libgreet.so.1"],
            },
            {"name": "app", "version": "1", "profile": "debug", "files": ["bin/app"]},
        ],
    )
    report = verify_tree(root)
    assert report.file(APP).profile == "debug"
    assert report.file(LIB).profile == "release"
    assert report.ok, report.failures


def test_profile_required_when_manifest_is_ambiguous(make_root):
    root = make_root("hard")
    with pytest.raises(ValueError, match="profile"):
        verify_tree(root)
    _manifest(root, [{"name": "a", "profile": "release"}, {"name": "b", "profile": "debug"}])
    with pytest.raises(ValueError, match="usr/local/bin/app"):
        verify_tree(root)
    assert verify_tree(root, profile="release").files
    with pytest.raises(ValueError):
        verify_tree(root, profile="fast")


# --- size and output --------------------------------------------------------------------


def test_check_size():
    assert check_size(50_000_000, 60).status == Status.PASS
    assert check_size(60_000_000, 60).status == Status.PASS  # the budget itself fits
    over = check_size(70_000_000, 60, image="localhost/app:latest", platform="debian")
    assert over.status == Status.FAIL
    assert over.detail.startswith("localhost/app:latest is 70.0 MB, over its size budget of 60 MB on debian "
                                  "by 10.0 MB")
    assert check_size(70_000_000, None).status == Status.INFO
    with pytest.raises(ValueError):
        check_size(-1, 60)


def test_size_budget_per_platform():
    from imagefactory.recipe import Recipe

    class Plain(Recipe):
        size_budget_mb = 300

    class PerPlatform(Recipe):
        size_budget_mb = {"debian": 260, "ubi9": 200}

    assert Plain.size_budget("debian") == Plain.size_budget("ubi9") == 300
    assert (PerPlatform.size_budget("debian"), PerPlatform.size_budget("ubi9")) == (260, 200)
    assert PerPlatform.size_budget("other") is None and Recipe.size_budget("debian") is None


def test_print_report_and_to_dict(make_root):
    report = verify_tree(make_root("soft"), profile="release")
    report.image_checks.append(check_size(90_000_000, 60))
    console = Console(record=True, width=250, color_system=None)
    print_report(report, console)
    text = console.export_text()
    assert "✗" in text and "FAILED" in text
    assert f"{APP}: pie: ET_EXEC" in text
    assert "(image): size: the image is 90.0 MB, over its size budget of 60 MB" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["files"][0]["checks"]["pie"]["status"] == "fail"
    assert {"file": APP, "check": "pie", "detail": _check(report, APP, "pie").detail} in data["failures"]


def test_truncated_elf_is_reported_not_fatal(make_root, built):
    root = make_root("hard")
    (root / "usr/local/bin/broken").write_bytes(built["hard/app"].read_bytes()[:200])
    report = verify_tree(root, profile="release")
    broken = report.file("usr/local/bin/broken")
    assert broken.kind == "invalid"
    assert [(f, c) for f, c, _ in report.failures if f == broken.path] == [(broken.path, "elf")]


def test_objects_do_not_need_a_profile(tmp_path, built):
    _place(tmp_path, "/usr/local/lib/plain.o", built["plain.o"])
    _manifest(tmp_path, [{"name": "a", "profile": "release"}, {"name": "b", "profile": "debug"}])
    assert verify_tree(tmp_path).files == []
