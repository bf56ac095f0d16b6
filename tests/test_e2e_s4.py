"""S4 end to end: build both stages for real, then run the image with podman and use it.

One module-scoped build in the shared e2e store; the service checks run one container
as an arbitrary UID in group 0 (as OpenShift would), talk S3 with boto3 and HTTP to the
app on 127.0.0.1 only, and always remove their containers and volumes.

The runbook in recipes/s4/README.md is exercised command by command (the `podman exec`
ones exactly as written there): supervisorctl status/restart, tail of the supervisord log,
s5cmd, radosgw-admin, the hot-reload mount of the backend, the UI login, persistence.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import REPO, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.buildah, pytest.mark.xdist_group("e2e")]

IMAGE = "localhost/s4:latest"
SUPERVISORCTL = ["supervisorctl"]  # as the runbook types it: finds /etc/supervisord.conf by itself
BACKEND = "/opt/app-root/bin/s4/backend"
FRONTEND = "/opt/app-root/bin/s4/frontend"
RGW = "/var/lib/ceph/radosgw"
UI_USER, UI_PASSWORD = "e2e-admin", "e2e-ui-password-42"
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
    # the same verdict through `verify --size` (no ELF checks: /opt/app-root holds no binaries)
    rep = Path(e2e_store.home) / "verify-s4.json"
    e2e_store.cli("verify", "s4", "--size", "--prefix", "/opt/app-root", "--report", str(rep))
    text = rep.read_text()
    assert "localhost/s4:latest is " in text and "within its size budget of 800 MB on debian" in text, text


def _ceph_conf(text: str) -> dict[str, dict[str, str]]:
    """ceph.conf as Ceph reads it: sections, keys with spaces or underscores alike, # comments."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("global", {})
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current["_".join(key.split())] = value.strip()
    return sections


