"""Declarative build steps.

A step never talks to buildah. Its life has two phases:

* ``prepare(ctx)`` resolves what needs I/O (a Copy's file digest, a library's verified
  archive, the Debian mirror) and returns the step with those facts filled in;
* ``render(ctx)`` is pure: it turns the prepared step into calls (run, copy, config, or a
  named host action such as the Debian bootstrap) plus the digests of the inputs it reads.

The walk hashes that rendering into the cache key, `plan` prints it, and the executor
hands the very same calls to buildah, so what you see in a plan is exactly what runs.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .buildah import Container, Mount
    from .config import Settings


class StepError(ValueError):
    """A step is malformed or names an input that does not exist."""


SECRETS_DIR = "/run/secrets"


class PrepareContext(Protocol):
    """What a step may use while preparing (the only phase with I/O): see imagefactory.prepare."""

    settings: Settings
    recipe: type

    def resolve_file(self, rel: str) -> Path: ...
    def digest(self, path: Path) -> str: ...  # a file or folder tree
    def file_digest(self, path: Path) -> str: ...


@dataclass(frozen=True)
class RenderContext:
    """What a step may know while rendering: no I/O, no buildah, no image IDs."""

    settings: Settings
    platform: Any  # imagefactory.platforms.Platform (platforms imports this module)
    recipe: type
    base_variant: str | None = None
    arch: str | None = None  # what the image is (OCI name); None: the build machine's

    def fail(self, message: str) -> StepError:
        return StepError(f"recipe {getattr(self.recipe, 'name', self.recipe.__name__)!r}: {message}")


@dataclass(frozen=True)
class Secret:
    """A build-time secret one RUN step may read, never stored in the image.

    The value is bind-mounted read-only at ``/run/secrets/<id>`` for that step only (a
    mount is not part of the committed layer); with ``env`` the step also sees it as that
    environment variable, read from the mounted file inside the container so the value
    never appears on a command line. Where the value comes from is the user's choice
    (``--secret id=ID,src=FILE`` or ``env=VAR``, ``secrets:`` in the config file, or
    ``IMAGEFACTORY_SECRET_<ID>``); the cache key holds the id, never the value.
    """

    id: str
    env: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not all(c.isalnum() or c in "-_." for c in self.id):
            raise StepError(f"secret id {self.id!r} must be letters, digits, '-', '_' or '.'")

    @property
    def target(self) -> str:
        return f"{SECRETS_DIR}/{self.id}"


# --- calls: the unit the executor runs and the plan prints -------------------
@dataclass(frozen=True)
class RunCall:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    workdir: str | None = None
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    secrets: tuple[Secret, ...] = ()

    def key_text(self) -> str:
        # bind-mount *sources* are host paths: their content is keyed by the step's inputs instead.
        # Secrets are keyed by id only: their values must never reach a cache key, label or log.
        mounts = [(m.type, m.target, m.readonly) for m in self.mounts]
        text = ["run", self.argv, self.env, self.user, self.workdir, mounts, self.network]
        if self.secrets:
            text.append([(s.id, s.env) for s in self.secrets])
        return json.dumps(text)


@dataclass(frozen=True)
class CopyCall:
    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: str | None = None
    from_stage: str | None = None  # name of the image (stage) a multi-stage copy reads

    def key_text(self, stage_ids: Mapping[str, str] | None = None) -> str:
        # host source paths are keyed by content digests (step inputs), not by where they sit;
        # a stage is keyed by its image ID, known only when the walk reaches this step.
        if self.from_stage is None:
            return json.dumps(["copy", [Path(s).name for s in self.sources], self.dest, self.chown, self.chmod, None])
        stage_id = (stage_ids or {}).get(self.from_stage)
        if stage_id is None:
            raise KeyError(self.from_stage)
        return json.dumps(["copy", list(self.sources), self.dest, self.chown, self.chmod, stage_id])


@dataclass(frozen=True)
class ConfigCall:
    args: tuple[str, ...]

    def key_text(self) -> str:
        return json.dumps(["config", self.args])


@dataclass(frozen=True)
class HostCall:
    """Work done on the host against the mounted container (e.g. debootstrap into it).

    Pure data: ``action`` names a function registered with :func:`host_action`, which the
    executor calls with this call, the working container, the step's log and the settings.
    """

    action: str
    description: str
    params: tuple[tuple[str, str], ...] = ()
    key: str = ""

    def key_text(self) -> str:
        return json.dumps(["host", self.description, self.key])

    def param(self, name: str) -> str:
        return dict(self.params)[name]


HostAction = Callable[[HostCall, "Container", Path, "Settings"], None]
HOST_ACTIONS: dict[str, HostAction] = {}


def host_action(name: str) -> Callable[[HostAction], HostAction]:
    """Register the function that carries out ``HostCall(action=name, ...)``."""

    def deco(fn: HostAction) -> HostAction:
        HOST_ACTIONS[name] = fn
        return fn

    return deco


Call = RunCall | CopyCall | ConfigCall | HostCall


@dataclass
class Rendered:
    """A step as text, calls and input digests: all the cache key needs, no buildah required."""

    kind: str
    summary: str
    calls: list[Call]
    inputs: list[str] = field(default_factory=list)

    @property
    def stages(self) -> list[str]:
        """Images this step reads (multi-stage copies): their IDs enter the key."""
        return [c.from_stage for c in self.calls if isinstance(c, CopyCall) and c.from_stage]

    def key_material(self, stage_ids: Mapping[str, str] | None = None) -> str:
        texts = [c.key_text(stage_ids) if isinstance(c, CopyCall) else c.key_text() for c in self.calls]
        return "\n".join([self.kind, *texts, *self.inputs])


# --- steps ------------------------------------------------------------------
class Step:
    """Base for all steps. ``boundary`` steps end a layer (commit + cache entry)."""

    boundary: ClassVar[bool] = True
    kind: ClassVar[str] = "step"

    def prepare(self, ctx: PrepareContext) -> Step:
        """Resolve inputs that need I/O; return the step with them filled in (default: nothing to do)."""
        return self

    def render(self, ctx: RenderContext) -> Rendered:  # pragma: no cover - abstract
        raise NotImplementedError

    def depends_on(self) -> list[Any]:
        """Other recipes (stages) whose images this step reads."""
        return []

    @property
    def needs_docker_format(self) -> bool:
        return False


def _env_tuple(env: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (env or {}).items()))


@dataclass
class Run(Step):
    """Run a shell script inside the image (``/bin/sh -ec``)."""

    script: str
    env: dict[str, str] | None = None
    user: str | None = None
    workdir: str | None = None
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    inputs: tuple[str, ...] = ()
    title: str | None = None
    secrets: tuple[Secret | str, ...] = ()
    kind: ClassVar[str] = "run"

    def render(self, ctx: RenderContext) -> Rendered:
        secrets = tuple(s if isinstance(s, Secret) else Secret(str(s)) for s in self.secrets)
        script = self.script.strip()
        exports = [f'{s.env}="$(cat {s.target})"; export {s.env}' for s in secrets if s.env]
        if exports:
            script = "\n".join([*exports, script])
        call = RunCall(("/bin/sh", "-ec", script), _env_tuple(self.env), self.user, self.workdir,
                       tuple(self.mounts), self.network, secrets)
        first = self.script.strip().splitlines()[0] if self.script.strip() else ""
        return Rendered(self.kind, self.title or first[:90], [call], list(self.inputs))


class Install(Step):
    """Install distribution packages by their Debian names; the platform maps and runs them."""

    kind: ClassVar[str] = "install"

    def __init__(self, *packages: str):
        flat: list[str] = []
        for p in packages:
            flat.extend([p] if isinstance(p, str) else list(p))
        if not flat:
            raise StepError("Install() needs at least one package name")
        self.packages = tuple(flat)

    def render(self, ctx: RenderContext) -> Rendered:
        names = ctx.platform.map_packages(self.packages)
        calls = ctx.platform.install_calls(names, variant=ctx.base_variant)
        return Rendered(self.kind, f"{len(names)} packages: {' '.join(names)[:80]}", calls)

    def __repr__(self) -> str:
        return f"Install{self.packages!r}"


@dataclass
class Copy(Step):
    """Copy a file or folder from the recipe's folder into the image; keyed by its bytes."""

    src: str
    dest: str
    chown: str | None = None
    mode: str | None = None
    kind: ClassVar[str] = "copy"
    # filled in by prepare(): where the file is and the digest of its bytes
    path: Path | None = field(default=None, repr=False)
    digest: str | None = field(default=None, repr=False)

    def prepare(self, ctx: PrepareContext) -> Copy:
        path = ctx.resolve_file(self.src)
        return replace(self, path=path, digest=ctx.digest(path))

    def render(self, ctx: RenderContext) -> Rendered:
        if self.path is None or self.digest is None:
            raise ctx.fail(f"Copy({self.src!r}) was rendered before it was prepared")
        call = CopyCall((str(self.path),), self.dest, self.chown, self.mode)
        return Rendered(self.kind, f"{self.src} → {self.dest}", [call], [f"{self.src}:{self.digest}"])


