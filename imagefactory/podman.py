"""Start built images with podman: dev shells, test runs and services (`shell`, `run`).

Dev and test images (a recipe whose ``runtime`` is unset or sets ``mount_project``)
run the way the ocserv-modern architecture prescribes:

- the project folder (cwd or ``--project``) bind-mounted at ``/workspace`` with ``:Z``,
- ``--user 1000:1000`` (the image's ``developer`` user),
- named volumes ``dev-home:/home/developer``, ``build-cache:/cache``,
  ``test-results:/test-results`` and ``ci-reports:/ci-reports`` (``:Z,U``: relabelled and
  handed to the container user, so uid 1000 can write them),
- ``--cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW`` (tun devices and raw sockets for
  the VPN tests, nothing else),
- ``--cpus``/``--memory`` from the recipe's runtime.

A recipe's own :class:`~imagefactory.recipe.Runtime` fields win over these defaults; its
volumes are added to the defaults (a volume with the same target replaces the default).
Service images (a runtime without ``mount_project``) run with exactly their runtime.

Podman sees the images of a private buildah store through ``podman --root/--runroot``,
and gets ``CONTAINERS_CONF`` pointing at the shipped ``ci/containers.conf`` unless the
caller set ``CONTAINERS_CONF`` (podman 4.3 here works only with runc and ulimits under
the caller's hard limits).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .storage import StorageOptions
from .recipe import Recipe, Runtime

DEV_MOUNT = "/workspace"
DEV_USER = "1000"
DEV_GROUP = "1000"
DEV_VOLUMES = ("dev-home:/home/developer", "build-cache:/cache", "test-results:/test-results",
               "ci-reports:/ci-reports")
# run-tests writes coverage to $TEST_RESULTS: the named volume, writable by uid 1000 even when the
# mounted checkout belongs to root (`--env TEST_RESULTS=/workspace/coverage` puts it in the project).
DEV_ENVIRONMENT = {"XDG_CACHE_HOME": "/cache", "CCACHE_DIR": "/cache/ccache", "TEST_RESULTS": "/test-results",
                   "CI_REPORTS": "/ci-reports"}
DEV_CAP_DROP = ("ALL",)
DEV_CAP_ADD = ("NET_ADMIN", "NET_RAW")

SHIPPED_CONTAINERS_CONF = Path(__file__).resolve().parent.parent / "ci" / "containers.conf"
# The same settings as ci/containers.conf, for installs without the source tree (a test keeps them equal).
CONTAINERS_CONF_TEXT = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def is_dev_image(recipe: type[Recipe]) -> bool:
    """Dev/test images mount the project; services don't. No runtime at all means a dev image."""
    rt = recipe.runtime
    return rt is None or bool(rt.mount_project)


def effective_runtime(recipe: type[Recipe], dev: bool | None = None) -> Runtime:
    """The recipe's runtime with the dev defaults filled in (for dev/test images)."""
    rt = replace(recipe.runtime) if recipe.runtime is not None else Runtime()
    if dev is None:
        dev = is_dev_image(recipe)
    if not dev:
        return rt
    volumes = list(rt.volumes)
    own_targets = {volume_parts(v)[1] for v in volumes}
    volumes = [v for v in DEV_VOLUMES if volume_parts(v)[1] not in own_targets] + volumes
    env = dict(DEV_ENVIRONMENT)
    env.update(rt.environment)
    return replace(
        rt,
        volumes=volumes,
        environment=env,
        user=rt.user or DEV_USER,
        group=rt.group or (None if rt.user else DEV_GROUP),
        cap_drop=list(rt.cap_drop) or list(DEV_CAP_DROP),
        cap_add=list(rt.cap_add) or list(DEV_CAP_ADD),
        mount_project=rt.mount_project or DEV_MOUNT,
        workdir=rt.workdir or rt.mount_project or DEV_MOUNT,
    )


def volume_parts(spec: str) -> tuple[str, str, str]:
    """``source:target[:options]`` → (source, target, options)."""
    parts = spec.split(":")
    if len(parts) < 2:
        raise ValueError(f"volume {spec!r} must be SOURCE:TARGET[:OPTIONS], e.g. data:/var/lib/data")
    return parts[0], parts[1], ":".join(parts[2:])


def is_named_volume(spec: str) -> bool:
    source = volume_parts(spec)[0]
    return not (source.startswith("/") or source.startswith(".") or source.startswith("~"))


def volume_with_options(spec: str, *extra: str) -> str:
    """Add options (``Z``, ``U``) to a volume spec, keeping the ones it already has."""
    source, target, opts = volume_parts(spec)
    have = [o for o in opts.split(",") if o]
    for o in extra:
        if o not in have:
            have.append(o)
    return f"{source}:{target}" + (f":{','.join(have)}" if have else "")


