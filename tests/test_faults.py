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
    assert any("interrupted build" in n for n in report["notes"])  # also in the JSON report for CI
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


# --- concurrent builds --------------------------------------------------------------------------
SHARED_PARENT = """
class Shared(Recipe):
    '''parent of both concurrent targets'''
    name = "fault-shared"
    parent = BASE
    def steps(self):
        yield Run("echo SHARED-STARTED; while [ ! -e /gate/go ]; do sleep 0.1; done; date +%s%N > /shared",
                  mounts=(Mount(target="/gate", source=GATE),))

class A(Shared):
    '''first target'''
    name = "fault-a"
    def steps(self):
        yield Run("echo a > /a")

class B(Shared):
    '''second target'''
    name = "fault-b"
    def steps(self):
        yield Run("echo b > /b")
"""


def test_two_builds_of_overlapping_targets_on_one_store(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, SHARED_PARENT)
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe))
    runs = []
    for target in ("fault-a", "fault-b"):
        report = tmp_path / f"{target}.json"
        err = open(tmp_path / f"{target}.err", "w")
        proc = subprocess.Popen([sys.executable, "-m", "imagefactory", "build", target, "--report", str(report),
                                 *tiny_store.args()], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        runs.append((proc, report, tmp_path / f"{target}.err", err))
        if target == "fault-a":
            wait_for_log_text(tiny_store, "SHARED-STARTED", proc)
    first, second = runs
    deadline = time.time() + 30
    while "waiting for image fault-shared" not in second[2].read_text() and time.time() < deadline:
        time.sleep(0.1)
    waiting = " ".join(second[2].read_text().split())
    assert "waiting for image fault-shared" in waiting, waiting  # says what it waits for, and for whom
    assert f"pid {first[0].pid} (build fault-shared" in waiting, waiting
    # `clean` removes images, so it waits for running builds (and says which)
    cleaner = subprocess.Popen([sys.executable, "-m", "imagefactory", "clean", *tiny_store.args()], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    assert cleaner.poll() is None, cleaner.communicate()[0]
    open_gate(tmp_path)
    clean_out = " ".join(cleaner.communicate(timeout=120)[0].split())
    assert cleaner.returncode == 0 and "waiting for the store lock" in clean_out, clean_out
    assert f"pid {first[0].pid} (build fault-shared fault-a" in clean_out, clean_out
    for proc, _, _, err in runs:
        assert proc.wait(timeout=120) == 0
        err.close()
    a, b = (json.loads(r.read_text()) for _, r, _, _ in runs)
    assert a["ok"] and b["ok"]
    shared_a = next(i for i in a["images"] if i["name"] == "fault-shared")
    shared_b = next(i for i in b["images"] if i["name"] == "fault-shared")
    assert shared_a["status"] == "built" and shared_b["status"] == "cached"  # built once, reused, not raced
    assert shared_a["image_id"] == shared_b["image_id"]
    assert tiny_store.containers() == []
    names = image_names(tiny_store)
    assert "localhost/fault-a:latest" in names and "localhost/fault-b:latest" in names


UNRELATED = """
class Blocked(Recipe):
    '''waits for the gate'''
    name = "fault-blocked"
    parent = BASE
    def steps(self):
        yield Run("echo BLOCKED-STARTED; while [ ! -e /gate/go ]; do sleep 0.1; done",
                  mounts=(Mount(target="/gate", source=GATE),))

class Free(Recipe):
    '''shares nothing with Blocked but the base image'''
    name = "fault-free"
    parent = BASE
    def steps(self):
        yield Run("echo free > /free")
"""


def test_builds_of_unrelated_images_on_one_store_do_not_wait_for_each_other(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, UNRELATED)
    blocked = start_build(tiny_store, recipe, "fault-blocked")
    try:
        wait_for_log_text(tiny_store, "BLOCKED-STARTED", blocked)
        report, proc = build_report(tiny_store, recipe, "fault-free", tmp_path=tmp_path)
        assert report["ok"] and blocked.poll() is None  # finished while the other build still runs
        assert "waiting" not in proc.stderr
    finally:
        open_gate(tmp_path)
        blocked.communicate(timeout=120)
    assert blocked.returncode == 0
    assert tiny_store.containers() == []


# --- bad input: a clear error before any container starts ---------------------------------------
def _fails_before_any_container(store, recipe: Path | None, *argv: str, config: Path | None = None,
                                env: dict | None = None) -> str:
    extra = dict(env or {})
    if recipe is not None:
        extra["IMAGEFACTORY_RECIPE_PATHS"] = str(recipe)
    cmd = [*argv, *(["--config", str(config)] if config else [])]
    images_before = set(image_names(store))
    proc = store.cli(*cmd, check=False, env=store.env(**extra))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert store.containers() == []
    assert set(image_names(store)) == images_before, "something was committed before the error"
    return " ".join(proc.stderr.split())  # rich wraps long lines


def test_bad_input_unknown_target(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, SLOW_STEP)
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-slwo")
    assert "unknown target 'fault-slwo'" in err and "fault-slow" in err


def test_bad_input_recipe_cycle(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, """
        from imagefactory import CopyFrom
        class X(Recipe):
            '''x'''
            name = "fault-x"
            parent = BASE
            def steps(self):
                yield CopyFrom("y", "/y", "/y")
        class Y(Recipe):
            '''y'''
            name = "fault-y"
            parent = BASE
            def steps(self):
                yield CopyFrom(X, "/x", "/x")
        X.stages = {"y": Y}
    """)
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-x")
    assert "recipe cycle" in err and "fault-x" in err and "fault-y" in err


def test_bad_input_missing_parent(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, """
        class Abstract(Recipe):
            '''has no name, so it is not an image'''
        class Orphan(Abstract):
            '''its parent is not a buildable recipe'''
            name = "fault-orphan"
            parent = Abstract
    """)
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-orphan")
    assert "fault-orphan" in err and "parent" in err


def test_bad_input_copy_source_missing_in_a_later_image(tiny_store, tmp_path):
    """The parent would build fine; the child's missing file must stop the build before the parent starts."""
    recipe = write_recipe(tmp_path, """
        class Fine(Recipe):
            '''builds'''
            name = "fault-fine"
            parent = BASE
            def steps(self):
                yield Run("echo fine > /fine")
        class Broken(Fine):
            '''copies a file that is not there'''
            name = "fault-broken"
            def steps(self):
                yield Copy("no-such-file.conf", "/etc/x.conf")
    """)
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-broken")
    assert "fault-broken" in err and "no-such-file.conf" in err and "not found" in err


def test_bad_input_source_pin_without_hash(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, """
        from imagefactory.sources import SourcePin
        PIN = SourcePin(library="zlib", version="1.3", license="Zlib", url="https://zlib.example/zlib-1.3.tar.gz",
                        sha256="", filename="zlib-1.3.tar.gz", tree_root="zlib-1.3/", purl="pkg:generic/zlib@1.3")
    """)
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-anything")
    line = recipe.read_text().splitlines().index(next(x for x in recipe.read_text().splitlines() if "PIN =" in x)) + 1
    assert f"{recipe} line {line}" in err
    assert "zlib 1.3 has no sha256" in err and "sha256sum" in err


@pytest.mark.parametrize("text, expected", [
    ("jobs: 2\nisolaton: chroot\n", ["line 2", "unknown setting 'isolaton'", "did you mean 'isolation'"]),
    ("# comment\njobs: many\n", ["line 2", "'jobs'", "many"]),
    ("jobs: 1\n\nisolation: vm\n", ["line 3", "'isolation'", "chroot"]),
    ("trust_host_ca: maybe\n", ["line 1", "trust_host_ca", "yes/no"]),
    ("source_mirrors: {a: 1}\n", ["line 1", "source_mirrors", "expected a list"]),
    ("jobs: [1\n", ["not valid YAML", "line 2"]),
])
def test_bad_input_config_key_or_value_names_file_and_line(tiny_store, tmp_path, text, expected):
    config = tmp_path / "imagefactory.yaml"
    config.write_text(text)
    err = _fails_before_any_container(tiny_store, None, "build", "anything", config=config)
    assert str(config) in err
    for piece in expected:
        assert piece in err, (piece, err)


def test_bad_input_patch_that_does_not_apply_names_patch_and_hunk(tiny_store, tmp_path):
    patches = tmp_path / "patches" / "cjson" / "1.7.19"
    patches.mkdir(parents=True)
    (patches / "0001-good.patch").write_bytes((REPO / "patches" / "cjson" / "1.7.19" /
                                              "0001-cmake-policy-range.patch").read_bytes())
    (patches / "0002-stale.patch").write_text(textwrap.dedent("""\
        --- a/cJSON.h
        +++ b/cJSON.h
        @@ -1,3 +1,3 @@
        -this line is not in cJSON.h
        +neither is this one
         nor this
    """))
    recipe = write_recipe(tmp_path, f"""
        import dataclasses
        from pathlib import Path
        from imagefactory.libraries import BuildLibrary
        from imagefactory.toolchain import RELEASE
        from recipes.libs import CJSON
        SPEC = dataclasses.replace(CJSON, patch_root=Path("{tmp_path / 'patches'}"))
        class Patched(Recipe):
            '''cJSON with a stale patch'''
            name = "fault-patched"
            parent = BASE
            def steps(self):
                yield BuildLibrary(SPEC, RELEASE)
    """)
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-patched")
    assert "0002-stale.patch does not apply" in err and "fault-patched" in err
    assert "Hunk #1 FAILED" in err and "cJSON.h" in err
    assert "0001-good.patch" not in err


def test_bad_input_missing_secret_names_step_and_how_to_pass_it(tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, """
        class Needs(Recipe):
            '''needs a token'''
            name = "fault-needs-secret"
            parent = BASE
            def steps(self):
                yield Run("echo first > /first")
                yield Run("test -s /run/secrets/api_token", secrets=("api_token",))
    """)
    env = {k: v for k, v in tiny_store.env().items() if not k.startswith("IMAGEFACTORY_SECRET_")}
    err = _fails_before_any_container(tiny_store, recipe, "build", "fault-needs-secret", env=env)
    assert "fault-needs-secret" in err and "step 2" in err and "'api_token'" in err
    assert "--secret id=api_token" in err and "IMAGEFACTORY_SECRET_API_TOKEN" in err


# --- secrets ------------------------------------------------------------------------------------
SECRET_RECIPE = """
class WithSecrets(Recipe):
    '''uses a file secret and an env secret, and carelessly prints both'''
    name = "fault-secret"
    parent = BASE
    def steps(self):
        yield Run("busybox sha256sum /run/secrets/api_token > /token.sha; echo token is $(cat /run/secrets/api_token)",
                  secrets=("api_token",))
        yield Run("echo password is $REGISTRY_PASSWORD; echo ${#REGISTRY_PASSWORD} > /password.len",
                  secrets=(Secret("registry_password", env="REGISTRY_PASSWORD"),))
        yield Config(cmd=["cat", "/token.sha"])

class Careless(Recipe):
    '''fails after printing the secret: the failure report must not show it'''
    name = "fault-secret-fail"
    parent = BASE
    def steps(self):
        yield Run("echo leaking $REGISTRY_PASSWORD; false",
                  secrets=(Secret("registry_password", env="REGISTRY_PASSWORD"),))
"""


def _files_containing(folder: Path, needles: list[bytes]) -> list[str]:
    import gzip
    import zlib

    hits = []
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        variants = [data]
        if data[:2] == b"\x1f\x8b":
            try:
                variants.append(gzip.decompress(data))
            except (OSError, EOFError, zlib.error):
                pass
        for needle in needles:
            if any(needle in v for v in variants):
                hits.append(f"{path}: {needle[:6]!r}...")
    return hits


def test_secrets_never_reach_layers_config_history_or_logs(tiny_store, tmp_path):
    import hashlib

    token = "tok-" + os.urandom(12).hex()
    password = "pw-" + os.urandom(12).hex()
    token_file = tmp_path / "token.txt"
    token_file.write_text(token + "\n")
    recipe = write_recipe(tmp_path, SECRET_RECIPE)
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), IMAGEFACTORY_SECRET_REGISTRY_PASSWORD=password)
    report = tmp_path / "report.json"
    ok = tiny_store.cli("build", "fault-secret", "--secret", f"id=api_token,src={token_file}", "--report",
                        str(report), "--verbose", env=env)
    failed = tiny_store.cli("build", "fault-secret-fail", check=False, env=env)
    assert failed.returncode == 1 and "leaking [secret]" in failed.stderr, failed.stderr  # tail shown, scrubbed
    plan = tiny_store.cli("plan", "fault-secret", env=env)
    planned = json.loads(tiny_store.cli("plan", "fault-secret", "--json", env=env).stdout)
    assert [s["secrets"] for s in planned[0]["steps"][:2]] == [["api_token"], ["registry_password"]]

    # the steps really saw the values
    bd = ["buildah", *tiny_store.args()]
    ctr = subprocess.run([*bd, "from", "fault-secret"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        mnt = Path(subprocess.run([*bd, "mount", ctr], capture_output=True, text=True, check=True).stdout.strip())
        assert (mnt / "token.sha").read_text().split()[0] == hashlib.sha256((token + "\n").encode()).hexdigest()
        assert (mnt / "password.len").read_text().strip() == str(len(password))
        leftovers = [p for p in (mnt / "run" / "secrets").rglob("*") if p.is_file() and p.stat().st_size]
        assert leftovers == []
    finally:
        subprocess.run([*bd, "rm", ctr], capture_output=True)

    # every layer (raw and decompressed), the config with its history, labels and env
    export = tmp_path / "oci"
    subprocess.run([*bd, "push", "--disable-compression", "fault-secret", f"oci:{export}"], check=True,
                   capture_output=True)
    needles = [token.encode(), password.encode()]
    blobs = list((export / "blobs").rglob("*"))
    assert len(blobs) >= 3  # index/manifest, config, layers: the search saw the image
    assert _files_containing(export, needles) == []
    # logs, state, reports, the source and secret caches: everything this store's runs wrote
    assert _files_containing(tiny_store.home, needles) == []
    for text in (ok.stdout, ok.stderr, failed.stdout, failed.stderr, plan.stdout, plan.stderr, report.read_text()):
        assert token not in text and password not in text
    logs = "".join(p.read_text() for p in tiny_store.home.rglob("*.log"))
    assert "token is [secret]" in logs and "password is [secret]" in logs  # scrubbed, not silent
    # no secret files are left in the memory-backed scratch folder
    assert not list(Path("/dev/shm").glob("imagefactory-secrets-*"))


# --- a full disk --------------------------------------------------------------------------------
@pytest.fixture
def small_store(tmp_path):
    """A store on a 64 MB tmpfs: steps (and commits) that write more fill the disk."""
    from conftest import Store, make_busybox_base

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    s = Store(mnt / "root", tmp_path / "run", tmp_path / "home")
    for p in (s.root, s.runroot, s.home):
        p.mkdir(parents=True, exist_ok=True)
    try:
        make_busybox_base(s)
        yield s
    finally:
        subprocess.run(["buildah", *s.args(), "rm", "--all"], capture_output=True)
        subprocess.run(["buildah", *s.args(), "rmi", "--all", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", str(mnt)], capture_output=True)


FILLS = """
class Fill(Recipe):
    '''writes SIZE bytes'''
    name = "fault-full"
    parent = BASE
    def steps(self):
        yield Run("echo ok > /ok")
        yield Run("head -c SIZE /dev/zero > /fill")
"""


@pytest.mark.parametrize("size, where", [(200_000_000, "step 2 failed: head -c"), (36_000_000, "step 2 failed: commit")])
def test_disk_full_names_the_step_and_the_store_stays_usable(small_store, tmp_path, size, where):
    """200 MB fails inside the RUN; 36 MB fits in the container but not twice (the commit's copy)."""
    recipe = write_recipe(tmp_path, FILLS.replace("SIZE", str(size)))
    proc = small_store.cli("build", "fault-full", check=False,
                           env=small_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1, err[-3000:]
    assert f"fault-full: {where}" in err, err[-2500:]
    assert "disk is full" in err and str(small_store.root) in err, err[-2500:]  # said plainly, with the path
    # the store is still usable: nothing left behind, and a build that fits succeeds
    assert small_store.containers() == []
    assert not [n for n in image_names(small_store) if "imagefactory-tmp" in n]
    recipe.write_text(recipe.read_text().replace(str(size), "1000000"))
    report, _ = build_report(small_store, recipe, "fault-full", tmp_path=tmp_path)
    assert report["ok"] and report["images"][0]["steps"][0]["status"] == "hit"
