"""Shared fixtures: private buildah stores, a tiny busybox base, and the CLI runner.

Every test that touches images uses a private storage root it creates and removes,
so tests never see the user's images and CI leaves nothing behind. End-to-end tests
share ONE store per run (``e2e_store``), built once, run in the ``e2e`` xdist group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SOURCES = (REPO / ".." / "shared" / "sources").resolve()
SCRATCH = Path(os.environ.get("IMAGEFACTORY_TEST_TMP", "/var/tmp"))


@dataclass
class Store:
    """A private buildah storage root plus the settings a CLI call needs to use it."""

    root: Path
    runroot: Path
    home: Path  # cache/state/logs for this store
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the e2e store's SOURCE_DATE_EPOCH

    def args(self) -> list[str]:
        """Storage flags for direct buildah calls: the same driver imagefactory picks (rootless runs
        default to overlay where buildah alone would pick vfs and see an empty store)."""
        args = ["--root", str(self.root), "--runroot", str(self.runroot)]
        from imagefactory import rootless

        if rootless.is_rootless():
            choice = rootless.choose_driver(str(self.root))
            args += ["--storage-driver", choice.driver]
            for opt in choice.options:
                args += ["--storage-opt", opt]
        return args

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "IMAGEFACTORY_SOURCE_MIRRORS": str(SHARED_SOURCES),
        })
        env.update(self.extra_env)
        env.update(extra)
        return env

    def settings(self, **overrides):
        from imagefactory import config

        env = self.env()
        base = {"root": str(self.root), "runroot": str(self.runroot),
                "state_dir": str(self.home / "state"), "log_dir": str(self.home / "logs"),
                "source_cache": str(self.home / "cache" / "imagefactory" / "sources"),
                "source_mirrors": [str(SHARED_SOURCES)]}
        base.update(overrides)
        return config.load(env={k: v for k, v in env.items() if k == "SOURCE_DATE_EPOCH"}, overrides=base)

    def buildah(self):
        from imagefactory.buildah import Buildah, StorageOptions

        return Buildah(StorageOptions(str(self.root), str(self.runroot)))

    def cli(self, *argv: str, check: bool = True, env: dict | None = None, timeout: float = 3600,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``python -m imagefactory ARGV --root ... --runroot ...`` as a user would."""
        cmd = [sys.executable, "-m", "imagefactory", *argv, *self.args()]
        proc = subprocess.run(cmd, cwd=REPO, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                                 f"\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def containers(self) -> list[str]:
        out = subprocess.run(["buildah", *self.args(), "containers", "--quiet", "--all"], capture_output=True,
                             text=True, check=True).stdout
        return [line for line in out.split() if line]

    def destroy(self) -> None:
        subprocess.run(["buildah", *self.args(), "rm", "--all"], capture_output=True)
        subprocess.run(["buildah", *self.args(), "rmi", "--all", "--force"], capture_output=True)
        for d in (self.root / "overlay",):
            subprocess.run(["umount", "-R", str(d)], capture_output=True)
        shutil.rmtree(self.root.parent, ignore_errors=True)


def new_store(tag: str) -> Store:
    base = SCRATCH / f"imagefactory-test-{tag}-{uuid.uuid4().hex[:8]}"
    store = Store(base / "root", base / "run", base / "home")
    for p in (store.root, store.runroot, store.home):
        p.mkdir(parents=True, exist_ok=True)
    return store


def require_tool(name: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: run ci/setup")


@pytest.fixture
def store():
    """A fresh private store for one test."""
    require_tool("buildah")
    s = new_store("unit")
    yield s
    s.destroy()


TINY_BASE = "localhost/imagefactory-test-busybox:latest"


def make_busybox_base(s: Store) -> str:
    """A scratch image holding busybox from Debian's busybox-static: a base that builds in a second."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        pytest.fail("busybox-static is not installed: run ci/setup")
    bd = ["buildah", *s.args()]
    ctr = subprocess.run([*bd, "from", "scratch"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        mnt = Path(subprocess.run([*bd, "mount", ctr], capture_output=True, text=True, check=True).stdout.strip())
        for d in ("bin", "tmp", "etc", "root"):
            (mnt / d).mkdir(exist_ok=True)
        shutil.copy2(busybox, mnt / "bin" / "busybox")
        for applet in ("sh", "ls", "cat", "echo", "sleep", "mkdir", "rm", "touch", "id", "env", "true", "false",
                       "wc", "grep", "sed", "head", "tail", "test", "chmod", "chown", "cp", "adduser", "addgroup"):
            (mnt / "bin" / applet).symlink_to("busybox")
        (mnt / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (mnt / "etc" / "group").write_text("root:x:0:\n")
        subprocess.run([*bd, "umount", ctr], check=True, capture_output=True)
        subprocess.run([*bd, "commit", "--quiet", "--timestamp", "0", ctr, TINY_BASE], check=True,
                       capture_output=True)
    finally:
        subprocess.run([*bd, "rm", ctr], capture_output=True)
    return TINY_BASE


@pytest.fixture
def tiny_store(store):
    """A private store that already holds the busybox base image."""
    make_busybox_base(store)
    return store


# --- end-to-end: one store, built once per run ---------------------------------
# Every e2e build pins its timestamps, so the images the e2e tests build are what a cold build with
# the same epoch gives: `reproduce --against-store` compares against them with ONE more cold build.
# IMAGEFACTORY_E2E_SOURCE_DATE_EPOCH: the epoch of a store reused through IMAGEFACTORY_E2E_ROOT.
E2E_SOURCE_DATE_EPOCH = os.environ.get("IMAGEFACTORY_E2E_SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01


@pytest.fixture(scope="session")
def e2e_store():
    """The store all e2e tests share. IMAGEFACTORY_E2E_ROOT reuses a store across runs (developers)."""
    require_tool("buildah")
    keep = os.environ.get("IMAGEFACTORY_E2E_ROOT")
    epoch = {"SOURCE_DATE_EPOCH": E2E_SOURCE_DATE_EPOCH}
    if keep:
        base = Path(keep)
        s = Store(base / "root", base / "run", base / "home", epoch)
        for p in (s.root, s.runroot, s.home):
            p.mkdir(parents=True, exist_ok=True)
        yield s
        return
    s = new_store("e2e")
    s.extra_env.update(epoch)
    yield s
    s.destroy()
