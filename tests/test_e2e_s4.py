"""S4 end to end: build both stages for real, then run the image with podman and use it.

One module-scoped build in the shared e2e store; the service checks run one container
as an arbitrary UID in group 0 (as OpenShift would), talk S3 with boto3 and HTTP to the
app on 127.0.0.1 only, and always remove their containers and volumes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import REPO, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

IMAGE = "localhost/s4:latest"
SUPERVISORCTL = ["supervisorctl", "-c", "/etc/supervisor/supervisord.conf"]
# Keys for this test only: proves the image's demo defaults are overridable.
ACCESS_KEY = "e2e-access-key"
SECRET_KEY = "e2e-secret-key-0123456789"


# --- build ---------------------------------------------------------------------
def _head() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def s4_build(e2e_store, tmp_path_factory):
    """Build s4 (builder + runtime); return the first build's report and a no-op rebuild's report.

    The final images carry the git revision as a label, so a commit landing between two builds
    re-labels them (one config commit each): then build once more with HEAD still.
    """
    out = tmp_path_factory.mktemp("s4-build")

    def build(i: int) -> dict:
        path = out / f"build{i}.json"
        t0 = time.monotonic()
        e2e_store.cli("build", "s4", "--report", str(path), timeout=3600)
        data = json.loads(path.read_text())
        data["wall_seconds"] = round(time.monotonic() - t0, 1)
        return data

    head = _head()
    first = build(1)
    for img in first["images"]:
        print(f"s4 build: {img['name']}: {img['status']} in {img['seconds']:.0f}s, {img['size'] / 1e6:.0f} MB")
    for i in (2, 3):
        again = build(i)
        if _head() == head:
            break
        head = _head()  # HEAD moved while building: the next build is the no-op one
    print(f"s4 build: no-op rebuild {again['wall_seconds']}s, containers started {again['containers_started']}")
    return first, again


def _image(report: dict, name: str) -> dict:
    return next(i for i in report["images"] if i["name"] == name)


def test_build_both_stages_then_all_cache_hits(s4_build):
    first, second = s4_build
    assert first["ok"], first
    names = [i["name"] for i in first["images"]]
    assert names.index("s4-builder") < names.index("s4")
    for name in ("s4-builder", "s4"):
        assert _image(first, name)["status"] in ("built", "cached")
        assert _image(second, name)["status"] == "cached"
    assert second["ok"] and second["containers_started"] == 0 and second["commits"] == 0, second


def test_size_within_budget(s4_build, e2e_store):
    first, _ = s4_build
    s4 = _image(first, "s4")
    assert s4["size_budget_mb"] == 800
    assert 0 < s4["size"] < 800_000_000 and not s4["over_budget"], f"s4 is {s4['size'] / 1e6:.0f} MB"
    # the same verdict through `verify --size` (no ELF checks: /opt/app-root/src holds no binaries)
    rep = Path(e2e_store.home) / "verify-s4.json"
    e2e_store.cli("verify", "s4", "--size", "--prefix", "/opt/app-root/src", "--report", str(rep))
    text = rep.read_text()
    assert "localhost/s4:latest is " in text and "within its size budget of 800 MB on debian" in text, text


def test_runtime_holds_only_built_artifacts(s4_build, e2e_store):
    with e2e_store.buildah().mounted_image(IMAGE) as root:
        app = root / "opt/app-root/src"
        assert (app / "dist/server/server.js").is_file()
        assert (app / "dist/public/index.html").is_file() and (app / "dist/public/app.js").is_file()
        assert json.loads((app / "package.json").read_text())["name"] == "s4-example-app"
        s5cmd = root / "usr/local/bin/s5cmd"
        assert s5cmd.is_file() and os.access(s5cmd, os.X_OK)
        assert (root / "usr/bin/radosgw").is_file() and (root / "usr/bin/radosgw-admin").is_file()
        assert (root / "usr/bin/node").exists() and (root / "usr/bin/supervisord").exists()
        # the builder's toolchain and the app's devDependencies stayed in the builder
        for path in ("usr/bin/npm", "usr/bin/gcc", "usr/bin/pip", "usr/bin/pip3", "usr/bin/unzip",
                     "usr/share/nodejs/npm", "src/app", "out"):
            assert not (root / path).exists(), f"/{path} leaked from the builder"
        modules = app / "node_modules"
        for dev in ("typescript", "webpack", "webpack-cli", "ts-loader", "@types", ".bin"):
            assert not (modules / dev).exists(), f"devDependency {dev} in the runtime image"
        assert sum(f.stat().st_size for f in modules.rglob("*") if f.is_file()) < 1_000_000
        # writable by any UID in group 0
        for d in ("opt/app-root/src", "var/lib/ceph", "var/lib/ceph/radosgw"):
            st = (root / d).stat()
            assert st.st_gid == 0 and st.st_mode & 0o070 == 0o070, f"/{d} is not group-0 writable"
        assert (root / "opt/app-root/src").stat().st_uid == 1001
        assert os.access(root / "usr/local/bin/entrypoint.sh", os.X_OK)
    info = e2e_store.buildah().inspect(IMAGE)
    config = info["Docker"]["config"]
    assert config["User"] == "1001"
    assert set(config["ExposedPorts"]) == {"7480/tcp", "5000/tcp"}
    assert set(config["Volumes"]) == {"/var/lib/ceph/radosgw", "/opt/app-root/src/data"}
    assert "/api/disclaimer" in " ".join(config["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["/usr/local/bin/entrypoint.sh"]


# --- run with podman -------------------------------------------------------------
class Podman:
    def __init__(self, store, conf: Path):
        self.base = ["podman", "--root", str(store.root), "--runroot", str(store.runroot)]
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    def run(self, *args: str) -> str:
        ctr = self("run", "-d", *args).stdout.strip()
        self.containers.append(ctr)
        return ctr

    def state(self, ctr: str) -> dict:
        return json.loads(self("inspect", "--format", "{{json .State}}", ctr).stdout)

    def logs(self, ctr: str) -> str:
        proc = self("logs", ctr, check=False)
        return proc.stdout + proc.stderr

    def exec(self, ctr: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return self("exec", ctr, *argv, check=check)

    def cleanup(self) -> None:
        for ctr in self.containers:
            self("rm", "--force", "--volumes", "--time", "5", ctr, check=False)  # + anonymous volumes
        for vol in self.volumes:
            self("volume", "rm", "--force", vol, check=False)


@pytest.fixture
def podman(e2e_store, tmp_path):
    require_tool("podman")
    from imagefactory.podman import containers_conf

    p = Podman(e2e_store, containers_conf(tmp_path))
    try:
        yield p
    finally:
        p.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy


def get_json(url: str, timeout: float = 5) -> dict:
    with _opener.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_ready(podman: Podman, ctr: str, app: str, deadline_s: float = 120) -> float:
    """Wait until the app answers /api/disclaimer; fail early if the container dies."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < deadline_s:
        if not podman.state(ctr)["Running"]:
            pytest.fail(f"s4 container exited while starting:\n{podman.logs(ctr)[-6000:]}")
        try:
            if get_json(f"{app}/api/disclaimer").get("status") == "ok":
                return time.monotonic() - t0
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"/api/disclaimer not ready after {deadline_s}s ({last}):\n{podman.logs(ctr)[-6000:]}")


