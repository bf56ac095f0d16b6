"""`imagefactory quadlet`: units checked by podman's real Quadlet generator (``quadlet -dryrun``)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from imagefactory import config, quadlet
from imagefactory.recipe import Recipe, Runtime

try:
    from quadlet_tool import dry_run, systemd_verify, unit_value
except ImportError:  # tests/ made a package
    from tests.quadlet_tool import dry_run, systemd_verify, unit_value

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
        cap_drop=["ALL"], cpus="2", memory="1g", pids_limit=512,
        health_start_period="2m",
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
    assert _pairs(argv, "--pids-limit") == ["512"]
    assert not any(a.startswith("AWS_SECRET_ACCESS_KEY=") for a in argv)
    assert _pairs(argv, "--name") == ["iftest-quadlet-svc"]
    # health timing: the recipe's start period, the defaults for the rest, podman kills an unhealthy container
    assert _pairs(argv, "--health-interval") == ["30s"] and _pairs(argv, "--health-retries") == ["3"]
    assert _pairs(argv, "--health-start-period") == ["2m"] and _pairs(argv, "--health-timeout") == ["10s"]
    assert _pairs(argv, "--health-on-failure") == ["kill"]
    assert "network-online.target" in unit_value(service, "Wants")
    assert "network-online.target" in unit_value(service, "After")
    assert unit_value(service, "TimeoutStartSec") == ["900"] and unit_value(service, "RestartSec") == ["10s"]
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


class QuadletNetworked(Recipe):
    """Service on its own network with systemd-managed volumes."""

    name = "iftest-quadlet-net"
    parent = "localhost/imagefactory-test-busybox:latest"
    runtime = Runtime(
        ports=["8080:8080"], volumes=["iftest-qn-data:/data", "/srv/iftest-qn:/srv:ro"],
        networks=["iftest-qn"], volume_units=True,
        health_cmd="wget -qO- http://127.0.0.1:8080/health", health_interval="15s", health_retries=5,
        health_on_failure="restart",
    )


def _all_services(units: list[quadlet.Unit], tmp_path: Path) -> dict[str, str]:
    unit_dir = tmp_path / "units"
    quadlet.write_units(units, unit_dir)
    return dry_run(unit_dir)


def test_network_and_volume_units_through_real_quadlet(settings, tmp_path):
    units = quadlet.render_all(QuadletNetworked, settings)
    assert [u.filename for u in units] == ["iftest-quadlet-net.container", "iftest-qn.network", "iftest-qn-data.volume"]
    assert "Network=iftest-qn.network" in units[0].text
    assert "Volume=iftest-qn-data.volume:/data:Z" in units[0].text
    services = _all_services(units, tmp_path)
    assert set(services) == {"iftest-quadlet-net.service", "iftest-qn-network.service", "iftest-qn-data-volume.service"}
    assert unit_value(services["iftest-qn-network.service"], "ExecStart") == [
        "/usr/bin/podman network create --ignore iftest-qn"]
    assert unit_value(services["iftest-qn-data-volume.service"], "ExecStart") == [
        "/usr/bin/podman volume create --ignore iftest-qn-data"]
    service = services["iftest-quadlet-net.service"]
    # systemd creates the network and the volume before the container starts
    assert {"iftest-qn-network.service", "iftest-qn-data-volume.service"} <= set(unit_value(service, "Requires"))
    argv = shlex.split(unit_value(service, "ExecStart")[0])
    assert _pairs(argv, "--network") == ["iftest-qn"]
    assert _pairs(argv, "-v") == ["iftest-qn-data:/data:Z", "/srv/iftest-qn:/srv:ro,Z"]  # host paths stay paths
    assert _pairs(argv, "--health-on-failure") == ["restart"]
    assert _pairs(argv, "--health-interval") == ["15s"] and _pairs(argv, "--health-retries") == ["5"]


@pytest.mark.parametrize("recipe", [QuadletService, QuadletNetworked, QuadletDev])
def test_systemd_analyze_verify_accepts_the_generated_services(settings, tmp_path, recipe):
    services = _all_services(quadlet.render_all(recipe, settings, project=tmp_path), tmp_path)
    rc, problems = systemd_verify(services, tmp_path / "generated")
    assert rc == 0 and problems == [], "\n".join(problems)


def test_systemd_analyze_verify_reports_a_broken_service(settings, tmp_path):
    """The check above can fail: a misspelt key and a missing program are reported."""
    services = _all_services([quadlet.render(QuadletService, settings)], tmp_path)
    text = services["iftest-quadlet-svc.service"]
    text = text.replace("RestartSec=10s", "RestartSecs=10s").replace("/usr/bin/podman run", "/nonexistent/podman run")
    rc, problems = systemd_verify({"iftest-quadlet-svc.service": text}, tmp_path / "generated")
    joined = "\n".join(problems)
    assert "RestartSecs" in joined and "/nonexistent/podman" in joined, joined


def test_s4_units_through_quadlet_and_systemd(settings, tmp_path):
    from recipes.s4.recipe import S4

    units = quadlet.render_all(S4, settings)
    assert [u.filename for u in units] == ["s4.container", "s4.network", "s4-rgw.volume", "s4-data.volume"]
    services = _all_services(units, tmp_path)
    rc, problems = systemd_verify(services, tmp_path / "generated")
    assert rc == 0 and problems == [], "\n".join(problems)
    assert set(services) == {"s4.service", "s4-network.service", "s4-rgw-volume.service", "s4-data-volume.service"}
    argv = shlex.split(unit_value(services["s4.service"], "ExecStart")[0])
    assert _pairs(argv, "--name") == ["s4"] and _pairs(argv, "--network") == ["s4"]
    assert _pairs(argv, "--health-on-failure") == ["kill"] and _pairs(argv, "--health-start-period") == ["2m"]
    assert _pairs(argv, "--cpus") == ["2"] and _pairs(argv, "--memory") == ["2g"]
    assert _pairs(argv, "-v") == ["s4-rgw:/var/lib/ceph/radosgw:Z", "s4-data:/opt/app-root/src/data:Z"]
    # the UI login and the S3 keys come from podman secrets, never from the unit
    assert {s.split(",")[0] for s in _pairs(argv, "--secret")} == {
        "s4-aws-access-key-id", "s4-aws-secret-access-key", "s4-ui-username", "s4-ui-password"}


def test_health_on_failure_must_be_a_podman_action(settings):
    class Bad(Recipe):
        """Bad health action."""
        name = "iftest-quadlet-bad-health"
        parent = "localhost/imagefactory-test-busybox:latest"
        runtime = Runtime(health_cmd="true", health_on_failure="reboot")

    with pytest.raises(quadlet.QuadletError, match=r"iftest-quadlet-bad-health.*reboot.*none, kill, restart, stop"):
        quadlet.render(Bad, settings)


def _push_record(settings, digest: str) -> None:
    (settings.state_path() / "pushed.json").write_text(json.dumps([
        {"target": "iftest-quadlet-svc", "ref": "registry.example:5000/team/iftest-quadlet-svc:1.2",
         "digest": digest, "registry": "registry.example:5000"}]))


def test_auto_update_registry_follows_the_pushed_tag(settings, tmp_path):
    with pytest.raises(quadlet.QuadletError, match=r"needs a pushed tag.*imagefactory push iftest-quadlet-svc"):
        quadlet.render(QuadletService, settings, auto_update="registry")
    digest = "sha256:" + "ab" * 32
    _push_record(settings, digest)
    pinned = quadlet.render(QuadletService, settings)
    assert pinned.image.endswith("@" + digest) and "AutoUpdate=" not in pinned.text
    unit = quadlet.render(QuadletService, settings, auto_update="registry")
    assert unit.image == "registry.example:5000/team/iftest-quadlet-svc:1.2"
    assert "AutoUpdate=registry" in unit.text
    argv, _ = _exec_start(unit, tmp_path)
    assert argv[-1] == unit.image
    assert "io.containers.autoupdate=registry" in _pairs(argv, "--label")


def test_auto_update_local_follows_the_local_tag(settings, tmp_path):
    _push_record(settings, "sha256:" + "ab" * 32)
    unit = quadlet.render(QuadletService, settings, auto_update="local")
    assert unit.image == "localhost/iftest-quadlet-svc:1.2"
    argv, _ = _exec_start(unit, tmp_path)
    assert "io.containers.autoupdate=local" in _pairs(argv, "--label")


def test_targets_sharing_a_network_get_one_unit_and_clashes_fail(settings):
    class Peer(Recipe):
        """Second service on the same network."""
        name = "iftest-quadlet-peer"
        parent = "localhost/imagefactory-test-busybox:latest"
        runtime = Runtime(networks=["iftest-qn"])

    merged = quadlet.merge(quadlet.render_all(QuadletNetworked, settings) + quadlet.render_all(Peer, settings))
    assert [u.filename for u in merged].count("iftest-qn.network") == 1
    clash = quadlet.Unit("iftest-qn.network", "[Network]\nNetworkName=other\n")
    with pytest.raises(quadlet.QuadletError, match="iftest-qn.network"):
        quadlet.merge(quadlet.render_all(QuadletNetworked, settings) + [clash])


BUTANE_RECIPE = RECIPE_FILE.replace('health_cmd="true")', 'health_cmd="true",\n' + ' ' * 26 +
                                    'networks=["qcli-net"], volume_units=True)')


@pytest.mark.parametrize("to_dir", [True, False], ids=["out-dir", "stdout"])
def test_quadlet_butane_places_the_units_in_etc_containers_systemd(tmp_path, to_dir):
    recipe = tmp_path / "recipes" / "qcli.py"
    recipe.parent.mkdir()
    recipe.write_text(BUTANE_RECIPE)
    out = tmp_path / "units"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "IMAGEFACTORY_RECIPE_PATHS": str(recipe.parent)}
    where = ["--out", str(out)] if to_dir else []
    proc = subprocess.run([sys.executable, "-m", "imagefactory", "quadlet", "qcli", "--butane", *where], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if to_dir:
        text = (out / "quadlet.bu").read_text()
    else:
        text = proc.stdout
        quadlet.write_units(quadlet.render_all(_load_cli_recipe(recipe), _settings_for(tmp_path)), out)
    doc = yaml.safe_load(text)
    assert doc["variant"] == "fcos" and doc["version"] == "1.5.0"
    files = doc["storage"]["files"]
    names = ["iftest-quadlet-cli.container", "qcli-net.network", "qcli-data.volume"]
    assert [f["path"] for f in files] == [f"/etc/containers/systemd/{n}" for n in names]
    for entry, name in zip(files, names):
        assert entry["mode"] == 0o644
        assert entry["contents"]["inline"] == (out / name).read_text(), name
    # what the host will run: the embedded units through the real generator
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    for entry in files:
        (embedded / Path(entry["path"]).name).write_text(entry["contents"]["inline"])
    assert set(dry_run(embedded)) == {"iftest-quadlet-cli.service", "qcli-net-network.service",
                                      "qcli-data-volume.service"}


def _load_cli_recipe(path: Path) -> type[Recipe]:
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["CliService"]


def _settings_for(tmp_path: Path):
    return config.load(env={}, overrides={"state_dir": str(tmp_path / "cfg" / "state")})


def test_quadlet_command_auto_update_without_a_push_says_what_to_do(tmp_path):
    recipe = tmp_path / "recipes" / "qcli.py"
    recipe.parent.mkdir()
    recipe.write_text(RECIPE_FILE)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "IMAGEFACTORY_RECIPE_PATHS": str(recipe.parent)}
    proc = subprocess.run([sys.executable, "-m", "imagefactory", "quadlet", "qcli", "--auto-update", "registry"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "needs a pushed tag" in message and "imagefactory push qcli" in message, proc.stderr
    assert "[Container]" not in proc.stdout