def test_runtime_holds_only_built_artifacts(s4_build, e2e_store):
    with e2e_store.buildah().mounted_image(IMAGE) as root:
        backend, frontend = root / BACKEND.lstrip("/"), root / FRONTEND.lstrip("/")
        assert (backend / "dist/server.js").is_file() and (backend / "dist/auth.js").is_file()
        assert (frontend / "dist/index.html").is_file() and (frontend / "dist/app.js").is_file()
        assert json.loads((backend / "package.json").read_text())["name"] == "s4-example-app"
        s5cmd = root / "usr/local/bin/s5cmd"
        assert s5cmd.is_file() and os.access(s5cmd, os.X_OK)
        assert (root / "usr/bin/radosgw").is_file() and (root / "usr/bin/radosgw-admin").is_file()
        assert (root / "usr/bin/node").exists() and (root / "usr/bin/supervisord").exists()
        # the builder's toolchain and the app's devDependencies stayed in the builder
        for path in ("usr/bin/npm", "usr/bin/gcc", "usr/bin/pip", "usr/bin/pip3", "usr/bin/unzip",
                     "usr/share/nodejs/npm", "src/app", "out"):
            assert not (root / path).exists(), f"/{path} leaked from the builder"
        modules = backend / "node_modules"
        for dev in ("typescript", "webpack", "webpack-cli", "ts-loader", "@types", ".bin"):
            assert not (modules / dev).exists(), f"devDependency {dev} in the runtime image"
        assert sum(f.stat().st_size for f in modules.rglob("*") if f.is_file()) < 1_000_000
        # writable by any UID in group 0: the app, the data layout, the supervisord log
        for d in ("opt/app-root/src", "opt/app-root/bin/s4/backend", "var/lib/ceph", "var/lib/ceph/radosgw",
                  "var/lib/ceph/radosgw/db", "var/lib/ceph/radosgw/db/rgw_posix_lmdbs",
                  "var/lib/ceph/radosgw/buckets", "var/lib/ceph/radosgw/tmp", "var/log"):
            st = (root / d).stat()
            assert st.st_gid == 0 and st.st_mode & 0o070 >= 0o030, f"/{d} is not group-0 writable"
        log = (root / "var/log/supervisord.log").stat()
        assert log.st_gid == 0 and log.st_mode & 0o060 == 0o060, "supervisord log not group-0 writable"
        assert (root / "opt/app-root/src").stat().st_uid == 1001
        assert os.access(root / "usr/local/bin/entrypoint.sh", os.X_OK)
        # one supervisord config, under both names supervisorctl looks for
        assert (root / "etc/supervisord.conf").is_file()
        assert os.readlink(root / "etc/supervisor/supervisord.conf") == "../supervisord.conf"
        sup = (root / "etc/supervisord.conf").read_text()
        assert "[program:rgw]" in sup and "[program:nodejs]" in sup and "[program:node]" not in sup
        assert "logfile=/var/log/supervisord.log" in sup
        # ceph.conf carries the documented settings
        conf = _ceph_conf((root / "etc/ceph/ceph.conf").read_text())
        assert conf["global"]["fsid"] == "00000000-0000-0000-0000-000000000000"
        assert conf["global"]["osd_pool_default_size"] == "1" == conf["global"]["osd_pool_default_min_size"]
        client = conf["client"]
        assert client["rgw_backend_store"] == "dbstore" and client["dbstore_db_dir"] == f"{RGW}/db"
        assert client["rgw_dns_name"] == "localhost"
        assert client["rgw_d3n_l1_local_datacache_enabled"] == "false"
        assert conf["client.rgw.s4"]["rgw_frontends"] == "beast port=7480"
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

    def exec(self, ctr: str, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self("exec", ctr, *argv, check=check, timeout=timeout)

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


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get_json(url: str, timeout: float = 5, auth: tuple[str, str] | None = (UI_USER, UI_PASSWORD)) -> dict:
    req = urllib.request.Request(url, headers=basic(*auth) if auth else {})
    with _opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """Status and headers of a GET, 4xx/5xx included."""
    try:
        with _opener.open(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def wait_ready(podman: Podman, ctr: str, app: str, deadline_s: float = 120) -> float:
    """Wait until the app answers /api/disclaimer; fail early if the container dies."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < deadline_s:
        if not podman.state(ctr)["Running"]:
            pytest.fail(f"s4 container exited while starting:\n{podman.logs(ctr)[-6000:]}")
        try:
            if get_json(f"{app}/api/disclaimer", auth=None).get("status") == "ok":
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
        if status.get("rgw") == "RUNNING" and status.get("nodejs") == "RUNNING":
            return status
        if time.monotonic() - t0 > deadline_s:
            pytest.fail(f"supervisord programs not RUNNING after {deadline_s}s: {status}")
        time.sleep(1)


def node_pid(podman: Podman, ctr: str) -> int:
    out = podman.exec(ctr, *SUPERVISORCTL, "pid", "nodejs", check=False).stdout.strip()
    return int(out) if out.isdigit() else 0


def stop_with_sigterm(podman: Podman, ctr: str, limit_s: float = 30) -> tuple[float, dict]:
    """SIGTERM (podman stop -t 30 sends TERM, then KILL after 30 s); return seconds and the final state."""
    t0 = time.monotonic()
    podman("stop", "--time", str(int(limit_s)), ctr, timeout=limit_s + 30)
    return time.monotonic() - t0, podman.state(ctr)


def wait_node_restarted(podman: Podman, ctr: str, old: int, deadline_s: float = 45) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        new = node_pid(podman, ctr)
        if new and new != old and programs(podman, ctr).get("nodejs") == "RUNNING":
            return new
        time.sleep(1)
    pytest.fail(f"nodejs not restarted within {deadline_s} s: {programs(podman, ctr)}\n{podman.logs(ctr)[-3000:]}")


def backend_copy(e2e_store, dest: Path) -> Path:
    """The image's backend folder, copied out: the host side of the runbook's hot-reload mount."""
    with e2e_store.buildah().mounted_image(IMAGE) as root:
        shutil.copytree(root / BACKEND.lstrip("/"), dest, symlinks=True)
    for path in [dest, *dest.rglob("*")]:  # readable by the container's arbitrary UID
        path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))
    return dest


def test_s4_runs_serves_s3_and_the_app_restarts_programs_and_keeps_data(s4_build, podman, e2e_store, tmp_path):
    first, _ = s4_build
    assert first["ok"]
    tag = uuid.uuid4().hex[:8]
    volume = f"s4-e2e-rgw-{tag}"
    podman("volume", "create", volume)
    podman.volumes.append(volume)
    s3_port, app_port = free_port(), free_port()
    endpoint, app = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{app_port}"
    run_args = ["--user", "123456:0", "-p", f"127.0.0.1:{s3_port}:7480", "-p", f"127.0.0.1:{app_port}:5000",
                "-v", f"{volume}:{RGW}",
                "-e", f"AWS_ACCESS_KEY_ID={ACCESS_KEY}", "-e", f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}",
                "-e", f"UI_USERNAME={UI_USER}", "-e", f"UI_PASSWORD={UI_PASSWORD}"]
    backend = backend_copy(e2e_store, tmp_path / "backend")

    # runbook: hot reload, the backend mounted from the host
    ctr = podman.run("--name", f"s4-e2e-{tag}", *run_args, "-v", f"{backend}:{BACKEND}", IMAGE)
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

    # runbook: UI login. The health endpoint is open; everything else asks for UI_USERNAME/UI_PASSWORD
    assert get_json(f"{app}/api/disclaimer", auth=None)["status"] == "ok"
    status, headers = http_status(f"{app}/api/buckets")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic"), (status, headers)
    assert http_status(f"{app}/api/buckets", basic(UI_USER, "wrong-password"))[0] == 401
    assert http_status(f"{app}/api/buckets", basic("someone-else", UI_PASSWORD))[0] == 401
    assert http_status(f"{app}/")[0] == 401
    status, headers = http_status(f"{app}/", basic(UI_USER, UI_PASSWORD))  # the frontend, from frontend/dist
    assert status == 200 and headers["Content-Type"].startswith("text/html"), (status, headers)
    listed = get_json(f"{app}/api/buckets", timeout=15)
    assert bucket in json.dumps(listed), listed

    # runbook: s5cmd inside the container, against the local S3 endpoint
    out = podman.exec(ctr, "s5cmd", "--endpoint-url", "http://localhost:7480", "ls").stdout
    assert f"s3://{bucket}" in out, out
    out = podman.exec(ctr, "s5cmd", "--endpoint-url", "http://localhost:7480", "ls", f"s3://{bucket}/").stdout
    assert "blob.bin" in out and str(len(payload)) in out, out

    # runbook: radosgw-admin. It prints its answer and may then hang in the DBStore shutdown (README),
    # so the runbook bounds it with timeout.
    proc = podman.exec(ctr, "timeout", "60", "radosgw-admin", "--no-mon-config", "user", "info", "--uid", "s4admin",
                       check=False, timeout=90)
    assert proc.returncode in (0, 124), proc.stderr[-2000:]
    assert f'"access_key": "{ACCESS_KEY}"' in proc.stdout, proc.stdout + proc.stderr[-2000:]

    # runbook: radosgw runs with the documented ceph.conf settings (asked through its admin socket)
    asok = "/var/lib/ceph/run/ceph-client.rgw.s4.asok"
    for key, value in (("rgw_dns_name", "localhost"), ("rgw_d3n_l1_local_datacache_enabled", "false"),
                       ("fsid", "00000000-0000-0000-0000-000000000000"), ("dbstore_db_dir", f"{RGW}/db")):
        got = json.loads(podman.exec(ctr, "ceph", "--admin-daemon", asok, "config", "get", key).stdout)
        assert got == {key: value}, got

    # runbook: supervisorctl status shows both programs; supervisord restarts nodejs when it dies
    wait_running(podman, ctr)
    old = node_pid(podman, ctr)
    assert old > 0
    podman.exec(ctr, "sh", "-c", f"kill -KILL {old}")  # the image has no procps: the shell's kill
    t0 = time.monotonic()
    new = wait_node_restarted(podman, ctr, old)
    print(f"s4: nodejs restarted by supervisord in {time.monotonic() - t0:.1f}s (pid {old} -> {new})")
    assert get_json(f"{app}/api/disclaimer", auth=None)["status"] == "ok"

    # runbook: hot reload. Change the mounted backend, then `supervisorctl restart nodejs`
    server_js = backend / "dist" / "server.js"
    marker = f"hot-reloaded {tag}"
    before = get_json(f"{app}/api/disclaimer", auth=None)["disclaimer"]
    assert marker not in before
    server_js.write_text(server_js.read_text().replace("It is not meant for production data.", marker))
    assert get_json(f"{app}/api/disclaimer", auth=None)["disclaimer"] == before  # still the running code
    old = node_pid(podman, ctr)
    out = podman.exec(ctr, *SUPERVISORCTL, "restart", "nodejs", timeout=60).stdout
    assert "nodejs: stopped" in out and "nodejs: started" in out, out
    assert node_pid(podman, ctr) not in (0, old)
    wait_ready(podman, ctr, app, deadline_s=30)
    assert marker in get_json(f"{app}/api/disclaimer", auth=None)["disclaimer"]

    # runbook: tail -f /var/log/supervisord.log (written by the arbitrary UID; timeout ends the follow)
    proc = podman.exec(ctr, "timeout", "3", "tail", "-n", "200", "-f", "/var/log/supervisord.log", check=False)
    assert proc.returncode == 124, proc.stderr
    for line in ("spawned: 'rgw'", "spawned: 'nodejs'", "success: nodejs entered RUNNING", "exited: nodejs"):
        assert line in proc.stdout, f"{line!r} not in the supervisord log:\n{proc.stdout[-3000:]}"

    # SIGTERM: supervisord stops both programs and exits cleanly, well before the KILL
    seconds, state = stop_with_sigterm(podman, ctr)
    logs = podman.logs(ctr)
    print(f"s4: stopped in {seconds:.1f}s, exit code {state['ExitCode']}")
    # exit code 0, not 137: supervisord ended on the TERM itself, before podman's KILL at the limit
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} after {seconds:.1f}s\n{logs[-3000:]}"
    assert "SIGTERM" in logs and "stopped: rgw" in logs and "stopped: nodejs" in logs, logs[-3000:]

    # the volume as the image before the db/ layout left it: the databases at its top
    podman("run", "--rm", "--user", "123456:0", "-v", f"{volume}:{RGW}", "--entrypoint", "sh", IMAGE, "-c",
           f"cd {RGW} && mv db/*.db . && mkdir data && ls *.db")

    # a new container on the same volume (the image's own backend): the user, the bucket and the object survive
    ctr2 = podman.run("--name", f"s4-e2e-{tag}-2", *run_args, IMAGE)
    wait_ready(podman, ctr2, app)
    assert "moving the DBStore databases of an older layout" in podman.logs(ctr2)
    assert marker not in get_json(f"{app}/api/disclaimer", auth=None)["disclaimer"]
    s3_ready(s3)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket=bucket, Key="blob.bin")["Body"].read() == payload
    assert bucket in json.dumps(get_json(f"{app}/api/buckets", timeout=15))
    assert "already exists" in podman.logs(ctr2)
    # the data layout on the volume: the databases in db/, the POSIX driver's folders beside them
    listing = podman.exec(ctr2, "sh", "-c", f"cd {RGW} && ls -d db/*.db db/rgw_posix_lmdbs buckets tmp").stdout
    assert "db/rgw_posix_lmdbs" in listing and "buckets" in listing and "tmp" in listing, listing
    assert any(line.startswith("db/") and line.endswith(".db") for line in listing.split()), listing
    assert podman.exec(ctr2, "sh", "-c", f"ls {RGW}/*.db", check=False).returncode != 0, "databases outside db/"
    # the image's HEALTHCHECK, run by podman (no systemd timers here, so on demand)
    podman("healthcheck", "run", ctr2)
    seconds, state = stop_with_sigterm(podman, ctr2)
    assert state["ExitCode"] == 0, (seconds, state, podman.logs(ctr2)[-3000:])
