"""The SBOM data model, image-root access and helpers shared by the collectors and the writers."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from packageurl import PackageURL

MANIFEST_PATH = "usr/local/share/imagefactory/manifest.json"
DPKG_STATUS = "var/lib/dpkg/status"
RPM_DB = "var/lib/rpm"
COMPONENT_KINDS = ("deb", "rpm", "source", "npm", "binary", "golang", "file")
PROP_PREFIX = "imagefactory"
SPDX_NAMESPACE_BASE = "https://spdx.org/spdxdocs/imagefactory"
# Fixed namespace for uuid5 serial numbers: uuid5(NAMESPACE_URL, "imagefactory-sbom")
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "imagefactory-sbom")


class ManifestError(ValueError):
    """The imagefactory build manifest is malformed."""


class SbomValidationError(ValueError):
    """A generated document failed validation with the reference library."""

    def __init__(self, fmt: str, messages: list[str]):
        self.format = fmt
        self.messages = messages
        shown = "\n  ".join(messages[:50])
        more = f"\n  ... and {len(messages) - 50} more" if len(messages) > 50 else ""
        super().__init__(f"{fmt} document failed validation ({len(messages)} problems):\n  {shown}{more}")


# --------------------------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class BaseImage:
    """The image at the bottom of the chain, e.g. ``debian trixie minbase via debootstrap``."""

    description: str
    image_id: str | None = None
    name: str | None = None
    digest: str | None = None


@dataclass
class ImageFacts:
    name: str
    tag: str
    image_id: str
    digest: str | None = None
    # (name, image_id), nearest parent first, base-most last
    parents: list[tuple[str, str]] = field(default_factory=list)
    base: BaseImage | None = None
    platform: str = "debian"  # "debian" | "ubi9"
    created: str | None = None  # ISO 8601; SOURCE_DATE_EPOCH wins when set
    labels: dict[str, str] = field(default_factory=dict)
    # the image config's architecture (OCI name: amd64, arm64): the image purl's and the source
    # libraries' ``arch`` qualifier (a manifest entry's own ``arch``, from a cross build, wins)
    architecture: str | None = None


@dataclass(frozen=True)
class PatchInfo:
    name: str
    sha256: str | None = None
    url: str | None = None


@dataclass
class Component:
    kind: str  # deb | rpm | source | npm | binary (pinned) | golang (module in a Go binary) | file (unidentified)
    name: str
    version: str  # "" when unknown (unidentified files)
    purl: str | None  # None only for unidentified files
    license: str | None = None  # valid SPDX expression (LicenseRef-* listed in Inventory.license_refs) or None
    hashes: dict[str, str] = field(default_factory=dict)  # "SHA-256"/"SHA-512"/"SHA-1" -> lowercase hex
    download_url: str | None = None
    homepage: str | None = None
    supplier: str | None = None
    description: str | None = None
    arch: str | None = None
    source_name: str | None = None
    source_version: str | None = None
    optional: bool = False  # npm dev dependency kept on request -> CycloneDX scope "optional"
    patches: list[PatchInfo] = field(default_factory=list)
    properties: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """Stable unique reference (CycloneDX bom-ref)."""
        return self.purl or f"file:{self.name}"

    def sort_key(self) -> tuple:
        return (COMPONENT_KINDS.index(self.kind), self.name.lower(), self.name, self.version, self.ref)


@dataclass
class Inventory:
    facts: ImageFacts
    os_release: dict[str, str]
    components: list[Component]
    license_refs: dict[str, str] = field(default_factory=dict)  # LicenseRef-x -> original license name
    notes: list[str] = field(default_factory=list)
    image_license: str | None = None  # from the org.opencontainers.image.licenses label

    def by_kind(self, kind: str) -> list[Component]:
        return [c for c in self.components if c.kind == kind]


# --------------------------------------------------------------------------------------------- root access


def _resolve_in_root(root: Path, rel: str | PurePosixPath) -> Path:
    """Map a path inside the image to the host, following symlinks *inside* the root (never escaping it)."""
    parts = [p for p in PurePosixPath(rel).parts if p != "/"]
    cur: list[str] = []
    hops = 0
    while parts:
        p = parts.pop(0)
        if p in ("", "."):
            continue
        if p == "..":
            if cur:
                cur.pop()
            continue
        cand = root.joinpath(*cur, p)
        if cand.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks resolving {rel} in image root")
            target = PurePosixPath(os.readlink(cand))
            tparts = list(target.parts)
            if target.is_absolute():
                cur = []
                tparts = tparts[1:]
            parts = tparts + parts
            continue
        cur.append(p)
    return root.joinpath(*cur)


def _read_text(root: Path, rel: str) -> str | None:
    try:
        path = _resolve_in_root(root, rel)
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    except OSError:
        return None


def read_os_release(root: Path) -> dict[str, str]:
    text = _read_text(root, "etc/os-release") or _read_text(root, "usr/lib/os-release") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _distro_qualifier(osr: dict[str, str]) -> str | None:
    ident = osr.get("ID")
    ver = osr.get("VERSION_ID") or osr.get("VERSION_CODENAME")
    if not ident:
        return None
    return f"{ident}-{ver}" if ver else ident



# --------------------------------------------------------------------------------------------- shared helpers


def _hex_id(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip().lower()
    return v.split(":", 1)[1] if v.startswith("sha256:") else v


def _oci_purl(name: str, digest_hex: str | None, tag: str | None = None, arch: str | None = None) -> str:
    """purl-spec's oci type; ``arch`` is one of its documented qualifiers (one instance of a manifest list)."""
    repo, _, short = name.rpartition("/")
    quals: dict[str, str] = {}
    if arch:
        quals["arch"] = arch
    if repo:
        quals["repository_url"] = name
    if tag:
        quals["tag"] = tag
    version = f"sha256:{digest_hex}" if digest_hex else None
    return PackageURL(type="oci", name=short.lower(), version=version, qualifiers=quals or None).to_string()