@dataclass
class CopyFrom(Step):
    """Copy built artifacts out of another stage or recipe (multi-stage builds)."""

    stage: Any  # a Recipe class, or the name of a stage of the current recipe
    src: str
    dest: str
    chown: str | None = None
    mode: str | None = None
    kind: ClassVar[str] = "copy-from"

    def depends_on(self) -> list[Any]:
        return [self.stage]

    # filled in when the plan resolves stages: the name of the image this copy reads
    stage_name: str | None = field(default=None, repr=False)

    def render(self, ctx: RenderContext) -> Rendered:
        if self.stage_name is None:
            raise ctx.fail(f"CopyFrom({self.stage!r}) was rendered before its stage was resolved")
        call = CopyCall((self.src,), self.dest, self.chown, self.mode, self.stage_name)
        return Rendered(self.kind, f"{self.stage_name}:{self.src} → {self.dest}", [call])


class _ConfigStep(Step):
    boundary: ClassVar[bool] = False
    kind: ClassVar[str] = "config"

    def config_args(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, ctx: RenderContext) -> Rendered:
        args = self.config_args()
        return Rendered(self.kind, " ".join(shlex.quote(a) for a in args)[:90], [ConfigCall(tuple(args))])


class Env(_ConfigStep):
    def __init__(self, **variables: str):
        self.variables = variables

    def config_args(self) -> list[str]:
        return [a for k, v in sorted(self.variables.items()) for a in ("--env", f"{k}={v}")]


