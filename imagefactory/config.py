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

import yaml

from .buildah import StorageOptions

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
    jobs: int = 2
    squash: bool = True
    no_cache: bool = False
    source_date_epoch: int | None = None
    # where things come from
    debian_mirror: str | None = None
    debian_suite: str = "trixie"
    source_cache: str = str(_cache_home() / "sources")
    source_mirrors: list[str] = field(default_factory=list)
    recipe_paths: list[str] = field(default_factory=list)
    trust_host_ca: bool = True
    host_ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    # where we write
    state_dir: str = str(_cache_home() / "state")
    log_dir: str = str(_cache_home() / "logs")
    # supply chain
    registry: str | None = None
    cosign_key: str | None = None
    cosign_password_file: str | None = None
    sbom_dir: str | None = None
    # free-form values for recipes, e.g. {"s4.context": "/src/app"}
    values: dict[str, str] = field(default_factory=dict)
    # where each setting came from, for `doctor` and error messages
    origin: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def storage(self) -> StorageOptions:
        return StorageOptions(self.root, self.runroot, self.storage_driver, self.isolation)

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
        if name == "values":
            if isinstance(raw, dict):
                return {str(k): str(v) for k, v in raw.items()}
            return dict(_split_pair(p) for p in _split_list(raw))
        if "list" in str(kind):
            return _split_list(raw) if isinstance(raw, str) else [str(x) for x in raw]
        if "bool" in str(kind):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if "int" in str(kind):
            return None if raw in (None, "") else int(raw)
        return None if raw is None else str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: setting {name!r} has a bad value {raw!r} ({exc}); "
                          f"expected {kind} like {default!r}") from None


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
         overrides: dict[str, Any] | None = None) -> Settings:
    """Merge the layers; later layers win field by field (values merge key by key)."""
    env = os.environ if env is None else env
    settings = Settings()
    path = find_config_file(config_file)
    if path:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        _apply(settings, {k.replace("-", "_"): v for k, v in data.items()}, f"config file {path}")
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
    _validate(settings)
    return settings


CHOICES = {"isolation": ("chroot", "oci", "rootless"), "platform": ("debian", "ubi9")}


def _validate(settings: Settings) -> None:
    for name, allowed in CHOICES.items():
        value = getattr(settings, name)
        if value not in allowed:
            raise ConfigError(f"{settings.origin.get(name, 'default')}: setting {name!r} is {value!r}; "
                              f"choose one of {', '.join(allowed)}")
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


def _apply(settings: Settings, data: dict[str, Any], source: str) -> None:
    for name, raw in data.items():
        if name not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(f"{source}: unknown setting {name!r}; known settings: {known}")
        value = _coerce(name, raw, source)
        if name == "values":
            merged = dict(settings.values)
            merged.update(value)
            value = merged
        setattr(settings, name, value)
        settings.origin[name] = source