@dataclass(frozen=True)
class _Ancestor:
    name: str
    image_id: str | None
    digest: str | None
    description: str | None

    @property
    def purl(self) -> str:
        return _oci_purl(self.name, self.digest or self.image_id)


def _ancestors(facts: ImageFacts) -> list[_Ancestor]:
    out: list[_Ancestor] = []
    seen: set[str] = set()
    base_id = _hex_id(facts.base.image_id) if facts.base else None
    for name, iid in facts.parents:
        iid = _hex_id(iid)
        desc = facts.base.description if facts.base and iid and iid == base_id else None
        key = iid or name
        if key in seen:
            continue
        seen.add(key)
        out.append(_Ancestor(name, iid, None, desc))
    if facts.base and (base_id or facts.base.name) and (base_id or facts.base.name) not in seen:
        out.append(_Ancestor(facts.base.name or "base", base_id, _hex_id(facts.base.digest), facts.base.description))
    return out


def _image_purl(facts: ImageFacts) -> str:
    return _oci_purl(facts.name, _hex_id(facts.digest) or _hex_id(facts.image_id), facts.tag, facts.architecture)


def _creation_time(facts: ImageFacts) -> datetime:
    sde = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if sde:
        return datetime.fromtimestamp(int(sde), tz=UTC)
    if facts.created:
        dt = datetime.fromisoformat(facts.created)
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
    return datetime.now(UTC).replace(microsecond=0)


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("imagefactory")
    except Exception:  # noqa: BLE001
        return "0"


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


_ORG_WORDS = re.compile(
    r"\b(team|maintainers|developers|group|project|foundation|inc|ltd|llc|gmbh|corporation|red hat|debian)\b",
    re.IGNORECASE,
)


def _spdx_id(kind: str, name: str, key: str) -> str:
    return f"SPDXRef-{kind}-{_safe_id(name)[:60]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

