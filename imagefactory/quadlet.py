"""Podman Quadlet units from a recipe's :class:`~imagefactory.recipe.Runtime`.

Service images get ``NAME.container``: the image (by digest once ``push`` recorded it,
else the local reference), ``ContainerName=NAME``, published ports, named volumes with
``:Z``, plain environment, secrets as podman secrets (``Secret=NAME,type=env,target=VAR``:
a value is never written into a unit), the health check with its timing and
``HealthOnFailure=kill`` (unless the recipe says otherwise), user/group, capabilities and
limits. Every unit waits for ``network-online.target``, gets ``TimeoutStartSec=900`` (a first
pull of a large image outlasts systemd's 90 s default), ``Restart=on-failure`` with
``RestartSec=10s`` and ``WantedBy=multi-user.target default.target``.

A runtime's ``networks`` become ``NAME.network`` units the container joins; with
``volume_units`` every named volume gets a ``NAME.volume`` unit (systemd creates it before the
container starts). ``auto_update="registry"`` writes ``AutoUpdate=registry`` and then needs the
pushed *tag*, not the digest: ``podman auto-update`` follows a tag, a digest never moves.
:func:`butane` wraps the units in Butane ``storage.files`` entries for
``/etc/containers/systemd/``.

Dev and test images get ``NAME-shell.container``: a long-running container with the
same settings ``imagefactory shell`` uses (project at /workspace, uid 1000, the dev
volumes, NET_ADMIN/NET_RAW only); enter it with ``podman exec -it NAME-shell sh -l``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Settings
from .podman import volume_parts, effective_runtime, is_dev_image, is_named_volume, volume_with_options
from .recipe import Recipe, Runtime

PUSHED_FILE = "pushed.json"
UNIT_DIR = "/etc/containers/systemd"  # rootful Quadlet units (rootless: ~/.config/containers/systemd)
TIMEOUT_START_SEC = "900"  # a first pull of a large image outlasts systemd's 90 s default
RESTART_SEC = "10s"
# Health timing when the recipe sets a health command but not these (podman's own interval is 30s).
HEALTH_DEFAULTS = {"interval": "30s", "timeout": "10s", "start_period": "60s", "retries": 3, "on_failure": "kill"}
HEALTH_ON_FAILURE = ("none", "kill", "restart", "stop")
AUTO_UPDATE = ("registry", "local")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class QuadletError(ValueError):
    """A runtime or option that cannot become a valid unit; the message says what to change."""


@dataclass
class Unit:
    filename: str
    text: str
    image: str = ""
    secrets: dict[str, str] = field(default_factory=dict)  # podman secret name -> env var


def pushed_entries(settings: Settings) -> list[dict]:
    """Entries ``{target, ref, digest, registry, pushed_at}`` that `push` recorded in the state folder.

    `push` keeps a mapping ``ref -> entry``; a list of entries is read as well.
    """
    path = settings.state_path() / PUSHED_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return []
    if isinstance(data, dict):
        # {"entries": [...]} or {target: entry} or {target: [entries]}
        if isinstance(data.get("entries"), list):
            data = data["entries"]
        else:
            flat: list = []
            for key, value in data.items():
                for entry in value if isinstance(value, list) else [value]:
                    if isinstance(entry, dict):
                        flat.append({"target": key, **entry})
            data = flat
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def digest_ref(ref: str, digest: str) -> str:
    """``registry/name:tag`` + ``sha256:...`` → ``registry/name@sha256:...``."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return f"{name}@{digest}"


def newest_push(recipe: type[Recipe], settings: Settings, registry: str | None = None) -> dict | None:
    """The newest `push` record of this target (optionally to one registry), or None."""
    names = {recipe.target_name(), recipe.name, recipe.image_ref()}
    found = [e for e in pushed_entries(settings)
             if (e.get("target") in names or e.get("image") in names) and e.get("digest") and e.get("ref")
             and (registry is None or str(e.get("registry", "")).strip("/") == registry.strip("/"))]
    if not found:
        return None
    return max(enumerate(found), key=lambda ie: (float(ie[1].get("pushed_at") or 0), ie[0]))[1]


def image_for(recipe: type[Recipe], settings: Settings, registry: str | None = None) -> str:
    """The newest `push` record of this target by digest (optionally to one registry), else the local ref."""
    pushed = newest_push(recipe, settings, registry)
    if pushed:
        return digest_ref(str(pushed["ref"]), str(pushed["digest"]))
    return recipe.image_ref()


