"""Registry references and the record of what was pushed where (``STATE/pushed.json``).

``push`` writes one entry per remote reference; ``sign``, ``verify-signature`` and ``sbom`` read it to
find the manifest digest a registry serves for an image we built. The file lives in
``settings.state_path()``, so it is kept per storage root like the other state files.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import ConfigError, Settings

PUSHED_FILE = "pushed.json"
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass
class PushRecord:
    target: str
    ref: str  # CATALOGUE/PREFIX/NAME:TAG
    digest: str  # sha256:...
    registry: str  # HOST[:PORT]/PREFIX as given
    image: str = ""  # local reference pushed
    image_id: str = ""  # local image ID at push time
    pushed_at: float = 0.0

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0] if ":" in self.ref.rsplit("/", 1)[-1] else self.ref

    @property
    def digest_ref(self) -> str:
        """The immutable reference: what gets signed, never the tag."""
        return f"{self.repository}@{self.digest}"


def normalize_registry(registry: str | None, settings: Settings | None = None) -> str:
    """``HOST[:PORT][/PREFIX]`` from the flag or the ``registry`` setting, without scheme or slashes."""
    value = registry or (settings.registry if settings else None)
    if not value:
        raise ConfigError("no registry given: pass --registry HOST[:PORT]/PREFIX or set `registry` in "
                          "imagefactory.yaml (IMAGEFACTORY_REGISTRY)")
    value = value.strip()
    for scheme in ("http://", "https://", "docker://"):
        if value.startswith(scheme):
            value = value[len(scheme):]
    value = value.strip("/")
    if not value or " " in value or "@" in value:
        raise ConfigError(f"bad registry {registry!r}: expected HOST[:PORT]/PREFIX, e.g. registry.example:5000/team")
    return value


def registry_host(registry: str) -> str:
    return registry.split("/", 1)[0]


def is_loopback(registry: str) -> bool:
    """Registries on this machine are usually plain HTTP test registries."""
    host = registry_host(registry)
    if host.startswith("["):
        name = host.split("]", 1)[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in _LOOPBACK or name.startswith("127.")


def remote_ref(registry: str, image_name: str, tag: str) -> str:
    return f"{registry}/{image_name}:{tag}"


# --- pushed.json --------------------------------------------------------------------------------
def pushed_path(settings: Settings) -> Path:
    return settings.state_path() / PUSHED_FILE


@contextmanager
def _locked(settings: Settings):
    with open(settings.state_path() / (PUSHED_FILE + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_pushed(settings: Settings) -> dict[str, PushRecord]:
    path = pushed_path(settings)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except ValueError:
        return {}
    out: dict[str, PushRecord] = {}
    fields = set(PushRecord.__dataclass_fields__)
    for ref, item in (raw or {}).items():
        if isinstance(item, dict) and {"target", "ref", "digest", "registry"} <= set(item):
            out[ref] = PushRecord(**{k: v for k, v in item.items() if k in fields})
    return out


def record_push(settings: Settings, record: PushRecord) -> None:
    with _locked(settings):
        records = load_pushed(settings)
        records[record.ref] = record
        path = pushed_path(settings)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(records.items())}, indent=2))
        tmp.replace(path)


def find_pushed(settings: Settings, *, ref: str | None = None, target: str | None = None,
                registry: str | None = None, image_id: str | None = None) -> PushRecord | None:
    """The newest record matching every given field (``ref`` alone is exact)."""
    records = load_pushed(settings)
    if ref is not None:
        return records.get(ref)
    found = [r for r in records.values()
             if (target is None or r.target == target)
             and (registry is None or r.registry == registry)
             and (image_id is None or r.image_id == image_id)]
    return max(found, key=lambda r: r.pushed_at, default=None)


def new_record(target: str, ref: str, digest: str, registry: str, image: str, image_id: str) -> PushRecord:
    return PushRecord(target=target, ref=ref, digest=digest, registry=registry, image=image,
                      image_id=image_id, pushed_at=time.time())
