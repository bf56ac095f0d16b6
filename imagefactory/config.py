"""Settings from one precedence order: defaults < config file < IMAGEFACTORY_* env < CLI flags.

Every knob a user can turn lives in :class:`Settings`, so the CLI, tests and the
library API all see the same names (documented in docs/configuration.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .storage import StorageOptions

ENV_PREFIX = "IMAGEFACTORY_"
CONFIG_FILENAMES = ("imagefactory.yaml", ".imagefactory.yaml")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagefactory"


@dataclass
class Settings:
    # buildah storage and isolation
    root: str | None = None
    runroot: str | None = None
    storage_driver: str | None = None
    isolation: str = "chroot"
    # what to build and how
    platform: str = "debian"
    # CPU architectures to build (OCI names): empty = the build machine's; several make a manifest list
    arches: list[str] = field(default_factory=list)
    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)  # containers running at once
    squash: bool = True
    # overlay stacks at most ~128 layers: an image whose chain would pass this builds on a flattened parent
    max_layers: int = 100
    no_cache: bool = False
    source_date_epoch: int | None = None
    # where things come from
    debian_mirror: str | None = None
    debian_suite: str = "trixie"
    source_cache: str = str(_cache_home() / "sources")
    source_mirrors: list[str] = field(default_factory=list)
    recipe_paths: list[str] = field(default_factory=list)
    trust_host_ca: bool = True
    # network-touching work (source fetches, pulls, pushes): attempts and first backoff (seconds)
    network_retries: int = 4
    network_retry_delay: int = 2
    host_ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    # where we write
    state_dir: str = str(_cache_home() / "state")
    log_dir: str = str(_cache_home() / "logs")
    # supply chain
    registry: str | None = None
    # registry step cache (cache_registry.py): repositories to look entries up in / push them to
    cache_from: list[str] = field(default_factory=list)
    cache_to: str | None = None
    cache_required: bool = False  # a cache registry that fails is an error, not a rebuild
    authfile: str | None = None  # containers auth file; None: REGISTRY_AUTH_FILE or the tools' default
    tls_verify: bool = True
    cosign_key: str | None = None
    cosign_password_file: str | None = None
    sbom_dir: str | None = None
    # free-form values for recipes, e.g. {"s4.context": "/src/app"}
    values: dict[str, str] = field(default_factory=dict)
    # build-time secrets by id: "env:VAR", "file:PATH" or a path (see steps.Secret)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # where each setting came from, for `doctor` and error messages
    origin: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def storage(self) -> StorageOptions:
        tmp = Path(self.state_dir) / self.storage_key() / "tmp"
        return StorageOptions(self.root, self.runroot, self.storage_driver, self.isolation,
                              tmp_root=str(tmp)).resolved()

    @property
    def build_arches(self) -> tuple[str, ...]:
        """The architectures to build, the build machine's when none are configured."""
        from .arches import host_arch

        return tuple(self.arches) or (host_arch().name,)

    def value(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)

    def storage_key(self) -> str:
        """Identifies a storage root, so state (pushed digests, reports) is kept per store."""
        import hashlib

        return hashlib.sha256(f"{self.root}|{self.runroot}|{self.storage_driver}".encode()).hexdigest()[:12]

    def state_path(self) -> Path:
        path = Path(self.state_dir) / self.storage_key()
        path.mkdir(parents=True, exist_ok=True)
        return path


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "origin"}


def _coerce(name: str, raw: Any, source: str) -> Any:
    default = _FIELDS[name].default
    kind = _FIELDS[name].type
    try:
        if name in _DICTS:
            if isinstance(raw, dict):
                return {str(k): str(v) for k, v in raw.items()}
            if not isinstance(raw, str):
                raise TypeError(f"expected a mapping, got {type(raw).__name__}")
            return dict(_split_pair(p) for p in _split_list(raw))
        if "list" in str(kind):
            if isinstance(raw, (dict, int, float, bool)):
                raise TypeError(f"expected a list, got {type(raw).__name__}")
            return _split_list(raw) if isinstance(raw, str) else [str(x) for x in raw]
        if "bool" in str(kind):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in _TRUE + _FALSE:
                raise ValueError(f"not a yes/no value (use one of {', '.join(_TRUE + _FALSE)})")
            return text in _TRUE
        if "int" in str(kind):
            return None if raw in (None, "") else int(raw)
        return None if raw is None else str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: setting {name!r} has a bad value {raw!r} ({exc}); "
                          f"expected {kind} like {default!r}") from None


_DICTS = ("values", "secrets")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _split_list(raw: str) -> list[str]:
    return [p for p in raw.replace(",", " ").split() if p]


