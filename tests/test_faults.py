"""Fault injection: killed builds, concurrent builds, bad input, secrets, a full disk.

Every case runs the real CLI against real buildah in a private store, breaks something on
purpose, and then checks what a CI job cares about: a clear message naming what broke,
no leftover working containers or half-written cache entries, and a next run that succeeds.
Network faults (a flaky HTTP mirror, an unreachable apt mirror) live in test_faults_network.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_BASE

pytestmark = [pytest.mark.buildah, pytest.mark.faults]


def write_recipe(folder: Path, body: str, name: str = "faulty.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run, Copy, Config, Secret, Mount
        BASE = "{TINY_BASE}"
        GATE = "{folder}"
    """) + textwrap.dedent(body))
    return path


def start_build(store, recipe: Path, *targets: str, extra_env: dict | None = None) -> subprocess.Popen:
    env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "imagefactory", "build", *targets, *store.args()],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_log_text(store, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    logs = store.home / "cache" / "imagefactory" / "logs"
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in logs.rglob("*.log") if logs.exists() else []:
            if text in log.read_text(errors="replace"):
                return
        if proc.poll() is not None:
            raise AssertionError(f"build ended early ({proc.returncode}): {proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the step logs")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (buildah, its chroot child, the step's commands)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def processes_using(store) -> list[str]:
    """Command lines of live processes that name this store's root (orphaned buildah calls)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(store.root) in text and "buildah" in text:
            found.append(text)
    return found


def wait_gone(store, timeout: float = 30) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline and processes_using(store):
        time.sleep(0.2)
    return processes_using(store)


def image_names(store) -> list[str]:
    return [n for r in store.buildah().images() for n in r.names]


def build_report(store, recipe: Path, *targets: str, tmp_path: Path, check: bool = True) -> tuple[dict, object]:
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    proc = store.cli("build", *targets, "--report", str(report), check=check,
                     env=store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
    return (json.loads(report.read_text()) if report.exists() else {}), proc


# The slow step waits for a file the test creates in a bind-mounted folder (mount sources are
# not part of the cache key), so it runs until the test says go - or forever, if orphaned.
SLOW_STEP = """
class Slow(Recipe):
    '''a step that runs until the test lets it finish'''
    name = "fault-slow"
    parent = BASE
    def steps(self):
        yield Run("echo fast-step > /fast")
        yield Run("echo STEP-STARTED; while [ ! -e /gate/go ]; do sleep 0.1; done; echo done > /done",
                  mounts=(Mount(target="/gate", source=GATE),))
        yield Config(cmd=["cat", "/done"])
"""


def open_gate(folder: Path) -> None:
    (folder / "go").write_text("")


# --- killed builds ------------------------------------------------------------------------------
def test_sigkill_of_imagefactory_during_a_run_step_then_rebuild(tiny_store, tmp_path):
    """kill -9 of the Python process only: buildah must not live on, the next run cleans up and
    reruns the step (never reusing it), and finishes."""
    recipe = write_recipe(tmp_path, SLOW_STEP)
    proc = start_build(tiny_store, recipe, "fault-slow")
    wait_for_log_text(tiny_store, "STEP-STARTED", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert wait_gone(tiny_store, timeout=10) == [], "buildah outlived the killed build"
    left = tiny_store.containers()
    assert left, "the kill should have left the working container behind (else this test proves nothing)"
    open_gate(tmp_path)

    report, proc = build_report(tiny_store, recipe, "fault-slow", tmp_path=tmp_path)
    assert report["ok"]
    steps = report["images"][0]["steps"]
    assert [s["status"] for s in steps[:2]] == ["hit", "run"], steps  # step 1 was committed, step 2 was not
    assert "interrupted build" in proc.stderr
    assert tiny_store.containers() == []
    out = subprocess.run(["buildah", *tiny_store.args(), "from", "fault-slow"], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        mnt = subprocess.run(["buildah", *tiny_store.args(), "mount", out], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert Path(mnt, "done").read_text() == "done\n"
    finally:
        subprocess.run(["buildah", *tiny_store.args(), "rm", out], capture_output=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_remove_the_container_at_once(tiny_store, tmp_path, sig):
    recipe = write_recipe(tmp_path, SLOW_STEP)
    proc = start_build(tiny_store, recipe, "fault-slow")
    wait_for_log_text(tiny_store, "STEP-STARTED", proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert tiny_store.containers() == []
    assert wait_gone(tiny_store) == []
    assert not [n for n in image_names(tiny_store) if "imagefactory-tmp" in n]


BIG_COMMIT = """
class Big(Recipe):
    '''a layer big enough that committing it takes a while'''
    name = "fault-big"
    parent = BASE
    def steps(self):
        yield Run("head -c 400000000 /dev/zero > /big && echo WROTE-BIG")
        yield Run("echo after > /after")
"""


def _buildah_commit_running(store) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"commit" in argv and str(store.root).encode() in argv and argv[0].endswith(b"buildah"):
            pids.append(int(cmdline.parent.name))
    return pids


def test_sigkill_of_the_whole_job_during_a_commit_then_rebuild(tiny_store, tmp_path):
    """A CI runner killing the job's process tree while buildah commits a 400 MB layer."""
    recipe = write_recipe(tmp_path, BIG_COMMIT)
    proc = start_build(tiny_store, recipe, "fault-big")
    deadline = time.time() + 120
    while time.time() < deadline and not _buildah_commit_running(tiny_store):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    assert _buildah_commit_running(tiny_store), "never saw the commit start"
    time.sleep(0.3)
    killed = proc.pid
    victims = [killed, *descendants(killed)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=30)
    assert wait_gone(tiny_store) == []
    assert list(tiny_store.home.rglob(f"p{killed}")), "the killed commit should have left scratch files"
    cache_before = [n for n in image_names(tiny_store) if n.startswith("localhost/imagefactory-cache:")]
    assert cache_before == [], f"a cache entry appeared for a step whose commit was killed: {cache_before}"

    report, proc = build_report(tiny_store, recipe, "fault-big", tmp_path=tmp_path)
    assert report["ok"]
    assert report["images"][0]["steps"][0]["status"] == "run"
    assert tiny_store.containers() == []
    assert not [n for n in image_names(tiny_store) if "imagefactory-tmp" in n]
    assert not list(tiny_store.home.rglob(f"p{killed}")), "the killed commit's scratch files were kept"
    # and the store is consistent: the no-op rebuild hits every step
    again, _ = build_report(tiny_store, recipe, "fault-big", tmp_path=tmp_path)
    assert all(s["status"].endswith("hit") for s in again["images"][0]["steps"])