class Label(_ConfigStep):
    def __init__(self, **labels: str):
        self.labels = labels

    def config_args(self) -> list[str]:
        return [a for k, v in sorted(self.labels.items()) for a in ("--label", f"{k}={v}")]


@dataclass
class User(_ConfigStep):
    user: str

    def config_args(self) -> list[str]:
        return ["--user", self.user]


@dataclass
class Workdir(_ConfigStep):
    path: str

    def config_args(self) -> list[str]:
        return ["--workingdir", self.path]


class Entrypoint(_ConfigStep):
    def __init__(self, *argv: str):
        self.argv = list(argv)

    def config_args(self) -> list[str]:
        return ["--entrypoint", json.dumps(self.argv)]


class Cmd(_ConfigStep):
    def __init__(self, *argv: str):
        self.argv = list(argv)

    def config_args(self) -> list[str]:
        return ["--cmd", json.dumps(self.argv)]


class Expose(_ConfigStep):
    def __init__(self, *ports: int | str):
        self.ports = [str(p) for p in ports]

    def config_args(self) -> list[str]:
        return [a for p in self.ports for a in ("--port", p)]


class Volume(_ConfigStep):
    def __init__(self, *paths: str):
        self.paths = list(paths)

    def config_args(self) -> list[str]:
        return [a for p in self.paths for a in ("--volume", p)]


@dataclass
class Healthcheck(_ConfigStep):
    """HEALTHCHECK exists only in the docker image format, so images using it commit as docker."""

    command: str
    interval: str = "30s"
    timeout: str = "5s"
    retries: int = 3
    start_period: str = "20s"

    @property
    def needs_docker_format(self) -> bool:
        return True

    def config_args(self) -> list[str]:
        return ["--healthcheck", f"CMD-SHELL {self.command}", "--healthcheck-interval", self.interval,
                "--healthcheck-timeout", self.timeout, "--healthcheck-retries", str(self.retries),
                "--healthcheck-start-period", self.start_period,
                "--label", f"io.imagefactory.healthcheck={self.command}"]


class Config(_ConfigStep):
    """Several image settings at once: ``Config(user=..., workdir=..., cmd=[...])``."""

    def __init__(self, *, user: str | None = None, workdir: str | None = None, cmd: list[str] | None = None,
                 entrypoint: list[str] | None = None, env: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None, expose: Iterable[int | str] = (),
                 volumes: Iterable[str] = ()):
        self.parts: list[_ConfigStep] = []
        if env:
            self.parts.append(Env(**env))
        if labels:
            self.parts.append(Label(**labels))
        if user is not None:
            self.parts.append(User(user))
        if workdir is not None:
            self.parts.append(Workdir(workdir))
        if entrypoint is not None:
            self.parts.append(Entrypoint(*entrypoint))
        if cmd is not None:
            self.parts.append(Cmd(*cmd))
        if expose:
            self.parts.append(Expose(*expose))
        if volumes:
            self.parts.append(Volume(*volumes))
        if not self.parts:
            raise StepError("Config() needs at least one setting")

    def config_args(self) -> list[str]:
        return [a for part in self.parts for a in part.config_args()]


@dataclass
class AddUser(Step):
    """Create a non-root user (and its group) with a home; the platform supplies the command."""

    name: str
    uid: int
    gid: int | None = None
    home: str | None = None
    shell: str = "/bin/bash"
    groups: tuple[str, ...] = ()
    owns: tuple[str, ...] = ()  # folders to create and hand to the user (e.g. /workspace)
    kind: ClassVar[str] = "add-user"

    def render(self, ctx: RenderContext) -> Rendered:
        gid = self.gid if self.gid is not None else self.uid
        home = self.home or f"/home/{self.name}"
        script = ctx.platform.add_user_script(self.name, self.uid, gid, home, self.shell, self.groups)
        for path in self.owns:
            script += f"\nmkdir -p {shlex.quote(path)} && chown {self.uid}:{gid} {shlex.quote(path)}"
        call = RunCall(("/bin/sh", "-ec", script))
        return Rendered(self.kind, f"{self.name} ({self.uid}:{gid}) home {home}", [call])


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