def user_spec(rt: Runtime) -> str | None:
    if not rt.user:
        return None
    return f"{rt.user}:{rt.group}" if rt.group else rt.user


@dataclass
class RunSpec:
    """Everything one ``podman run`` needs; :func:`run_args` turns it into arguments."""

    image: str
    runtime: Runtime
    dev: bool
    project: Path | None = None
    command: list[str] = field(default_factory=list)
    interactive: bool = False
    tty: bool = False
    entrypoint: str | None = None
    name: str | None = None
    secret_env: list[str] = field(default_factory=list)  # secrets passed by name from the caller's env


def run_spec(recipe: type[Recipe], *, project: str | Path | None = None, command: list[str] | None = None,
             interactive: bool = False, image: str | None = None, environ: dict[str, str] | None = None,
             stdin_tty: bool | None = None, extra_env: dict[str, str] | None = None) -> RunSpec:
    dev = is_dev_image(recipe)
    rt = effective_runtime(recipe, dev)
    if extra_env:
        rt.environment = {**rt.environment, **extra_env}
    environ = os.environ if environ is None else environ
    tty = sys.stdin.isatty() if stdin_tty is None else stdin_tty
    proj = Path(project or os.getcwd()).resolve() if dev else None
    return RunSpec(image=image or recipe.image_ref(), runtime=rt, dev=dev, project=proj,
                   command=list(command or []), interactive=interactive or tty, tty=tty,
                   secret_env=[s for s in rt.secrets if s in environ])


def run_args(spec: RunSpec) -> list[str]:
    """``run ...`` arguments (without ``podman`` and its global options)."""
    rt = spec.runtime
    args = ["run", "--rm"]
    if spec.interactive:
        args.append("-i")
    if spec.tty:
        args.append("-t")
    if spec.name:
        args += ["--name", spec.name]
    user = user_spec(rt)
    if user:
        args += ["--user", user]
    for cap in rt.cap_drop:
        args += ["--cap-drop", cap]
    for cap in rt.cap_add:
        args += ["--cap-add", cap]
    if rt.cpus:
        args += ["--cpus", str(rt.cpus)]
    if rt.memory:
        args += ["--memory", str(rt.memory)]
    if rt.pids_limit:
        args += ["--pids-limit", str(rt.pids_limit)]
    if spec.dev and spec.project is not None:
        args += ["--volume", f"{spec.project}:{rt.mount_project}:Z"]
    for vol in rt.volumes:
        extra = ("Z", "U") if spec.dev and is_named_volume(vol) else ("Z",)
        args += ["--volume", volume_with_options(vol, *extra)]
    for port in rt.ports:
        args += ["--publish", port]
    for key, value in sorted(rt.environment.items()):
        args += ["--env", f"{key}={value}"]
    for name in spec.secret_env:  # by name only: podman reads the value from its own environment
        args += ["--env", name]
    if rt.workdir:
        args += ["--workdir", rt.workdir]
    if spec.entrypoint is not None:
        args += ["--entrypoint", spec.entrypoint]
    args.append(spec.image)
    args += spec.command
    return args


def global_args(storage: StorageOptions) -> list[str]:
    """``podman --root X --runroot Y [--storage-driver D]``: the same store buildah built into."""
    return storage.global_args()


def containers_conf(state_dir: Path | None = None) -> Path:
    """The shipped ci/containers.conf, or a copy of its settings in the state folder (installed package)."""
    if SHIPPED_CONTAINERS_CONF.is_file():
        return SHIPPED_CONTAINERS_CONF
    folder = state_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagefactory"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "containers.conf"
    if not path.is_file() or path.read_text() != CONTAINERS_CONF_TEXT:
        path.write_text(CONTAINERS_CONF_TEXT)
    return path


def podman_env(environ: dict[str, str] | None = None, state_dir: Path | None = None) -> dict[str, str]:
    """The caller's environment plus CONTAINERS_CONF, unless the caller chose one."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("CONTAINERS_CONF"):
        env["CONTAINERS_CONF"] = str(containers_conf(state_dir))
    return env


def podman_argv(storage: StorageOptions, spec: RunSpec, binary: str = "podman") -> list[str]:
    return [binary, *global_args(storage), *run_args(spec)]


def display(argv: list[str], env: dict[str, str]) -> str:
    """The command as a user could paste it, CONTAINERS_CONF included."""
    prefix = f"CONTAINERS_CONF={shlex.quote(env['CONTAINERS_CONF'])} " if env.get("CONTAINERS_CONF") else ""
    return prefix + shlex.join(argv)
