"""`imagefactory quadlet`: units checked by podman's real Quadlet generator (``quadlet -dryrun``)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imagefactory import config, quadlet
from imagefactory.recipe import Recipe, Runtime

try:
    from quadlet_tool import dry_run, unit_value
except ImportError:  # tests/ made a package
    from tests.quadlet_tool import dry_run, unit_value

REPO = Path(__file__).resolve().parents[1]
SECRET_VALUE = "do-not-leak-8c1f"


class QuadletService(Recipe):
    """Object storage service for quadlet tests (shaped like S4)."""

    name = "iftest-quadlet-svc"
    parent = "localhost/imagefactory-test-busybox:latest"
    version = "1.2"
    runtime = Runtime(
        ports=["7480:7480", "5000:5000"],
        volumes=["s4-rgw:/var/lib/ceph/radosgw", "s4-data:/opt/app-root/src/data"],
        environment={"S3_BUCKET": "demo", "GREETING": "hello world", "RATIO": "50%"},
        secrets=["AWS_SECRET_ACCESS_KEY", "SESSION_KEY"],
        user="1001", group="0",
        health_cmd="curl -fsS http://127.0.0.1:5000/api/disclaimer",
        cap_drop=["ALL"], cpus="2", memory="1g",
    )


class QuadletDev(Recipe):
    """Dev image for quadlet tests."""

    name = "iftest-quadlet-dev"
    parent = "localhost/imagefactory-test-busybox:latest"
    runtime = Runtime(mount_project="/workspace", cpus="4", memory="4g")


@pytest.fixture
def settings(tmp_path):
    return config.load(env={}, overrides={"state_dir": str(tmp_path / "state"), "root": str(tmp_path / "root"),
                                          "runroot": str(tmp_path / "run")})


def _exec_start(unit: quadlet.Unit, tmp_path: Path) -> tuple[list[str], str]:
    units = tmp_path / "units"
    units.mkdir(exist_ok=True)
    (units / unit.filename).write_text(unit.text)
    services = dry_run(units)
    service_name = unit.filename.replace(".container", ".service")
    assert service_name in services, f"quadlet made {sorted(services)}, not {service_name}"
    service = services[service_name]
    execs = unit_value(service, "ExecStart")
    assert len(execs) == 1, service
    # systemd expands %-specifiers when it runs ExecStart: %% is a literal percent sign
    return [a.replace("%%", "%") for a in shlex.split(execs[0])], service


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_service_unit_through_real_quadlet(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
    unit = quadlet.render(QuadletService, settings)
    assert unit.filename == "iftest-quadlet-svc.container"
    assert SECRET_VALUE not in unit.text
    assert "Image=localhost/iftest-quadlet-svc:1.2" in unit.text
    argv, service = _exec_start(unit, tmp_path)

    assert argv[0].endswith("podman") and argv[1] == "run"
    assert argv[-1] == "localhost/iftest-quadlet-svc:1.2"
    assert _pairs(argv, "--publish") == ["7480:7480", "5000:5000"]
    assert _pairs(argv, "-v") == ["s4-rgw:/var/lib/ceph/radosgw:Z", "s4-data:/opt/app-root/src/data:Z"]
    assert _pairs(argv, "--user") == ["1001:0"]
    assert sorted(_pairs(argv, "--secret")) == [
        "iftest-quadlet-svc-aws-secret-access-key,type=env,target=AWS_SECRET_ACCESS_KEY",
        "iftest-quadlet-svc-session-key,type=env,target=SESSION_KEY"]
    assert _pairs(argv, "--health-cmd") == ["curl -fsS http://127.0.0.1:5000/api/disclaimer"]
    assert sorted(_pairs(argv, "--env")) == ["GREETING=hello world", "RATIO=50%", "S3_BUCKET=demo"]
    assert _pairs(argv, "--cap-drop") == ["all"]
    assert _pairs(argv, "--cpus") == ["2"] and _pairs(argv, "--memory") == ["1g"]
    assert not any(a.startswith("AWS_SECRET_ACCESS_KEY=") for a in argv)
    assert unit_value(service, "Restart") == ["on-failure"]
    assert unit_value(service, "WantedBy") == ["multi-user.target default.target"]
    assert unit_value(service, "Description") == ["Object storage service for quadlet tests (shaped like S4)."]


def test_pushed_image_is_used_by_digest(settings, tmp_path):
    digest = "sha256:" + "ab" * 32
    (settings.state_path() / "pushed.json").write_text(json.dumps([
        {"target": "other", "ref": "registry.example/other:1", "digest": "sha256:" + "00" * 32,
         "registry": "registry.example"},
        {"target": "iftest-quadlet-svc", "ref": "registry.example:5000/team/iftest-quadlet-svc:1.2",
         "digest": digest, "registry": "registry.example:5000"},
    ]))
    unit = quadlet.render(QuadletService, settings)
    expected = f"registry.example:5000/team/iftest-quadlet-svc@{digest}"
    assert unit.image == expected
    argv, _ = _exec_start(unit, tmp_path)
    assert argv[-1] == expected


@pytest.mark.parametrize("data", [
    {"iftest-quadlet-svc": {"ref": "r.example/x:1", "digest": "sha256:" + "cd" * 32}},
    {"entries": [{"target": "iftest-quadlet-svc", "ref": "r.example/x:1", "digest": "sha256:" + "cd" * 32}]},
    {"r.example/x:1": {"target": "iftest-quadlet-svc", "ref": "r.example/x:1", "digest": "sha256:" + "cd" * 32,
                       "registry": "r.example", "pushed_at": 20.0},
     "old.example/x:1": {"target": "iftest-quadlet-svc", "ref": "old.example/x:1", "digest": "sha256:" + "ef" * 32,
                         "registry": "old.example", "pushed_at": 10.0}},
])
def test_pushed_file_shapes(settings, data):
    (settings.state_path() / "pushed.json").write_text(json.dumps(data))
    assert quadlet.image_for(QuadletService, settings) == "r.example/x@sha256:" + "cd" * 32
    if "old.example/x:1" in data:
        assert quadlet.image_for(QuadletService, settings, "old.example") == "old.example/x@sha256:" + "ef" * 32


def test_digest_ref():
    d = "sha256:" + "1" * 64
    assert quadlet.digest_ref("host:5000/a/b:tag", d) == f"host:5000/a/b@{d}"
    assert quadlet.digest_ref("host:5000/a/b", d) == f"host:5000/a/b@{d}"
    assert quadlet.digest_ref("b@sha256:old", d) == f"b@{d}"


def test_dev_shell_unit_through_real_quadlet(settings, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    unit = quadlet.render(QuadletDev, settings, project=project)
    assert unit.filename == "iftest-quadlet-dev-shell.container"
    argv, service = _exec_start(unit, tmp_path)
    volumes = _pairs(argv, "-v")
    assert f"{project.resolve()}:/workspace:Z" in volumes
    assert "dev-home:/home/developer:Z,U" in volumes
    assert {"build-cache:/cache:Z,U", "test-results:/test-results:Z,U", "ci-reports:/ci-reports:Z,U"} <= set(volumes)
    assert _pairs(argv, "--user") == ["1000:1000"]
    assert _pairs(argv, "--cap-drop") == ["all"]
    assert sorted(_pairs(argv, "--cap-add")) == ["net_admin", "net_raw"]
    assert _pairs(argv, "--cpus") == ["4"] and _pairs(argv, "--memory") == ["4g"]
    assert argv[-3:] == ["localhost/iftest-quadlet-dev:latest", "sleep", "infinity"]
    assert unit_value(service, "Restart") == ["on-failure"]


RECIPE_FILE = textwrap.dedent('''
    from imagefactory.recipe import Recipe, Runtime

    class CliService(Recipe):
        """Service for the quadlet CLI test."""
        name = "iftest-quadlet-cli"
        target = "qcli"
        parent = "localhost/imagefactory-test-busybox:latest"
        runtime = Runtime(ports=["8080:8080"], volumes=["qcli-data:/data"], secrets=["API_TOKEN"],
                          user="1001", group="0", health_cmd="true")
''')


def test_quadlet_command_writes_units(tmp_path):
    recipe = tmp_path / "recipes" / "qcli.py"
    recipe.parent.mkdir()
    recipe.write_text(RECIPE_FILE)
    out = tmp_path / "units"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "IMAGEFACTORY_RECIPE_PATHS": str(recipe.parent),
           "API_TOKEN": SECRET_VALUE}
    proc = subprocess.run([sys.executable, "-m", "imagefactory", "quadlet", "qcli", "--out", str(out),
                           "--report", str(tmp_path / "r.json")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (out / "iftest-quadlet-cli.container").read_text()
    assert SECRET_VALUE not in text
    assert "Secret=iftest-quadlet-cli-api-token,type=env,target=API_TOKEN" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["exit_code"] == 0 and report["units"][0]["file"] == "iftest-quadlet-cli.container"
    services = dry_run(out)
    argv = shlex.split(unit_value(services["iftest-quadlet-cli.service"], "ExecStart")[0])
    assert _pairs(argv, "-v") == ["qcli-data:/data:Z"]
    assert _pairs(argv, "--health-cmd") == ["true"]