def auto_update_image(recipe: type[Recipe], settings: Settings, mode: str, registry: str | None = None) -> str:
    """The reference ``AutoUpdate=MODE`` can follow: the pushed tag (registry) or the local tag (local).

    A digest never changes, so ``podman auto-update`` could never update it: auto-update trades
    the digest pin (the unit runs exactly what was signed) for following a tag.
    """
    if mode not in AUTO_UPDATE:
        raise QuadletError(f"--auto-update {mode!r}: choose one of {', '.join(AUTO_UPDATE)}")
    if mode == "local":
        return recipe.image_ref()
    pushed = newest_push(recipe, settings, registry)
    if not pushed:
        where = f" to {registry}" if registry else ""
        raise QuadletError(f"AutoUpdate=registry for {recipe.target_name()} needs a pushed tag, but this state folder "
                           f"has no push of it{where}: run `imagefactory push {recipe.target_name()}` first, "
                           "or use --auto-update local (follows the local tag) or no --auto-update (pins the digest)")
    ref = str(pushed["ref"])
    if "@" in ref:
        raise QuadletError(f"AutoUpdate=registry for {recipe.target_name()}: the pushed reference {ref} is a digest; "
                           "push it under a tag (podman auto-update follows tags only)")
    return ref


def secret_name(recipe: type[Recipe], var: str) -> str:
    """Podman secret holding VAR for this image, e.g. ``s4-aws-secret-access-key``."""
    return f"{recipe.name}-{var.lower().replace('_', '-')}"


