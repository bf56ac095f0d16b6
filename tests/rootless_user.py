"""An ordinary user who can run imagefactory from this checkout: for the rootless tests and bench.

Root creates the user (Debian's useradd gives it subordinate ID ranges; they are added if not)
and a venv under /var/tmp with the project's dependencies, because root's own Python may sit
under a 0700 home. The checkout itself is put on PYTHONPATH by the caller.
"""

from __future__ import annotations

import fcntl
import pwd
import shutil
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path("/var/tmp/imagefactory-rootless-venv")


def ensure_user(name: str, *, ranges: bool = True, first_id: int = 300000) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        extra = [] if ranges else ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", *extra, name], check=True, capture_output=True)
    if ranges:
        for kind, path in (("subuids", "/etc/subuid"), ("subgids", "/etc/subgid")):
            if not any(line.startswith(name + ":") for line in Path(path).read_text().splitlines()):
                subprocess.run(["usermod", f"--add-{kind}", f"{first_id}-{first_id + 65535}", name], check=True)


def ensure_venv() -> Path:
    """The venv's python, with pyproject's dependencies and test extras installed (once, under a lock)."""
    with open(str(VENV) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = [str(VENV / "bin" / "python"), "-c", "import sh, tenacity, yaml, rich, elftools, cyclonedx, pytest"]
        if VENV.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
            return VENV / "bin" / "python"
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        deps = [*project["dependencies"], *(d for d in project["optional-dependencies"]["test"]
                                            if d.startswith(("pytest", "pytest-xdist")))]
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *deps], check=True, capture_output=True)
        subprocess.run(["chmod", "-R", "a+rX", str(VENV)], check=True)
    return VENV / "bin" / "python"
