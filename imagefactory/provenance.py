"""SLSA v1 provenance for a built image, as an in-toto Statement (``provenance``, attested by ``sign``).

Everything is read from what the build left behind, never re-derived from hopes:

* the image itself: its ID, labels and the library manifest
  (``/usr/local/share/imagefactory/manifest.json``: archives with sha256, patches with sha256, the
  profile and flags per library) and the binary pins (``binaries.d``);
* the base: the bootstrapped Debian image's suite, mirror and installed package list, or the
  external parent image's ID;
* the recipe tree: git commit and dirty state, *checked to still produce this image* (every step
  key of the current plan is in the cache and the final key names this image ID), so "clean" is
  a statement about the tree the image came from; settings values the recipes read while their
  steps were rendered (so they entered the step keys);
* the executor's report ``last-build.json`` for run details (start, finish, steps, cache hits),
  used only when it describes this image ID.

The statement is assembled from the ``in-toto-attestation`` protobuf bindings (Statement,
ResourceDescriptor, SLSA Provenance v1) and validated with them before it is written.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from .config import Settings
from .recipe import CATALOGUE, Recipe

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:imagefactory:buildtype:recipe:v1"
BUILDER_ID_PREFIX = "urn:imagefactory:builder:"
MANIFEST_PATH = "usr/local/share/imagefactory/manifest.json"
SNAPSHOT_RE = re.compile(r"snapshot\.debian\.org/archive/[^/]+/(\d{8}T\d{6}Z)")


class ProvenanceError(RuntimeError):
    """Provenance cannot be written truthfully; the message says what to do."""


# ------------------------------------------------------------------------------------------ recipe tree
class RecordingValues(dict):
    """``settings.values`` that remembers which keys recipes read (``Settings.value`` uses ``get``)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def recipe_tree(cls: type[Recipe]) -> dict:
    """Git facts of the checkout holding the recipe: repository, commit, dirty state and what is dirty."""
    folder = cls.recipe_dir()
    out: dict = {"class": f"{cls.__module__}.{cls.__qualname__}", "commit": None, "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout

    try:
        top = Path(git("rev-parse", "--show-toplevel").strip())
        out["commit"] = git("rev-parse", "HEAD").strip()
        changes = [ln for ln in git("status", "--porcelain", "--untracked-files=normal").splitlines() if ln]
        out["dirty"] = bool(changes)
        if changes:
            out["changes"] = changes[:50] + ([f"... and {len(changes) - 50} more"] if len(changes) > 50 else [])
        try:
            src = Path(inspect.getsourcefile(cls) or "")
            out["file"] = src.resolve().relative_to(top.resolve()).as_posix()
        except (TypeError, ValueError):
            pass
        with contextlib.suppress(subprocess.CalledProcessError):
            out["repository"] = git("remote", "get-url", "origin").strip() or None
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        out["note"] = "the recipe is not in a git checkout: commit and dirty state unknown"
    return out


def current_plan(settings: Settings, cls: type[Recipe], image_id: str) -> tuple[dict, dict[str, str]]:
    """(the target's plan entry, settings values read while rendering) for the current recipe tree.

    Raises :class:`ProvenanceError` unless that tree still produces ``image_id`` (all steps cached and
    the final key names it): otherwise the tree's git state would describe a different image."""
    from .describe import describe_plan

    from .cache_registry import RegistryCache, RegistryProvider

    values = RecordingValues(settings.values)
    recording = dataclasses.replace(settings, values=values)
    cache = RegistryCache.from_settings(settings)  # a CI job that fetched the image asks the shared step cache
    plan = describe_plan([cls.target_name()], recording, remote=RegistryProvider(cache) if cache else None)
    entry = next(p for p in plan if p["image"] == cls.name)
    misses = [s for s in entry["steps"] if s["status"] != "hit"]
    final = entry["steps"][-1]
    if misses or not final.get("key") or final.get("image") != image_id:
        first = misses[0] if misses else final
        raise ProvenanceError(
            f"{cls.image_ref()} in this store was not built from the current recipe tree and settings (step "
            f"{first['index']} {first['kind']} '{first['summary']}' would run again): its provenance cannot be "
            f"stated. Rebuild it (`imagefactory build {cls.target_name()}`) with the same settings, then retry")
    read = {k: settings.values[k] for k in sorted(values.read) if k in settings.values}
    return entry, read


# ------------------------------------------------------------------------------------------ sources
def dir_hash(archive: Path, tree_root: str) -> str:
    """Go's dirhash ``h1:`` of the regular files under ``tree_root`` in a tar archive (the digest of the
    unpacked tree, independent of compression and archive metadata; in-toto digest name ``dirHash``)."""
    prefix = tree_root.strip("/") + "/"
    lines = []
    with tarfile.open(archive) as tar:
        for m in tar:
            member = m.name.removeprefix("./")
            if not m.isfile() or not member.startswith(prefix):
                continue
            name = member[len(prefix):]
            f = tar.extractfile(m)
            h = hashlib.sha256()
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
            lines.append(f"{h.hexdigest()}  {name}\n")
    summary = "".join(sorted(lines, key=lambda ln: ln.split("  ", 1)[1]))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def archive_dir_hash(settings: Settings, library: str, version: str, filename: str, sha256: str) -> str:
    """dirHash of a pinned archive from the source cache (fetched if needed), memoised per sha256."""
    from .sources import Candidate, Sources, known_pins

    memo = settings.state_path() / "tree-digests.json"
    try:
        known = json.loads(memo.read_text()) if memo.is_file() else {}
    except ValueError:
        known = {}
    if sha256 in known:
        return known[sha256]
    pin = next((p for p in known_pins() if p.library == library and p.version == version), None)
    cand = pin.by_sha256(sha256) if pin else None
    if cand is None:
        raise ProvenanceError(f"the image's manifest names {filename} (sha256 {sha256}) for {library} {version}, "
                              "which no loaded recipe pins: load the recipes that built it")
    sources = Sources.from_settings(settings)
    path = sources.cache_path(Candidate(cand.filename, cand.sha256, cand.tree_root, cand.primary))
    if not path.is_file():
        path = sources.fetch(pin).path
    value = dir_hash(path, cand.tree_root)
    known[sha256] = value
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    tmp.replace(memo)
    return value


def _patch_path(library: str, version: str, name: str) -> str:
    """The patch's path relative to the recipes' git checkout when it is there, else patches/LIB/VER/NAME."""
    from .libraries import PATCHES_ROOT

    rel = f"{library}/{version}/{name}"
    path = PATCHES_ROOT / rel
    with contextlib.suppress(ValueError, OSError):
        top = subprocess.run(["git", "-C", str(PATCHES_ROOT), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        if top:
            return path.resolve().relative_to(Path(top).resolve()).as_posix()
    return f"patches/{rel}"


# ------------------------------------------------------------------------------------------ image facts
def _read_json(root: Path, rel: str) -> dict | None:
    from .sbom.model import _read_text

    text = _read_text(root, rel)
    try:
        return json.loads(text) if text else None
    except ValueError as exc:
        raise ProvenanceError(f"/{rel} in the image is not valid JSON ({exc})") from None


def _dpkg_packages(root: Path) -> list[str]:
    from .sbom.model import _read_text
    from .sbom.packages import _parse_deb822

    text = _read_text(root, "var/lib/dpkg/status") or ""
    return sorted(f"{p['Package']}={p['Version']}" for p in _parse_deb822(text)
                  if p.get("Status", "").split() == ["install", "ok", "installed"] and "Package" in p)


def _pinned_binaries(root: Path) -> list[dict]:
    from .sbom.binaries import BINARIES_DIR
    from .sbom.model import _resolve_in_root

    folder = _resolve_in_root(root, BINARIES_DIR)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except ValueError as exc:
            raise ProvenanceError(f"/{BINARIES_DIR}/{path.name} in the image is not valid JSON ({exc})") from None
    return out


def _run_record(settings: Settings, image_id: str) -> tuple[dict | None, dict | None, float | None]:
    """(the last build report, this image's entry in it, the report's mtime) when it covers image_id."""
    path = settings.state_path() / "last-build.json"
    try:
        report = json.loads(path.read_text())
        mtime = path.stat().st_mtime
    except (OSError, ValueError):
        return None, None, None
    entry = next((img for img in report.get("images", []) if img.get("image_id") == image_id), None)
    return (report, entry, mtime) if entry else (None, None, None)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tool_versions() -> dict[str, str]:
    from .sbom.model import _tool_version

    versions = {"imagefactory": _tool_version()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["buildah", "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version (\S+)", out)
        if m:
            versions["buildah"] = m.group(1)
    return versions


# ------------------------------------------------------------------------------------------ statement
def build_statement(settings: Settings, target: str | type[Recipe], bd=None, registry: str | None = None):
    """The validated :class:`in_toto_attestation.v1.statement.Statement` for a built target."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2 as slsa
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    from .cli import buildah_for
    from .facts import image_facts
    from .plan import build_plan

    bd = bd or buildah_for(settings)
    cls = CATALOGUE.get(target) if isinstance(target, str) else target
    facts = image_facts(settings, cls, bd, registry=registry)
    image_id = facts.image_id
    plan_entry, values_read = current_plan(settings, cls, image_id)
    tree = recipe_tree(cls)
    index = bd.image_index()

    def rd(**kw) -> ResourceDescriptor:
        r = ResourceDescriptor(**kw)
        r.validate()
        return r

    deps: list = []
    libraries: dict[str, dict] = {}
    with bd.mounted_image(cls.image_ref()) as root:
        manifest = _read_json(root, MANIFEST_PATH) or {}
        pins = _pinned_binaries(root)
    for lib in manifest.get("libraries") or []:
        name, version = str(lib["name"]), str(lib["version"])
        archive = lib.get("archive") or {}
        sha = str(archive.get("sha256") or "")
        digest = {"sha256": sha} if sha else {}
        if sha:
            digest["dirHash"] = archive_dir_hash(settings, name, version, archive.get("name", ""), sha)
        deps.append(rd(name=str(archive.get("name") or f"{name}-{version}"), uri=str(lib.get("purl") or ""),
                       digest=digest, download_location=str(archive.get("url") or lib.get("upstream_url") or ""),
                       annotations={"kind": "source-archive", "library": name, "version": version,
                                    "treeRoot": str(archive.get("tree_root") or ""),
                                    "alternate": bool(archive.get("alternate"))}))
        for p in lib.get("patches") or []:
            deps.append(rd(name=_patch_path(name, version, str(p["name"])),
                           digest={"sha256": str(p["sha256"])} if p.get("sha256") else {},
                           annotations={"kind": "patch", "library": name, "version": version}))
        libraries[name] = {"version": version, "profile": lib.get("profile"), "flags": lib.get("flags") or {},
                           "options": lib.get("options") or [], "build": lib.get("build"),
                           "patches": [p["name"] for p in lib.get("patches") or []]}
    for pin in pins:
        deps.append(rd(name=str(pin.get("artifact") or pin.get("name")), uri=str(pin.get("purl") or ""),
                       digest={"sha256": str(pin["sha256"])}, download_location=str(pin.get("url") or ""),
                       annotations={"kind": "binary-pin", "name": str(pin.get("name")),
                                    "version": str(pin.get("version")), "license": str(pin.get("license")),
                                    "installed": list(pin.get("installed") or [])}))

    # the chain of images below this one, and the stages it copies from
    plan = build_plan([cls], settings)
    node = plan.node(cls)
    base: dict = {}
    while node is not None:
        parent = node.parent
        for stage in [d for d in node.deps if d is not parent]:
            sid = index.get(stage.image_ref(), "").removeprefix("sha256:")
            deps.append(rd(name=stage.image_ref(), digest={"sha256": sid} if sid else {},
                           annotations={"kind": "stage", "recipe": f"{stage.__module__}.{stage.__qualname__}"}))
        if parent is None:
            break
        if isinstance(parent, str):
            pid = next((index[r] for r in (parent, f"docker.io/library/{parent}", f"localhost/{parent}")
                        if r in index), "").removeprefix("sha256:")
            deps.append(rd(name=parent, digest={"sha256": pid} if pid else {},
                           annotations={"kind": "base-image", "external": True}))
            base = {"image": parent, "imageId": pid}
            break
        pid = index.get(parent.image_ref(), "").removeprefix("sha256:")
        bootstrapped = plan.node(parent).parent is None  # the base debootstrap made (slim is FROM it)
        if getattr(parent, "platform_name", None) == "debian" and pid and bootstrapped:
            base = _debian_base(settings, bd, parent, pid)
            deps.append(rd(name=parent.image_ref(), uri=base.get("mirror") or "", digest={"sha256": pid},
                           annotations={"kind": "bootstrap", **base}))
        else:
            deps.append(rd(name=parent.image_ref(), digest={"sha256": pid} if pid else {},
                           annotations={"kind": "base-image" if getattr(parent, "platform_name", None) else "parent",
                                        "recipe": f"{parent.__module__}.{parent.__qualname__}"}))
        node = plan.node(parent)

    internal = {
        "platform": settings.platform,
        "sourceDateEpoch": settings.source_date_epoch,
        "settingsValues": values_read,
        "libraries": libraries,
        "steps": len(plan_entry["steps"]),
    }
    external = {"target": cls.target_name(), "image": cls.name, "tag": cls.version, "recipe": tree}

    report, entry, mtime = _run_record(settings, image_id)
    metadata = slsa.BuildMetadata()
    byproducts = []
    if report and entry:
        finished = mtime or 0.0
        metadata.invocation_id = Path(str(report.get("log_dir", ""))).name
        metadata.started_on.FromJsonString(_iso(finished - float(report.get("seconds") or 0)))
        metadata.finished_on.FromJsonString(_iso(finished))
        for img in report.get("images", []):
            if not img.get("image_id"):
                continue
            steps = img.get("steps") or []
            byproducts.append(rd(name=str(img["ref"]), digest={"sha256": str(img["image_id"])},
                                 annotations={"kind": "build-record", "status": img.get("status"),
                                              "steps": len(steps), "cacheHits": img.get("hits", 0),
                                              "cacheMisses": img.get("misses", 0),
                                              "seconds": round(float(img.get("seconds") or 0), 3)}))
    else:
        internal["runDetails"] = ("last-build.json describes another run: start, finish and cache hits of the "
                                  "build that made this image are not known")

    prov = slsa.Provenance()
    bdef = prov.build_definition
    bdef.build_type = BUILD_TYPE
    bdef.external_parameters.update(json.loads(json.dumps(external)))
    bdef.internal_parameters.update(json.loads(json.dumps(internal)))
    bdef.resolved_dependencies.extend(r.pb for r in deps)
    versions = _tool_versions()
    run = prov.run_details
    run.builder.id = BUILDER_ID_PREFIX + versions["imagefactory"]
    run.builder.version.update(versions)
    run.metadata.CopyFrom(metadata)
    run.byproducts.extend(r.pb for r in byproducts)
    predicate = json_format.MessageToDict(prov)

    subject_name = facts.name if facts.digest else cls.image_ref()
    subject_digest = (facts.digest or f"sha256:{image_id}").removeprefix("sha256:")
    subject = rd(name=subject_name, digest={"sha256": subject_digest},
                 annotations={"imageId": f"sha256:{image_id}", "digestKind": "manifest" if facts.digest else "config"})
    statement = Statement([subject.pb], PREDICATE_TYPE, predicate)
    validate_statement(json_format.MessageToDict(statement.pb))
    return statement


def validate_statement(data: dict) -> None:
    """Parse ``data`` strictly with the in-toto bindings (Statement, ResourceDescriptors, SLSA v1
    Provenance) and check what SLSA v1 requires; raises ProvenanceError naming the problem."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2 as slsa
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    try:
        stmt = Statement.copy_from_pb(json_format.ParseDict(data, statement_pb2.Statement()))
        stmt.validate()
        if stmt.pb.predicate_type != PREDICATE_TYPE:
            raise ValueError(f"predicateType is {stmt.pb.predicate_type!r}, not {PREDICATE_TYPE}")
        prov = json_format.ParseDict(data["predicate"], slsa.Provenance())
        if not prov.build_definition.build_type:
            raise ValueError("buildDefinition.buildType is required")
        if not prov.run_details.builder.id:
            raise ValueError("runDetails.builder.id is required")
        for i, dep in enumerate(prov.build_definition.resolved_dependencies):
            try:
                ResourceDescriptor.copy_from_pb(dep).validate()
            except ValueError as exc:
                raise ValueError(f"resolvedDependencies[{i}]: {exc}") from None
            for alg, value in dep.digest.items():
                if alg == "sha256" and not re.fullmatch(r"[0-9a-f]{64}", value):
                    raise ValueError(f"resolvedDependencies[{i}] ({dep.name}): sha256 {value!r} is not 64 hex digits")
    except (json_format.ParseError, ValueError, KeyError) as exc:
        raise ProvenanceError(f"invalid provenance statement: {exc}") from None


def _debian_base(settings: Settings, bd, base_cls: type[Recipe], base_id: str) -> dict:
    """Bootstrap inputs of a Debian base: suite, variant, mirror (and snapshot date), installed packages."""
    from .platforms import host_debian_mirror

    mirror = settings.debian_mirror or host_debian_mirror() or ""
    out = {"suite": settings.debian_suite, "variant": str(getattr(base_cls, "variant", "")), "mirror": mirror}
    m = SNAPSHOT_RE.search(mirror)
    if m:
        out["snapshot"] = m.group(1)
    with bd.mounted_image(base_cls.image_ref()) as root:
        out["packages"] = _dpkg_packages(root)
    return out


def statement_dict(statement) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(statement.pb)


def predicate_of(statement) -> dict:
    return statement_dict(statement)["predicate"]


def write_provenance(settings: Settings, target: str | type[Recipe], out_dir: Path, bd=None,
                     registry: str | None = None) -> Path:
    """Write ``<image>.provenance.json`` (the in-toto Statement) into ``out_dir``; returns its path."""
    cls = CATALOGUE.get(target) if isinstance(target, str) else target
    data = statement_dict(build_statement(settings, cls, bd, registry=registry))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{PurePosixPath(cls.name).name}.provenance.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


__all__ = ["BUILD_TYPE", "BUILDER_ID_PREFIX", "PREDICATE_TYPE", "ProvenanceError", "build_statement", "dir_hash",
           "predicate_of", "validate_statement", "write_provenance"]
