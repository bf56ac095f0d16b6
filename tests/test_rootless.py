"""The factory as an ordinary user: CI (root) creates a user with subordinate ID ranges and runs as it.

- ``doctor`` as that user, and as a user without ranges (it must say exactly what to fix);
- the engine and fault-injection suites, run by that user inside ``buildah unshare`` (as a library
  user would run code that mounts images);
- one real library build through the CLI (which re-runs itself in the user namespace, bootstraps
  with mmdebstrap and picks the storage driver), then ownership of the users' folders in the
  exported layers and the ELF hardening check.
"""

from __future__ import annotations

import os
import json
import pwd
import shutil
import subprocess
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest

from conftest import REPO, SHARED_SOURCES, wait_for_text_in_logs
from rootless_user import VENV, ensure_user, ensure_venv

# one worker for the module: its tests share the test users, which two workers would race to create
pytestmark = [pytest.mark.buildah, pytest.mark.rootless, pytest.mark.xdist_group("rootless")]

USER = "imagefactory-rl"
NOSUB_USER = "imagefactory-nosub"
class AsUser:
    """Runs commands as the test user, with a clean environment and a private work folder."""

    def __init__(self, name: str, work: Path):
        self.name = name
        self.work = work
        self.home = Path(pwd.getpwnam(name).pw_dir)

    def env(self, **extra: str) -> list[str]:
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8",
               "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(REPO),
               "XDG_CACHE_HOME": str(self.work / "cache"), "XDG_RUNTIME_DIR": str(self.work / "run"), "IMAGEFACTORY_SOURCE_MIRRORS": str(SHARED_SOURCES),
               "IMAGEFACTORY_TEST_TMP": str(self.work / "tmp"), "PYTHONDONTWRITEBYTECODE": "1",
               # the checkout belongs to root: let git (revision labels) read it anyway
               "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
        env.update(extra)
        return [f"{k}={v}" for k, v in env.items()]

    def run(self, *argv: str, check: bool = True, timeout: float = 1800, **env: str) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", self.name, "--", "env", "-i", *self.env(**env), *argv]
        proc = subprocess.run(cmd, cwd=self.work, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-5000:]}"
                                 f"\n--- stderr\n{proc.stderr[-5000:]}")
        return proc

    def cli(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.run("python", "-m", "imagefactory", *argv, **kw)

    def cleanup(self) -> None:
        """The user's stores hold files owned by its subordinate IDs: remove them from inside the namespace."""
        self.run("buildah", "unshare", "rm", "-rf", str(self.work / "store"), str(self.work / "tmp"),
                 str(self.work / "run"), check=False)
        shutil.rmtree(self.work, ignore_errors=True)
        uid = pwd.getpwnam(self.name).pw_uid  # buildah's fallback runtime folders, if it made any
        for leftover in (f"/var/tmp/containers-user-{uid}", f"/var/tmp/podman-run-{uid}"):
            shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture(scope="module")
def user():
    for tool in ("buildah", "newuidmap", "mmdebstrap", "runuser"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            pytest.fail(f"{tool} is not installed: run ci/setup")
    ensure_user(USER)
    ensure_venv()
    work = Path("/var/tmp") / f"imagefactory-rootless-{uuid.uuid4().hex[:8]}"
    for sub in ("tmp", "run"):
        (work / sub).mkdir(parents=True, mode=0o700)
        shutil.chown(work / sub, USER, USER)
    shutil.chown(work, USER, USER)
    u = AsUser(USER, work)
    yield u
    u.cleanup()


def test_doctor_as_an_ordinary_user(user, tmp_path):
    report = user.work / "doctor.json"
    proc = user.cli("doctor", "--root", str(user.work / "store" / "root"), "--runroot",
                    str(user.work / "store" / "run"), "--report", str(report), check=False)
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    for name in ("rootless subuid", "rootless subgid", "rootless newuidmap", "rootless newgidmap", "user namespaces",
                 "rootless namespace"):
        assert checks[name]["ok"], checks[name]
    assert "2 ID range(s) mapped" in checks["rootless namespace"]["detail"]
    assert checks["rootless subuid"]["detail"].startswith(f"{USER}:")
    driver = checks["storage driver"]["detail"]
    assert driver.startswith(("overlay", "vfs")) and ("kernel" in driver or "already uses" in driver)
    assert "rootless" in checks["storage"]["detail"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_user_without_subordinate_ids_is_told_what_to_fix(tmp_path):
    ensure_user(NOSUB_USER, ranges=False)
    for path in ("/etc/subuid", "/etc/subgid"):
        assert not any(line.startswith(NOSUB_USER + ":") for line in Path(path).read_text().splitlines())
    ensure_venv()
    work = Path("/var/tmp") / f"imagefactory-nosub-{uuid.uuid4().hex[:8]}"
    (work / "run").mkdir(parents=True, mode=0o700)
    shutil.chown(work / "run", NOSUB_USER, NOSUB_USER)
    shutil.chown(work, NOSUB_USER, NOSUB_USER)
    u = AsUser(NOSUB_USER, work)
    try:
        doctor = u.cli("doctor", "--report", str(work / "doctor.json"), check=False)
        assert doctor.returncode == 1
        checks = {c["name"]: c for c in json.loads((work / "doctor.json").read_text())["checks"]}
        assert not checks["rootless subuid"]["ok"] and not checks["rootless subgid"]["ok"]
        assert not checks["rootless namespace"]["ok"]  # buildah only warns; the real map shows the problem
        assert "usermod --add-subuids" in checks["rootless subuid"]["fix"]
        assert NOSUB_USER in checks["rootless subuid"]["fix"]
        build = u.cli("build", "ci", check=False)
        err = " ".join(build.stderr.split())
        assert build.returncode == 2 and "subordinate IDs" in err and "usermod --add-subuids" in err, err
        assert "Traceback" not in build.stderr
    finally:
        u.cleanup()


@pytest.mark.slow
def test_engine_and_fault_suites_as_an_ordinary_user(user):
    """The core integration cases, unchanged, run by the user in buildah's user namespace."""
    proc = user.run("buildah", "unshare", "--", "python", "-m", "pytest", "-p", "no:cacheprovider", "-q",
                    "-o", "addopts=", "-x", "--basetemp", str(user.work / "tmp" / "pytest"), str(REPO / "tests" / "test_engine.py"),
                    str(REPO / "tests" / "test_faults.py"), check=False, timeout=1500)
    tail = proc.stdout[-4000:]
    assert proc.returncode == 0, tail + proc.stderr[-3000:]
    assert " passed" in tail and "skipped" not in tail and "failed" not in tail


LIB_RECIPE = """
from imagefactory import AddUser, Install, Recipe, Run
from imagefactory.libraries import BUILD_DEPS, BuildLibrary
from imagefactory.toolchain import RELEASE
from recipes.libs import CJSON

class RootlessLib(Recipe):
    '''cJSON compiled from source by an ordinary user, plus a non-root user with a workspace'''
    name = "rootless-cjson"
    base = "slim"
    def steps(self):
        yield Install(*BUILD_DEPS)
        yield BuildLibrary(CJSON, RELEASE)
        yield AddUser("dev", uid=1000, owns=("/workspace",))
        yield Run("echo notes > /workspace/notes.txt && chown 1000:1000 /workspace/notes.txt")
"""


@pytest.mark.slow
def test_real_library_build_as_an_ordinary_user(user):
    recipes = user.work / "recipes"
    recipes.mkdir()
    (recipes / "rootless_lib.py").write_text(textwrap.dedent(LIB_RECIPE))
    subprocess.run(["chmod", "-R", "a+rX", str(recipes)], check=True)
    store = ["--root", str(user.work / "store" / "root"), "--runroot", str(user.work / "store" / "run")]
    report = user.work / "build.json"
    user.cli("build", "rootless-cjson", *store, "--report", str(report),
             IMAGEFACTORY_RECIPE_PATHS=str(recipes))
    data = json.loads(report.read_text())
    assert data["ok"] and data["containers_started"] > 0
    steps = {s["kind"] for img in data["images"] for s in img["steps"]}
    assert "bootstrap" in steps and "library" in steps
    # a no-op rebuild as the user: everything cached
    again = user.cli("build", "rootless-cjson", *store, "--report", str(report),
                     IMAGEFACTORY_RECIPE_PATHS=str(recipes))
    assert json.loads(report.read_text())["containers_started"] == 0, again.stderr[-2000:]
    # hardening of what was compiled, checked by mounting the image inside the namespace
    user.cli("verify", "rootless-cjson", "--profile", "release", *store, IMAGEFACTORY_RECIPE_PATHS=str(recipes))
    # ownership in the layers a registry would receive: the image's IDs, not the builder's mapped ones
    export = user.work / "oci"
    user.run("buildah", *store, "--storage-driver", _driver(user, store), "push", "-q", "-D",
             "rootless-cjson", f"oci:{export}")
    owners = _owners(export, {"home/dev", "workspace", "workspace/notes.txt", "usr/local/lib/libcjson.so.1.7.19"})
    assert owners["home/dev"] == (1000, 1000)
    assert owners["workspace"] == (1000, 1000)
    assert owners["workspace/notes.txt"] == (1000, 1000)
    assert owners["usr/local/lib/libcjson.so.1.7.19"] == (0, 0)


def _driver(user: AsUser, store: list[str]) -> str:
    root = Path(store[1])
    return "overlay" if (root / "overlay-images").exists() else "vfs"


def _owners(oci: Path, wanted: set[str]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for blob in sorted((oci / "blobs" / "sha256").iterdir()):
        try:
            with tarfile.open(blob) as tar:
                for member in tar:
                    name = member.name.lstrip("./").rstrip("/")
                    if name in wanted:
                        found[name] = (member.uid, member.gid)  # later layers win, as in the image
        except tarfile.TarError:
            continue
    missing = wanted - set(found)
    assert not missing, f"not in any layer: {missing}"
    return found


SLOW_RECIPE = """
from imagefactory import Recipe, Run

class Slow(Recipe):
    '''a step that runs until it is cancelled'''
    name = "rootless-slow"
    parent = "localhost/rootless-busybox:latest"
    def steps(self):
        yield Run("echo STEP-STARTED; sleep 300")
"""


def test_sigterm_to_the_outer_process_cancels_the_build_inside_the_namespace(user):
    """A CI runner cancelling the job signals the process it started: `buildah unshare`, not the
    imagefactory copy inside it. That copy must notice, remove its container and end."""
    import time

    store = ["--root", str(user.work / "slowstore" / "root"), "--runroot", str(user.work / "slowstore" / "run")]
    rootfs = user.work / "busybox-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "echo", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run(["chmod", "-R", "a+rX", str(rootfs)], check=True)
    ctr = user.run("buildah", *store, "from", "scratch").stdout.strip()
    user.run("buildah", *store, "copy", ctr, str(rootfs), "/")
    user.run("buildah", *store, "commit", "-q", ctr, "localhost/rootless-busybox:latest")
    user.run("buildah", *store, "rm", ctr)
    recipes = user.work / "slow-recipes"
    recipes.mkdir()
    (recipes / "slow.py").write_text(textwrap.dedent(SLOW_RECIPE))
    subprocess.run(["chmod", "-R", "a+rX", str(recipes)], check=True)

    cmd = ["runuser", "-u", user.name, "--", "env", "-i", *user.env(IMAGEFACTORY_RECIPE_PATHS=str(recipes)),
           "python", "-m", "imagefactory", "build", "rootless-slow", *store]
    proc = subprocess.Popen(cmd, cwd=user.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the step must be running inside the namespace when the job is cancelled, or the test proves nothing
    wait_for_text_in_logs(user.work / "cache" / "imagefactory" / "logs", "STEP-STARTED", proc, timeout=120)
    outer = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline")
             if _cmdline(p)[:1] and _cmdline(p)[0].endswith("buildah") and "unshare" in _cmdline(p)
             and str(user.work / "slowstore") in " ".join(_cmdline(p))]
    assert len(outer) == 1, outer
    os.kill(outer[0], 15)
    proc.communicate(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and _user_processes(user.name):
        time.sleep(0.2)
    assert _user_processes(user.name) == [], "the build went on after its job was cancelled"
    assert user.run("buildah", *store, "containers", "-q").stdout.split() == []


def _cmdline(path: Path) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in path.read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _user_processes(name: str) -> list[str]:
    uid = pwd.getpwnam(name).pw_uid
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        real_uid = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Uid:")), None)
        if real_uid == uid:
            out.append(" ".join(_cmdline(status.parent / "cmdline")))
    return out
