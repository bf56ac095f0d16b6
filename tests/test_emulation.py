"""binfmt_misc / qemu-user checks for doctor: the parsing on copies of real handler files, and this machine."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool

from imagefactory.arches import get_arch
from imagefactory.emulation import (BINFMT_MISC, EmulationError, binfmt_status, doctor_rows, enable_commands,
                                    require_emulation, required_rows)

AMD64 = get_arch("amd64")
# /proc/sys/fs/binfmt_misc/qemu-aarch64 as Debian's qemu-user-static registers it
HANDLER = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def _folder(tmp_path: Path, *, mounted=True, status="enabled", handler: str | None = HANDLER) -> Path:
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    if mounted:
        (folder / "register").write_text("")
        (folder / "status").write_text(status + "\n")
        if handler is not None:
            (folder / "qemu-aarch64").write_text(handler)
    return folder


def test_a_registered_fix_binary_handler_is_ok(tmp_path):
    folder = _folder(tmp_path)
    status = binfmt_status("aarch64", folder)
    assert status.ok and status.flags == "PF" and status.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert enable_commands("arm64", status) == []
    require_emulation("arm64", folder, build=AMD64)
    assert doctor_rows(["amd64", "arm64"], folder, build=AMD64) == [
        ("qemu arm64", True, "qemu-aarch64 enabled, flags PF, /usr/libexec/qemu-binfmt/aarch64-binfmt-P", "")]


@pytest.mark.parametrize("kind, folder_args, problem, commands", [
    ("unmounted", {"mounted": False}, "binfmt_misc is not mounted",
     ["apt-get install qemu-user-static binfmt-support", f"mount -t binfmt_misc binfmt_misc {BINFMT_MISC}",
      f"echo 1 > {BINFMT_MISC}/status", "update-binfmts --enable qemu-aarch64"]),
    ("not installed", {"handler": None}, "no qemu-aarch64 handler registered",
     ["apt-get install qemu-user-static binfmt-support", "update-binfmts --enable qemu-aarch64"]),
    ("disabled", {"handler": HANDLER.replace("enabled", "disabled", 1)}, "registered but disabled",
     ["update-binfmts --enable qemu-aarch64"]),
    ("no F", {"handler": HANDLER.replace("flags: PF", "flags: P")}, "lacks the fix-binary flag (flags: P)",
     [f"echo -1 > {BINFMT_MISC}/qemu-aarch64", "update-binfmts --enable qemu-aarch64"]),
    ("switched off", {"status": "disabled"}, "binfmt_misc is disabled",
     [f"echo 1 > {BINFMT_MISC}/status", "update-binfmts --enable qemu-aarch64"]),
])
def test_each_problem_is_named_with_the_commands_that_fix_it(tmp_path, kind, folder_args, problem, commands):
    folder = _folder(tmp_path, **folder_args)
    status = binfmt_status("arm64", folder)
    assert not status.ok and problem in status.describe()
    assert enable_commands("arm64", status) == commands
    # configured: a failing row that doctor requires; not configured: a warning on an ok row
    (row,) = doctor_rows(["amd64", "arm64"], folder, build=AMD64)
    assert row[:3] == ("qemu arm64", False, status.describe()) and "; ".join(commands) in row[3]
    (warn,) = doctor_rows(["amd64"], folder, build=AMD64)
    assert warn[1] is True and warn[2].startswith("warning: ") and "needed only for --arch arm64" in warn[2]
    assert required_rows(["amd64", "arm64"], build=AMD64) == {"qemu arm64"}
    assert required_rows(["amd64"], build=AMD64) == set()
    # a build for arm64 stops before it starts, saying what is wrong and what to run
    with pytest.raises(EmulationError, match=f"cannot build for arm64 on this amd64 machine: .*{re.escape(problem)}.*As root: "):
        require_emulation("arm64", folder, build=AMD64)
    require_emulation("amd64", folder, build=AMD64)  # the build machine's own architecture needs nothing


def test_this_machine_runs_arm64_programs(tmp_path):
    """ci/setup registers qemu-aarch64 with F: doctor says so, and an arm64 program really runs."""
    if platform.machine() != "x86_64":
        pytest.fail("the emulation test expects an amd64 build machine (ci/setup sets up arm64 emulation there)")
    (row,) = doctor_rows(["amd64", "arm64"])
    assert row[1], f"{row[2]}: {row[3]}"
    require_tool("aarch64-linux-gnu-gcc")
    (tmp_path / "hi.c").write_text('#include <stdio.h>\nint main(void) { puts("hello from arm64"); return 7; }\n')
    subprocess.run(["aarch64-linux-gnu-gcc", "-O2", str(tmp_path / "hi.c"), "-o", str(tmp_path / "hi")], check=True)
    proc = subprocess.run([str(tmp_path / "hi")], capture_output=True, text=True, timeout=60,
                          env={"QEMU_LD_PREFIX": "/usr/aarch64-linux-gnu"})
    assert (proc.returncode, proc.stdout) == (7, "hello from arm64\n"), proc.stderr