def _split_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def find_config_file(explicit: str | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing file to --config")
        return path
    if os.environ.get(ENV_PREFIX + "CONFIG"):
        return find_config_file(os.environ[ENV_PREFIX + "CONFIG"])
    for name in CONFIG_FILENAMES:
        if Path(name).is_file():
            return Path(name)
    user = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "imagefactory" / "config.yaml"
    return user if user.is_file() else None


def load(config_file: str | None = None, env: dict[str, str] | None = None,
         overrides: dict[str, Any] | None = None, platforms: tuple[str, ...] = ()) -> Settings:
    """Merge the layers; later layers win field by field (values merge key by key).

    ``platforms``: the known platform names (the CLI passes imagefactory.platforms.PLATFORMS), so a
    typo is reported with the file or variable it came from; without it, planning reports it.
    """
    env = os.environ if env is None else env
    settings = Settings()
    path = find_config_file(config_file)
    if path:
        data, lines = _read_config_file(path)
        _apply(settings, {str(k).replace("-", "_"): v for k, v in data.items()}, f"config file {path}",
               {str(k).replace("-", "_"): n for k, n in lines.items()})
        _anchor_paths(settings, path.resolve().parent)
    from_env = {}
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env:
            from_env[name] = env[key]
    if "SOURCE_DATE_EPOCH" in env and "source_date_epoch" not in from_env:
        from_env["source_date_epoch"] = env["SOURCE_DATE_EPOCH"]
    _apply(settings, from_env, "environment")
    _apply(settings, {k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    _absolute_paths(settings, Path.cwd())
    _validate(settings, platforms)
    return settings


CHOICES = {"isolation": ("chroot", "oci", "rootless")}


def _read_config_file(path: Path) -> tuple[dict, dict[str, int]]:
    """The mapping in a config file plus the line each top-level key is on (for error messages)."""
    import yaml  # only when there is a file to read: 12 ms of every command's start-up otherwise

    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} line 1: expected a mapping of settings at the top level")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return data, lines


def _validate(settings: Settings, platforms: tuple[str, ...] = ()) -> None:
    for name, allowed in {**CHOICES, **({"platform": platforms} if platforms else {})}.items():
        value = getattr(settings, name)
        if value not in allowed:
            raise ConfigError(f"{settings.origin.get(name, 'default')}: setting {name!r} is {value!r}; "
                              f"choose one of {', '.join(allowed)}")
    if settings.network_retries < 1:
        raise ConfigError(f"{settings.origin.get('network_retries')}: setting 'network_retries' must be at least 1")
    if settings.arches:
        from .arches import ArchError, parse_arches

        try:
            settings.arches = list(parse_arches(settings.arches))
        except ArchError as exc:
            raise ConfigError(f"{settings.origin.get('arches', 'default')}: setting 'arches': {exc}") from None
    if settings.jobs < 1:
        raise ConfigError(f"{settings.origin.get('jobs')}: setting 'jobs' must be at least 1")


_PATH_LISTS = ("source_mirrors", "recipe_paths")


def _anchor_paths(settings: Settings, folder: Path) -> None:
    """Relative folders in a config file mean: relative to that file, not to the caller's cwd."""
    for name in _PATH_LISTS:
        anchored = []
        for entry in getattr(settings, name):
            module_name = (name == "recipe_paths" and "/" not in entry and not entry.endswith(".py")
                           and not (folder / entry).exists())
            if "://" in entry or Path(entry).is_absolute() or module_name:
                anchored.append(entry)
            else:
                anchored.append(str((folder / entry).resolve()))
        setattr(settings, name, anchored)
    for sid, spec in list(settings.secrets.items()):
        kind, _, rest = spec.partition(":") if spec.startswith(("file:", "env:")) else ("file", "", spec)
        if kind == "file" and not Path(rest).is_absolute():
            settings.secrets[sid] = "file:" + str((folder / rest).resolve())
    for name in _PATHS:  # only those the file set: defaults are absolute already
        if name in settings.origin and isinstance(getattr(settings, name), str):
            setattr(settings, name, _absolute(getattr(settings, name), folder))


# Settings that name a file or folder. Relative ones from the environment or the command line mean
# "relative to where the command started"; they are made absolute once, here, because buildah and
# the steps run with other working directories (a relative TMPDIR handed to buildah fails).
_PATHS = ("root", "runroot", "state_dir", "log_dir", "source_cache", "sbom_dir", "cosign_key",
          "cosign_password_file", "host_ca_bundle", "authfile")


def _absolute(entry: str, folder: Path) -> str:
    if not entry or "://" in entry or Path(entry).is_absolute():
        return entry
    return os.path.normpath(folder / os.path.expanduser(entry))


def _absolute_paths(settings: Settings, cwd: Path) -> None:
    """Resolve every relative path setting against ``cwd`` (config-file ones are already anchored)."""
    for name in _PATHS:
        value = getattr(settings, name)
        if isinstance(value, str):
            setattr(settings, name, _absolute(value, cwd))
    settings.source_mirrors = [_absolute(m, cwd) for m in settings.source_mirrors]
    settings.recipe_paths = [p if ("/" not in p and not p.endswith(".py") and not (cwd / p).exists())
                             else _absolute(p, cwd) for p in settings.recipe_paths]
    for sid, spec in list(settings.secrets.items()):
        if spec.startswith("file:"):
            settings.secrets[sid] = "file:" + _absolute(spec[5:], cwd)
        elif not spec.startswith("env:"):
            settings.secrets[sid] = _absolute(spec, cwd)


def _apply(settings: Settings, data: dict[str, Any], source: str, lines: dict[str, int] | None = None) -> None:
    import difflib

    for name, raw in data.items():
        where = f"{source} line {lines[name]}" if lines and name in lines else source
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, list(_FIELDS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(f"{where}: unknown setting {name!r}; {hint}known settings: {known}")
        value = _coerce(name, raw, where)
        if name in _DICTS:
            merged = dict(getattr(settings, name))
            merged.update(value)
            value = merged
        setattr(settings, name, value)
        settings.origin[name] = where