def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      proxies={}, retries={"max_attempts": 3},
                                      connect_timeout=5, read_timeout=60))


def s3_ready(s3, deadline_s: float = 60) -> None:
    t0 = time.monotonic()
    while True:
        try:
            s3.list_buckets()
            return
        except Exception:
            if time.monotonic() - t0 > deadline_s:
                raise
            time.sleep(1)


def programs(podman: Podman, ctr: str) -> dict[str, str]:
    out = podman.exec(ctr, *SUPERVISORCTL, "status", check=False).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) > 1}


def wait_running(podman: Podman, ctr: str, deadline_s: float = 30) -> dict[str, str]:
    """Both programs RUNNING (they are STARTING for their startsecs, 5 and 10 s)."""
    t0 = time.monotonic()
    while True:
        status = programs(podman, ctr)
        if status.get("rgw") == "RUNNING" and status.get("node") == "RUNNING":
            return status
        if time.monotonic() - t0 > deadline_s:
            pytest.fail(f"supervisord programs not RUNNING after {deadline_s}s: {status}")
        time.sleep(1)


def node_pid(podman: Podman, ctr: str) -> int:
    out = podman.exec(ctr, *SUPERVISORCTL, "pid", "node", check=False).stdout.strip()
    return int(out) if out.isdigit() else 0


