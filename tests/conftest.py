"""Shared fixtures: private buildah stores, a tiny busybox base, and the CLI runner.

Every test that touches images uses a private storage root it creates and removes,
so tests never see the user's images and CI leaves nothing behind. End-to-end tests
share ONE store per run (``e2e_store``), built once, run in the ``e2e`` xdist group.
Expensive images that several modules read (the library test images) live in a folder
shared by all xdist workers of one run (``shared_folder``): the first worker builds them
under a file lock, the others find them cached, and the controller removes them at the end.
Tests using these fixtures get the markers the fixtures imply (``IMPLIED_MARKERS``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SOURCES = (REPO / ".." / "shared" / "sources").resolve()
SCRATCH = Path(os.environ.get("IMAGEFACTORY_TEST_TMP", "/var/tmp"))
# Knobs of the test harness itself, not imagefactory settings: these survive the scrub below.
HARNESS_VARIABLES = {"IMAGEFACTORY_TEST_TMP", "IMAGEFACTORY_E2E_ROOT", "IMAGEFACTORY_QUADLET",
                     "IMAGEFACTORY_PIPELINE_CHAINS", "IMAGEFACTORY_TEST_SHARED", "IMAGEFACTORY_E2E_SOURCE_DATE_EPOCH"}


def scrub_settings_environment(environ=os.environ) -> list[str]:
    """Drop the caller's IMAGEFACTORY_* settings (a test run inside a CI job inherits the job's
    IMAGEFACTORY_STATE_DIR, IMAGEFACTORY_CACHE_FROM, ...): tests and the CLI processes they start
    must behave the same wherever they run. Each test sets what it needs explicitly."""
    dropped = [k for k in environ if k.startswith("IMAGEFACTORY_") and k not in HARNESS_VARIABLES]
    for key in dropped:
        del environ[key]
    return dropped


scrub_settings_environment()


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


def wait_for_text_in_logs(logs: Path, text: str, proc: subprocess.Popen, *, timeout: float = 60,
                          pattern: str = "*.log") -> None:
    """Wait until a step log under LOGS shows TEXT; fail if the build ends first or it never shows.

    Tests that signal a build "while a step runs" must know the step ran: a wait that merely
    times out would let them signal an idle process and pass for the wrong reason.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in logs.rglob(pattern) if logs.exists() else []:
            if log.is_file() and text in log.read_text(errors="replace"):
                return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"build ended early ({proc.returncode}) before {text!r} appeared in {logs}:\n"
                                 f"{(err or out or '')[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {logs}/**/{pattern} within {timeout:.0f}s")


# --- one folder per test run, shared by the xdist workers -------------------------------
SHARED_ENV = "IMAGEFACTORY_TEST_SHARED"


def pytest_configure(config):
    """The controller (or a run without xdist) names the run's shared folder; workers inherit it."""
    if not hasattr(config, "workerinput"):
        os.environ[SHARED_ENV] = str(SCRATCH / f"imagefactory-test-shared-{uuid.uuid4().hex[:8]}")


def pytest_unconfigure(config):
    """The controller removes the shared stores once every worker is done with them."""
    if hasattr(config, "workerinput"):
        return
    folder = Path(os.environ.get(SHARED_ENV, ""))
    if folder.name.startswith("imagefactory-test-shared-") and folder.is_dir():
        for root in sorted(folder.glob("*/root")):
            Store(root, root.parent / "run", root.parent / "home").destroy()
        shutil.rmtree(folder, ignore_errors=True)


def shared_folder() -> Path:
    folder = Path(os.environ[SHARED_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def run_lock(name: str):
    """An exclusive lock shared by all workers of this run (the first holder builds, the rest reuse)."""
    with open(shared_folder() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def shared_store(name: str) -> Store:
    """A store every worker of this run sees; removed by the controller at the end of the run."""
    base = shared_folder() / name
    store = Store(base / "root", base / "run", base / "home")
    for p in (store.root, store.runroot, store.home):
        p.mkdir(parents=True, exist_ok=True)
    return store


# --- markers follow what a test uses ----------------------------------------------------
# A fixture that needs real buildah, or builds for minutes, marks every test that uses it,
# directly or through another fixture, so `-m "not slow"` can never pick up a hidden build.
IMPLIED_MARKERS = {
    "store": ("buildah",),
    "tiny_store": ("buildah",),
    "small_store": ("buildah",),
    "lib_images": ("buildah", "slow"),
    "arm64_libs": ("buildah", "slow"),  # test_cross.py: cross-compiled libraries in the lib-images store
    "e2e_store": ("buildah", "slow", "e2e"),
}
SHARED_GROUPS = {"lib_images": "lib-images", "arm64_libs": "lib-images", "e2e_store": "e2e"}  # tests of one shared store stay on one worker


@pytest.hookimpl(tryfirst=True)  # before -m deselects and before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        have = {m.name for m in item.iter_markers()}
        for fixture in sorted(used & IMPLIED_MARKERS.keys()):
            for name in IMPLIED_MARKERS[fixture]:
                if name not in have:
                    item.add_marker(name)
                    have.add(name)
        for fixture in sorted(used & SHARED_GROUPS.keys()):
            if "xdist_group" not in have:
                item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS[fixture]))
                have.add("xdist_group")


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


@pytest.fixture(scope="session")
def lib_images():
    """Real cJSON + llhttp builds (lib_images.py): (store, recipes, report, seconds), one build per run."""
    from lib_images import build_lib_images

    return build_lib_images()


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
