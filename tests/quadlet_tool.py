"""Podman's real Quadlet generator, for checking the units `imagefactory quadlet` writes.

Debian 12's podman (4.3) has no quadlet; trixie's podman package ships
``/usr/libexec/podman/quadlet``, a static-enough binary that runs on Debian 12. ci/setup
downloads that package (``apt-get download podman/trixie``, from a trixie source pinned
at priority 100 so nothing gets upgraded), unpacks it (does not install it) into a private
folder and links the generator as ``/usr/local/libexec/imagefactory/quadlet``.
:func:`quadlet_binary` finds it there (or at ``$IMAGEFACTORY_QUADLET``); without it, it
fetches the package the same way into ``$XDG_CACHE_HOME/imagefactory/tools`` if a trixie
source is configured, and otherwise fails the test with "run ci/setup".
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

QUADLET_IN_PACKAGE = Path("usr/libexec/podman/quadlet")
SETUP_LINK = Path("/usr/local/libexec/imagefactory/quadlet")  # where ci/setup links it
SETUP_HINT = ("podman's quadlet generator (podman >= 4.4) is not available: run ci/setup "
              f"(it unpacks trixie's podman package and links its generator as {SETUP_LINK})")


def tools_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagefactory" / "tools"


def _works(path: Path) -> bool:
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    try:
        proc = subprocess.run([str(path), "-version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    m = re.search(r"(\d+)\.(\d+)", proc.stdout + proc.stderr)
    return proc.returncode == 0 and bool(m) and (int(m.group(1)), int(m.group(2))) >= (4, 4)


def _fetch(dest: Path) -> str | None:
    """apt-get download podman/trixie and unpack it into dest; None when done, else why not."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return "apt-get/dpkg-deb not found"
    debs = tools_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", "podman/trixie"], cwd=debs, capture_output=True, text=True,
                          timeout=600)
    found = sorted(debs.glob("podman_*.deb"), key=lambda p: p.stat().st_mtime)
    if proc.returncode != 0 or not found:
        return (proc.stderr or proc.stdout).strip()[-300:] or "apt-get download podman/trixie failed"
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(tmp)], check=True, capture_output=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return None


def quadlet_binary() -> Path:
    """Path of a working quadlet generator; fails the calling test with "run ci/setup" if none can be had."""
    explicit = os.environ.get("IMAGEFACTORY_QUADLET")
    if explicit:
        if _works(Path(explicit)):
            return Path(explicit)
        pytest.fail(f"IMAGEFACTORY_QUADLET={explicit} is not a working quadlet generator; {SETUP_HINT}")
    unpacked = tools_dir() / "podman-trixie"
    for candidate in (SETUP_LINK, unpacked / QUADLET_IN_PACKAGE, Path("/") / QUADLET_IN_PACKAGE):
        if _works(candidate):
            return candidate
    tools_dir().mkdir(parents=True, exist_ok=True)
    with open(tools_dir() / ".quadlet.lock", "w") as lock:  # xdist workers fetch once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(unpacked / QUADLET_IN_PACKAGE):
            why = _fetch(unpacked)
            if why is not None:
                pytest.fail(f"{SETUP_HINT}\n({why})")
    if not _works(unpacked / QUADLET_IN_PACKAGE):
        pytest.fail(SETUP_HINT)
    return unpacked / QUADLET_IN_PACKAGE


def dry_run(unit_dir: Path) -> dict[str, str]:
    """``quadlet -dryrun`` over unit_dir: generated service file name → its text."""
    binary = quadlet_binary()
    env = dict(os.environ, QUADLET_UNIT_DIRS=str(unit_dir))
    proc = subprocess.run([str(binary), "-dryrun"], capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"quadlet -dryrun failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    services: dict[str, str] = {}
    for m in re.finditer(r"^---(.+?)---\n(.*?)(?=^---.+?---\n|\Z)", proc.stdout, re.S | re.M):
        services[m.group(1)] = m.group(2)
    if not services:
        raise AssertionError(f"quadlet generated no service:\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return services


def unit_value(service: str, key: str) -> list[str]:
    """Every value of KEY= in a generated service (e.g. ExecStart, Restart)."""
    return [line.split("=", 1)[1] for line in service.splitlines() if line.startswith(key + "=")]


def systemd_verify(services: dict[str, str], unit_dir: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify`` over generated services; (exit status, the lines that name them).

    systemd-analyze prints problems (unknown keys, missing executables, bad values) and often still
    exits 0, so callers assert on the lines as well as the status. Lines about other units on the
    host (not written here) are left out.
    """
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: run ci/setup (apt-get install systemd)")
    unit_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in services.items():
        path = unit_dir / name
        path.write_text(text)
        paths.append(str(path))
    proc = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    mine = [line for line in lines if str(unit_dir) in line or any(line.startswith(n + ":") for n in services)]
    return proc.returncode, mine