def _env_line(key: str, value: str) -> str:
    text = f"{key}={value}"
    if any(c in text for c in ' "\\\'$%'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        return f'Environment="{escaped}"'
    return f"Environment={text}"


def _escape(value: str) -> str:
    """systemd expands %-specifiers in unit values; keep literal percent signs."""
    return value.replace("%", "%%")


def _check_name(recipe: type[Recipe], kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise QuadletError(f"{recipe.target_name()}: runtime {kind} name {name!r} is not a valid podman name "
                           "(letters, digits, '_', '.', '-'; starts with a letter or digit)")
    return name


def _header(origin: str, service: str) -> list[str]:
    return [f"# Generated by imagefactory quadlet{origin}: do not edit, regenerate.",
            f"# Install: copy to {UNIT_DIR}/ (or ~/.config/containers/systemd/), then",
            f"#   systemctl daemon-reload && systemctl start {service}"]


def _health_lines(recipe: type[Recipe], rt: Runtime) -> list[str]:
    if not rt.health_cmd:
        return []
    on_failure = rt.health_on_failure or HEALTH_DEFAULTS["on_failure"]
    if on_failure not in HEALTH_ON_FAILURE:
        raise QuadletError(f"{recipe.target_name()}: runtime health_on_failure={on_failure!r}; "
                           f"podman knows {', '.join(HEALTH_ON_FAILURE)}")
    return [f"HealthCmd={_escape(rt.health_cmd)}",
            f"HealthInterval={rt.health_interval or HEALTH_DEFAULTS['interval']}",
            f"HealthTimeout={rt.health_timeout or HEALTH_DEFAULTS['timeout']}",
            f"HealthStartPeriod={rt.health_start_period or HEALTH_DEFAULTS['start_period']}",
            f"HealthRetries={rt.health_retries if rt.health_retries is not None else HEALTH_DEFAULTS['retries']}",
            f"HealthOnFailure={on_failure}"]


def render(recipe: type[Recipe], settings: Settings, project: str | Path | None = None,
           registry: str | None = None, auto_update: str | None = None) -> Unit:
    """The ``.container`` unit of one target (see :func:`render_all` for its network/volume units)."""
    dev = is_dev_image(recipe)
    rt = effective_runtime(recipe, dev)
    image = auto_update_image(recipe, settings, auto_update, registry) if auto_update else \
        image_for(recipe, settings, registry)
    desc = recipe.description() or recipe.name
    container = f"{recipe.name}-shell" if dev else recipe.name
    filename = f"{container}.container"
    secrets = {secret_name(recipe, var): var for var in rt.secrets}
    lines = _header(f" {recipe.target_name()}", f"{container}.service")
    if secrets:
        lines.append("# Secrets (values never appear in this file); create each once:")
        lines += [f"#   printf %s \"${var}\" | podman secret create {name} -" for name, var in secrets.items()]
    if auto_update == "registry":
        lines.append("# AutoUpdate=registry follows the tag below (podman auto-update pulls and restarts when it")
        lines.append("# moves); without --auto-update the unit pins the pushed digest instead.")
    if dev:
        lines.append(f"# Dev shell: podman exec -it {container} sh -l")
    lines += ["", "[Unit]", f"Description={_escape(desc + (' (dev shell)' if dev else ''))}",
              "Wants=network-online.target", "After=network-online.target", "",
              "[Container]", f"Image={image}", f"ContainerName={container}"]
    if auto_update:
        lines.append(f"AutoUpdate={auto_update}")
    if rt.user:
        lines.append(f"User={rt.user}")
    if rt.group:
        lines.append(f"Group={rt.group}")
    for net in rt.networks:
        lines.append(f"Network={_check_name(recipe, 'network', net)}.network")
    for port in rt.ports:
        lines.append(f"PublishPort={port}")
    if dev:
        proj = Path(project or Path.cwd()).resolve()
        lines.append(f"Volume={proj}:{rt.mount_project}:Z")
    for vol in rt.volumes:
        extra = ("Z", "U") if dev and is_named_volume(vol) else ("Z",)
        spec = volume_with_options(vol, *extra)
        if rt.volume_units and is_named_volume(vol):
            source = _check_name(recipe, "volume", volume_parts(vol)[0])
            spec = f"{source}.volume" + spec[len(source):]
        lines.append(f"Volume={spec}")
    for key, value in sorted(rt.environment.items()):
        lines.append(_env_line(key, value))
    for name, var in secrets.items():
        lines.append(f"Secret={name},type=env,target={var}")
    lines += _health_lines(recipe, rt)
    if rt.cap_drop:
        lines.append(f"DropCapability={' '.join(rt.cap_drop)}")
    if rt.cap_add:
        lines.append(f"AddCapability={' '.join(rt.cap_add)}")
    if rt.workdir:
        lines.append(f"WorkingDir={rt.workdir}")
    podman_args = []
    if rt.cpus:
        podman_args += ["--cpus", str(rt.cpus)]
    if rt.memory:
        podman_args += ["--memory", str(rt.memory)]
    if rt.pids_limit:
        podman_args += ["--pids-limit", str(int(rt.pids_limit))]
    if podman_args:
        lines.append(f"PodmanArgs={' '.join(podman_args)}")
    if dev:
        lines.append("Exec=sleep infinity")
    lines += ["", "[Service]", "Restart=on-failure", f"RestartSec={RESTART_SEC}",
              f"TimeoutStartSec={TIMEOUT_START_SEC}", "", "[Install]",
              "WantedBy=multi-user.target default.target", ""]
    return Unit(filename, "\n".join(lines), image, secrets)


def _side_unit(kind: str, name: str) -> Unit:
    """``NAME.network`` / ``NAME.volume``: podman object NAME, created by systemd before the containers
    that name it (the same text for every target, so targets can share it)."""
    section, key = ("Network", "NetworkName") if kind == "network" else ("Volume", "VolumeName")
    filename = f"{name}.{kind}"
    lines = _header("", f"{name}-{kind}.service")
    lines += ["", "[Unit]", f"Description=podman {kind} {name}", "",
              f"[{section}]", f"{key}={name}", ""]
    return Unit(filename, "\n".join(lines))


def render_all(recipe: type[Recipe], settings: Settings, project: str | Path | None = None,
               registry: str | None = None, auto_update: str | None = None) -> list[Unit]:
    """The ``.container`` unit, then the ``.network`` and ``.volume`` units it refers to."""
    units = [render(recipe, settings, project=project, registry=registry, auto_update=auto_update)]
    rt = effective_runtime(recipe, is_dev_image(recipe))
    units += [_side_unit("network", net) for net in rt.networks]
    if rt.volume_units:
        units += [_side_unit("volume", volume_parts(v)[0]) for v in rt.volumes if is_named_volume(v)]
    return units


def merge(units: list[Unit]) -> list[Unit]:
    """Units of several targets: a shared network/volume unit once; two different units of one name fail."""
    seen: dict[str, Unit] = {}
    for unit in units:
        other = seen.get(unit.filename)
        if other is not None and other.text != unit.text:
            raise QuadletError(f"two targets write different {unit.filename} units; give them distinct names")
        seen.setdefault(unit.filename, unit)
    return list(seen.values())


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so the units stay readable in the Butane file."""


_BlockDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def butane(units: list[Unit], variant: str = "fcos", version: str = "1.5.0") -> str:
    """Butane config whose ``storage.files`` place the units in /etc/containers/systemd/ (mode 0644)."""
    files = [{"path": f"{UNIT_DIR}/{u.filename}", "mode": 0o644, "contents": {"inline": u.text}} for u in units]
    doc = {"variant": variant, "version": version, "storage": {"files": files}}
    head = ("# Butane config from imagefactory quadlet: places the Quadlet units in "
            f"{UNIT_DIR}/ (mode 420 = 0644).\n"
            "# Transpile with `butane --pretty --strict`; podman secrets named in the units are created on the host.\n")
    return head + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=1000)


def write_units(units: list[Unit], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for unit in units:
        path = out / unit.filename
        path.write_text(unit.text)
        paths.append(path)
    return paths
