"""`imagefactory shell` / `run`: the podman command line, and a real run of a tiny image."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imagefactory import cli, podman
from imagefactory.buildah import StorageOptions
from imagefactory.recipe import Recipe, Runtime

try:
    from conftest import TINY_BASE
except ImportError:  # tests/ made a package
    from tests.conftest import TINY_BASE

REPO = Path(__file__).resolve().parents[1]


class RunDev(Recipe):
    """Dev image for run tests."""

    name = "iftest-run-unit-dev"
    parent = TINY_BASE
    runtime = Runtime(mount_project="/workspace", cpus="2", memory="2g", secrets=["GITHUB_TOKEN"],
                      volumes=["my-cache:/cache"])


class RunService(Recipe):
    """Service image for run tests."""

    name = "iftest-run-unit-svc"
    parent = TINY_BASE
    runtime = Runtime(ports=["8080:8080"], volumes=["svc-data:/data"], user="1001", group="0",
                      environment={"MODE": "prod"}, secrets=["API_TOKEN"])


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_dev_run_args(tmp_path):
    spec = podman.run_spec(RunDev, project=tmp_path, command=["make", "check"], environ={"GITHUB_TOKEN": "s3cr3t"},
                           stdin_tty=False)
    argv = podman.podman_argv(StorageOptions("/r", "/rr"), spec)
    assert argv[:6] == ["podman", "--root", "/r", "--runroot", "/rr", "run"]
    assert "-t" not in argv and "-i" not in argv  # stdin is no TTY
    assert _pairs(argv, "--user") == ["1000:1000"]
    assert _pairs(argv, "--cap-drop") == ["ALL"]
    assert _pairs(argv, "--cap-add") == ["NET_ADMIN", "NET_RAW"]
    assert _pairs(argv, "--cpus") == ["2"] and _pairs(argv, "--memory") == ["2g"]
    vols = _pairs(argv, "--volume")
    assert f"{tmp_path.resolve()}:/workspace:Z" in vols
    assert "dev-home:/home/developer:Z,U" in vols
    assert "my-cache:/cache:Z,U" in vols and "build-cache:/cache:Z,U" not in vols  # recipe's own wins
    assert {"test-results:/test-results:Z,U", "ci-reports:/ci-reports:Z,U"} <= set(vols)
    assert _pairs(argv, "--workdir") == ["/workspace"]
    assert "GITHUB_TOKEN" in _pairs(argv, "--env")  # by name: podman reads the value
    assert "s3cr3t" not in " ".join(argv)
    assert argv[-3:] == ["localhost/iftest-run-unit-dev:latest", "make", "check"]


def test_tty_gives_it():
    spec = podman.run_spec(RunDev, project=".", stdin_tty=True, environ={})
    args = podman.run_args(spec)
    assert "-i" in args and "-t" in args
    assert "GITHUB_TOKEN" not in _pairs(args, "--env")  # not set: not passed


def test_service_run_args():
    spec = podman.run_spec(RunService, stdin_tty=False, environ={"API_TOKEN": "x"})
    args = podman.run_args(spec)
    assert _pairs(args, "--user") == ["1001:0"]
    assert _pairs(args, "--volume") == ["svc-data:/data:Z"]  # no project, no dev volumes, no chown
    assert _pairs(args, "--publish") == ["8080:8080"]
    assert _pairs(args, "--env") == ["MODE=prod", "API_TOKEN"]
    assert "--cap-add" not in args


def test_containers_conf_is_shipped_and_respected(tmp_path):
    shipped = REPO / "ci" / "containers.conf"
    assert podman.containers_conf() == podman.SHIPPED_CONTAINERS_CONF == shipped
    a, b = configparser.ConfigParser(), configparser.ConfigParser()
    a.read_string(shipped.read_text())
    b.read_string(podman.CONTAINERS_CONF_TEXT)
    assert {s: dict(a[s]) for s in a.sections()} == {s: dict(b[s]) for s in b.sections()}
    assert a["engine"]["runtime"] == '"runc"'
    assert podman.podman_env({"PATH": "/bin"})["CONTAINERS_CONF"] == str(shipped)
    assert podman.podman_env({"CONTAINERS_CONF": "/etc/mine.conf"})["CONTAINERS_CONF"] == "/etc/mine.conf"


@pytest.mark.parametrize("argv, cmd, root", [
    (["run", "t", "--root", "/x", "--", "id", "-u"], ["id", "-u"], "/x"),
    (["run", "t", "--", "ls", "--root", "/y"], ["ls", "--root", "/y"], None),
    (["run", "--root", "/x", "t", "make", "check"], ["make", "check"], "/x"),
    (["run", "t", "--root", "/x"], [], "/x"),
])
def test_run_argument_forms(argv, cmd, root):
    from imagefactory.commands import run as run_cmd

    args = cli.parser().parse_args(argv)
    settings = run_cmd._split_remainder(args, cli.settings_from(args))
    assert args.cmd == cmd
    assert args.root == root and settings.root == root


def test_dry_run_prints_podman_command(tmp_path):
    recipe = tmp_path / "recipes" / "tiny.py"
    recipe.parent.mkdir()
    recipe.write_text(TINY_RECIPE)
    env = dict(os.environ, IMAGEFACTORY_RECIPE_PATHS=str(recipe.parent), XDG_CACHE_HOME=str(tmp_path / "c"))
    env.pop("CONTAINERS_CONF", None)
    proc = subprocess.run([sys.executable, "-m", "imagefactory", "run", "iftest-run-dev", "--dry-run",
                           "--project", str(tmp_path), "--root", str(tmp_path / "r"), "--", "id", "-u"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout.strip())
    assert words[0] == f"CONTAINERS_CONF={REPO / 'ci' / 'containers.conf'}"
    assert words[1:5] == ["podman", "--root", str(tmp_path / "r"), "run"]
    assert words[-3:] == ["localhost/iftest-run-dev:latest", "id", "-u"]


TINY_RECIPE = textwrap.dedent(f'''
    from imagefactory.recipe import Recipe, Runtime
    from imagefactory.steps import Config, Run

    class TinyDev(Recipe):
        """Busybox dev image with a developer user (uid 1000) for `run` tests."""
        name = "iftest-run-dev"
        parent = "{TINY_BASE}"
        runtime = Runtime(mount_project="/workspace", cpus="1", memory="256m")

        def steps(self):
            yield Run("echo developer:x:1000:1000::/home/developer:/bin/sh >> /etc/passwd && "
                      "echo developer:x:1000: >> /etc/group && "
                      "mkdir -p /workspace /home/developer && chown 1000:1000 /workspace /home/developer")
            yield Config(user="developer", workdir="/workspace", cmd=["sh"])
''')


@pytest.mark.buildah
def test_run_real_image_with_podman(tiny_store, tmp_path):
    """Build a tiny dev image, then `imagefactory run` it with podman and the shipped containers.conf."""
    if not any(Path(d, "podman").exists() for d in os.environ.get("PATH", "").split(":")):
        pytest.fail("podman is not installed: run ci/setup")
    recipe = tmp_path / "recipes" / "tiny.py"
    recipe.parent.mkdir()
    recipe.write_text(TINY_RECIPE)
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe.parent))
    env.pop("CONTAINERS_CONF", None)
    tiny_store.cli("build", "iftest-run-dev", env=env)
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello-from-project.txt").write_text("hi\n")

    def run(*cmd: str) -> tuple[subprocess.CompletedProcess, float]:
        argv = [sys.executable, "-m", "imagefactory", "run", "iftest-run-dev", "--project", str(project),
                *tiny_store.args(), "--report", str(tmp_path / "run.json"), "--", *cmd]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        return proc, time.monotonic() - started

    proc, cold = run("true")
    assert proc.returncode == 0, proc.stderr
    proc, warm = run("true")
    assert proc.returncode == 0, proc.stderr
    podman_only = json.loads((tmp_path / "run.json").read_text())["podman_seconds"]
    script = "id -u; id -g; ls /workspace; touch /home/developer/.ok /cache/ok && echo writable"
    proc, _ = run("sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[:2] == ["1000", "1000"], proc.stdout
    assert "hello-from-project.txt" in lines
    assert lines[-1] == "writable"  # the dev volumes belong to uid 1000
    proc, _ = run("sh", "-c", "exit 7")
    assert proc.returncode == 7  # the command's exit code comes back
    print(f"\n`imagefactory run iftest-run-dev -- true` wall time: first {cold:.2f}s (creates volumes), "
          f"then {warm:.2f}s, of which podman {podman_only:.2f}s")