def stop_with_sigterm(podman: Podman, ctr: str, limit_s: float = 30) -> tuple[float, dict]:
    """SIGTERM (podman stop -t 30 sends TERM, then KILL after 30 s); return seconds and the final state."""
    t0 = time.monotonic()
    podman("stop", "--time", str(int(limit_s)), ctr, timeout=limit_s + 30)
    return time.monotonic() - t0, podman.state(ctr)


def test_s4_runs_serves_s3_and_the_app_restarts_programs_and_keeps_data(s4_build, podman):
    first, _ = s4_build
    assert first["ok"]
    tag = uuid.uuid4().hex[:8]
    volume = f"s4-e2e-rgw-{tag}"
    podman("volume", "create", volume)
    podman.volumes.append(volume)
    s3_port, app_port = free_port(), free_port()
    endpoint, app = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{app_port}"
    run_args = ["--user", "123456:0", "-p", f"127.0.0.1:{s3_port}:7480", "-p", f"127.0.0.1:{app_port}:5000",
                "-v", f"{volume}:/var/lib/ceph/radosgw",
                "-e", f"AWS_ACCESS_KEY_ID={ACCESS_KEY}", "-e", f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}"]

    ctr = podman.run("--name", f"s4-e2e-{tag}", *run_args, IMAGE)
    ready = wait_ready(podman, ctr, app)
    print(f"s4: app ready {ready:.1f}s after start")

    # S3 through radosgw: bucket, a multi-MiB object up and down, bytes compared
    s3 = s3_client(endpoint)
    s3_ready(s3)
    bucket = f"e2e-{tag}"
    s3.create_bucket(Bucket=bucket)
    payload = os.urandom(6 * 1024 * 1024 + 123)
    s3.put_object(Bucket=bucket, Key="blob.bin", Body=payload)
    assert s3.get_object(Bucket=bucket, Key="blob.bin")["Body"].read() == payload

    # the app: health endpoint and the bucket list it reads from radosgw with SigV4
    assert get_json(f"{app}/api/disclaimer")["status"] == "ok"
    listed = get_json(f"{app}/api/buckets", timeout=15)
    assert bucket in json.dumps(listed), listed

    # supervisord runs both programs; it restarts node when node dies
    wait_running(podman, ctr)
    old = node_pid(podman, ctr)
    assert old > 0
    podman.exec(ctr, "sh", "-c", f"kill -KILL {old}")  # the image has no procps: the shell's kill
    t0 = time.monotonic()
    while time.monotonic() - t0 < 45:
        new = node_pid(podman, ctr)
        if new and new != old and programs(podman, ctr).get("node") == "RUNNING":
            break
        time.sleep(1)
    else:
        pytest.fail(f"node not restarted within 45 s: {programs(podman, ctr)}\n{podman.logs(ctr)[-3000:]}")
    print(f"s4: node restarted by supervisord in {time.monotonic() - t0:.1f}s (pid {old} -> {new})")
    assert get_json(f"{app}/api/disclaimer")["status"] == "ok"

    # SIGTERM: supervisord stops both programs and exits cleanly, well before the KILL
    seconds, state = stop_with_sigterm(podman, ctr)
    logs = podman.logs(ctr)
    print(f"s4: stopped in {seconds:.1f}s, exit code {state['ExitCode']}")
    assert seconds < 30, f"no clean stop within 30 s ({seconds:.1f}s)\n{logs[-3000:]}"
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}\n{logs[-3000:]}"
    assert "SIGTERM" in logs and "stopped: rgw" in logs and "stopped: node" in logs, logs[-3000:]

    # a new container on the same volume: the user, the bucket and the object survive
    ctr2 = podman.run("--name", f"s4-e2e-{tag}-2", *run_args, IMAGE)
    wait_ready(podman, ctr2, app)
    s3_ready(s3)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket=bucket, Key="blob.bin")["Body"].read() == payload
    assert bucket in json.dumps(get_json(f"{app}/api/buckets", timeout=15))
    assert "already exists" in podman.logs(ctr2)
    # the image's HEALTHCHECK, run by podman (no systemd timers here, so on demand)
    podman("healthcheck", "run", ctr2)
    seconds, state = stop_with_sigterm(podman, ctr2)
    assert seconds < 30 and state["ExitCode"] == 0, (seconds, state, podman.logs(ctr2)[-3000:])
