"""verify on arm64 files: real aarch64 binaries from Debian's cross compiler, checked by arm64 rules.

BTI/PAC markings (GNU_PROPERTY_AARCH64_FEATURE_1_AND) replace the x86 CET check; the linker keeps
a marking only when every input carries it, so objects linked without crt files show the marking
our flags give, and ordinary programs show what the distribution's crt files allow.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from imagefactory.verify import Status, check_bti_pac, control_flow_check, read_elf, verify_file, verify_tree

CC = "aarch64-linux-gnu-gcc"
CROSS_LIBC = Path("/usr/aarch64-linux-gnu/lib")
SRC = Path(__file__).parent / "data" / "verify"
HARD = ["-O2", "-g", "-D_FORTIFY_SOURCE=3", "-fstack-protector-strong", "-fstack-clash-protection",
        "-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack"]
LEAF = "int leaf(int x) { return x + 1; }\n"


def _cc(*args: object) -> None:
    proc = subprocess.run([CC, *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _marking(path: Path) -> int:
    with path.open("rb") as fh:
        for section in ELFFile(fh).iter_sections():
            if isinstance(section, NoteSection):
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_PROPERTY_TYPE_0":
                        for prop in note["n_desc"]:
                            if prop["pr_type"] == "GNU_PROPERTY_AARCH64_FEATURE_1_AND":
                                return prop["pr_data"]
    return 0


@pytest.fixture(scope="module")
def arm64(tmp_path_factory) -> Path:
    """Leaf shared objects with and without branch protection, and hardened/unhardened programs."""
    require_tool(CC)  # ci/setup installs the cross compiler; missing fails, never skips
    out = tmp_path_factory.mktemp("arm64")
    (out / "leaf.c").write_text(LEAF)
    # no crt files, no libc: the marking is exactly what -mbranch-protection gave the object
    for name, flag in (("standard", "-mbranch-protection=standard"), ("pac", "-mbranch-protection=pac-ret"),
                       ("none", "-mbranch-protection=none")):
        _cc("-O2", flag, "-fPIC", "-shared", "-nostdlib", "-Wl,-z,relro,-z,now,-z,noexecstack",
            out / "leaf.c", "-o", out / f"libleaf-{name}.so")
    _cc(*HARD, "-mbranch-protection=standard", "-fPIC", "-shared", "-Wl,-soname,libgreet.so.1",
        SRC / "greet.c", "-o", out / "libgreet.so.1")
    _cc(*HARD, "-mbranch-protection=standard", "-fPIE", "-pie", "-Wl,-rpath,$ORIGIN/../lib", SRC / "app.c",
        out / "libgreet.so.1", "-o", out / "app")
    _cc("-O0", "-fno-stack-protector", "-no-pie", "-Wl,-z,norelro,-z,lazy,-z,execstack", SRC / "app.c",
        out / "libgreet.so.1", "-o", out / "soft-app")
    return out


def _facts(path: Path):
    return read_elf(path, f"/usr/local/lib/{path.name}")


def test_bti_and_pac_markings_are_read_from_the_gnu_property_note(arm64):
    standard = _facts(arm64 / "libleaf-standard.so")
    assert standard.machine == "EM_AARCH64" and standard.aarch64_features == 0x3 and standard.x86_features is None
    assert check_bti_pac(standard) == control_flow_check(standard)
    assert check_bti_pac(standard).status == Status.PASS and "BTI and PAC" in check_bti_pac(standard).detail
    pac = check_bti_pac(_facts(arm64 / "libleaf-pac.so"))
    assert (pac.status, pac.detail) == (Status.WARN, "only PAC marked")
    none = check_bti_pac(_facts(arm64 / "libleaf-none.so"))
    assert none.status == Status.INFO and "report only" in none.detail


def test_x86_files_keep_the_cet_check():
    require_tool("gcc")
    x86 = read_elf(Path(shutil.which("gcc")).resolve(), "/usr/bin/gcc")
    if x86.machine != "EM_X86_64":
        pytest.fail("this test compares with the build machine's x86-64 files: run it on amd64")
    assert control_flow_check(x86).name == "cet"
    assert check_bti_pac(x86).status == Status.INFO and "not applicable" in check_bti_pac(x86).detail


def _root(tmp: Path, arm64: Path, app: str) -> Path:
    """A fake arm64 image: the program and libgreet in /usr/local, the cross libc at its multiarch path."""
    root = tmp / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/lib").mkdir(parents=True)
    (root / "lib/aarch64-linux-gnu").mkdir(parents=True)
    shutil.copy2(arm64 / app, root / "usr/local/bin/app")
    shutil.copy2(arm64 / "libgreet.so.1", root / "usr/local/lib/libgreet.so.1")
    for name in ("libc.so.6", "ld-linux-aarch64.so.1"):
        shutil.copy2((CROSS_LIBC / name).resolve(), root / "lib/aarch64-linux-gnu" / name)
    (root / "lib/ld-linux-aarch64.so.1").symlink_to("/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")
    return root


def test_a_hardened_arm64_tree_passes_with_arm64_expectations(tmp_path, arm64):
    report = verify_tree(_root(tmp_path, arm64, "app"), profile="debug")
    assert {f.path for f in report.files} == {"usr/local/bin/app", "usr/local/lib/libgreet.so.1"}
    # what the distribution's crt files allow: marked only when all of them are (report only either way)
    crt = [CROSS_LIBC / n for n in ("crti.o", "crtn.o", "Scrt1.o")]
    crt_marked = all(_marking(p) & 0x3 == 0x3 for p in crt)
    for f in report.files:
        assert "cet" not in f.checks
        assert f.checks["bti-pac"].status == (Status.PASS if crt_marked else Status.INFO), f.checks["bti-pac"]
        for name in ("relro", "nx-stack", "fortify", "stack-protector", "rpath"):
            assert f.checks[name].status == Status.PASS, (f.path, f.checks[name])
    app = report.file("usr/local/bin/app")
    assert app.kind == "exe" and app.checks["pie"].status == Status.PASS
    assert app.checks["needed"].status == Status.PASS  # libgreet via $ORIGIN, libc at /lib/aarch64-linux-gnu
    assert report.ok, report.failures


def test_an_unhardened_arm64_program_fails_and_an_x86_libc_does_not_count(tmp_path, arm64):
    root = _root(tmp_path, arm64, "soft-app")
    result = verify_file(root, root / "usr/local/bin/app", "/usr/local/bin/app", "debug")
    for name in ("relro", "pie", "nx-stack", "stack-protector"):
        assert result.checks[name].status == Status.FAIL, (name, result.checks[name])
    assert result.checks["needed"].status == Status.PASS  # libgreet in /usr/local/lib, libc in the arm64 path
    # the build machine's libc at the arm64 path is skipped, as ld.so skips another machine's files
    require_tool("gcc")
    host_libc = subprocess.run(["gcc", "-print-file-name=libc.so.6"], capture_output=True, text=True).stdout.strip()
    shutil.copy2(Path(host_libc).resolve(), root / "lib/aarch64-linux-gnu/libc.so.6")
    again = verify_file(root, root / "usr/local/bin/app", "/usr/local/bin/app", "debug")
    assert again.checks["needed"].status == Status.FAIL and "libc.so.6" in again.checks["needed"].detail
    assert "libgreet.so.1" not in again.checks["needed"].detail
