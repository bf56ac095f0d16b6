"""From targets to a DAG of images, and from steps to cache keys.

Nothing here runs buildah: planning, rendering and keys are pure functions of the
recipes, the settings, the input files' bytes and (when known) parent image IDs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings
from .platforms import Platform, get_platform
from .recipe import REGISTRY, Recipe, RecipeError
from .steps import Rendered, Step

CACHE_REPO = "localhost/imagefactory-cache"
KEY_VERSION = "imagefactory-cache-v1"


class PlanError(RecipeError):
    """The targets cannot be planned: unknown parent, cycle, bad stage reference."""


def cache_ref(key: str) -> str:
    return f"{CACHE_REPO}:{key[:40]}"


def step_key(parent: str, rendered: Rendered) -> str:
    """Key = hash(parent image ID or key, the fully rendered step, the digests of its inputs)."""
    h = hashlib.sha256()
    h.update(KEY_VERSION.encode() + b"\n" + parent.encode() + b"\n" + rendered.key_material().encode())
    return h.hexdigest()


# --- file digests: bytes, not mtimes; memoised by stat so unchanged files are not re-read ------------
class FileDigests:
    def __init__(self, memo_path: Path | None = None):
        self.memo_path = memo_path
        self._memo: dict[str, list] = {}
        self._lock = threading.Lock()
        self._dirty = False
        if memo_path and memo_path.is_file():
            try:
                self._memo = json.loads(memo_path.read_text())
            except (OSError, ValueError):
                self._memo = {}

    def file(self, path: Path) -> str:
        st = path.stat()
        sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode]
        key = str(path)
        with self._lock:
            hit = self._memo.get(key)
            if hit and hit[0] == sig:
                return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._memo[key] = [sig, digest]
            self._dirty = True
        return digest

    def tree(self, path: Path) -> str:
        """Digest of a file or folder: relative names, the executable bit, symlink targets and bytes."""
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(path)
        if path.is_file():
            mode = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
            return hashlib.sha256(f"{mode}:{self.file(path)}".encode()).hexdigest()
        h = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("node_modules", "__pycache__", ".git"))
            for name in sorted(files):
                p = Path(root, name)
                rel = p.relative_to(path).as_posix()
                if p.is_symlink():
                    h.update(f"L {rel} {os.readlink(p)}\n".encode())
                else:
                    mode = "x" if p.stat().st_mode & stat.S_IXUSR else "-"
                    h.update(f"F {rel} {mode} {self.file(p)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        if self.memo_path and self._dirty:
            tmp = self.memo_path.with_name(f".{self.memo_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._memo))
            tmp.replace(self.memo_path)
            self._dirty = False


# --- the graph ----------------------------------------------------------------
@dataclass
class Node:
    recipe: type[Recipe]
    parent: type[Recipe] | str | None  # recipe, external image ref, or scratch
    deps: list[type[Recipe]] = field(default_factory=list)  # parent recipe + stages it copies from
    leaf: bool = False  # no recipe builds FROM it
    shipped: bool = True  # a target users run (not a base or a stage)

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def squash(self) -> bool:
        """Shipped leaf images are squashed unless the recipe says otherwise; stages and bases never need it."""
        return self.recipe.squash if self.recipe.squash is not None else (self.leaf and self.shipped)


@dataclass
class Plan:
    settings: Settings
    platform: Platform
    nodes: list[Node]  # topological order: every node after its deps
    targets: list[type[Recipe]]

    def node(self, recipe: type[Recipe]) -> Node:
        for n in self.nodes:
            if n.recipe is recipe:
                return n
        raise KeyError(recipe.name)

    def levels(self) -> list[list[Node]]:
        """Groups that can build concurrently: each level depends only on earlier ones."""
        depth: dict[str, int] = {}
        for n in self.nodes:
            depth[n.name] = 1 + max((depth[d.name] for d in n.deps), default=-1)
        out: list[list[Node]] = []
        for n in self.nodes:
            while len(out) <= depth[n.name]:
                out.append([])
            out[depth[n.name]].append(n)
        return out


def resolve_parent(recipe: type[Recipe], platform: Platform) -> type[Recipe] | str | None:
    parent = recipe.declared_parent()
    if parent is None and recipe.base:
        base = recipe.base
        if isinstance(base, dict):  # per platform: {"debian": "slim", "ubi9": "registry/image:tag"}
            if platform.name not in base:
                raise PlanError(f"recipe {recipe.name!r} names no base for platform {platform.name!r}; "
                                f"add it to `base` (has: {', '.join(base)})")
            base = base[platform.name]
        if isinstance(base, type) or (isinstance(base, str) and ("/" in base or ":" in base)):
            parent = base  # a recipe class or an external image reference
        else:
            parent = platform.base_recipe(base)
    if isinstance(parent, str) or parent is None:
        return parent
    if not (isinstance(parent, type) and issubclass(parent, Recipe)):
        raise PlanError(f"recipe {recipe.name!r}: parent must be a Recipe class or an image reference, "
                        f"got {parent!r}")
    if not parent.is_concrete():
        raise PlanError(f"recipe {recipe.name!r}: parent {parent.__qualname__} has no `name`, so it is not "
                        "an image; give it a name or point `parent` at a concrete recipe")
    return parent


def resolve_stage(owner: type[Recipe], stage: object) -> type[Recipe]:
    if isinstance(stage, str):
        stages = getattr(owner, "stages", {}) or {}
        if stage in stages:
            return stages[stage]
        try:
            return REGISTRY.get(stage)
        except RecipeError:
            raise PlanError(f"recipe {owner.name!r}: CopyFrom names stage {stage!r}, which is neither in its "
                            f"`stages` ({', '.join(stages) or 'none'}) nor a known recipe") from None
    if isinstance(stage, type) and issubclass(stage, Recipe) and stage.is_concrete():
        return stage
    raise PlanError(f"recipe {owner.name!r}: CopyFrom needs a recipe class or stage name, got {stage!r}")


def own_steps(recipe: type[Recipe], settings: Settings) -> list[Step]:
    try:
        steps = list(recipe(settings).steps())
    except RecipeError:
        raise
    except Exception as exc:  # a recipe's own code failed: say which recipe
        raise PlanError(f"recipe {recipe.name!r} ({recipe.__module__}): steps() raised "
                        f"{type(exc).__name__}: {exc}") from exc
    for i, s in enumerate(steps):
        if not isinstance(s, Step):
            raise PlanError(f"recipe {recipe.name!r}: step {i + 1} is {s!r}, not a Step; "
                            "yield Run(...), Install(...), Copy(...) and friends")
    return steps


def build_plan(targets: Iterable[str | type[Recipe]], settings: Settings) -> Plan:
    platform = get_platform(settings.platform)
    wanted = [REGISTRY.get(t) if isinstance(t, str) else t for t in targets]
    if not wanted:
        raise PlanError("no targets given; `imagefactory list` shows what can be built")
    nodes: dict[str, Node] = {}
    order: list[Node] = []
    visiting: list[str] = []

    def visit(recipe: type[Recipe]) -> None:
        if recipe.name in nodes:
            return
        if recipe.name in visiting:
            cycle = " → ".join([*visiting[visiting.index(recipe.name):], recipe.name])
            raise PlanError(f"recipe cycle: {cycle}; a recipe cannot build on itself")
        visiting.append(recipe.name)
        if recipe.platform_name and recipe.platform_name != platform.name:
            raise PlanError(f"recipe {recipe.name!r} is a {recipe.platform_name} base, "
                            f"but the platform is {platform.name}")
        parent = resolve_parent(recipe, platform)
        deps: list[type[Recipe]] = []
        if isinstance(parent, type):
            deps.append(parent)
        for step in own_steps(recipe, settings):
            for stage in step.depends_on():
                stage_cls = resolve_stage(recipe, stage)
                if stage_cls not in deps:
                    deps.append(stage_cls)
        for dep in deps:
            visit(dep)
        visiting.pop()
        node = Node(recipe, parent, deps)
        nodes[recipe.name] = node
        order.append(node)

    for recipe in wanted:
        visit(recipe)
    built_upon = _built_upon(platform) | {d.name for n in order for d in n.deps}
    for node in order:
        node.leaf = node.name not in built_upon
        node.shipped = not node.recipe.hidden and not _is_stage(node.recipe)
    return Plan(settings, platform, order, wanted)


def _built_upon(platform: Platform) -> set[str]:
    """Names of recipes another registered recipe builds FROM or copies from, on this platform.

    Decided over the whole registry, not the requested targets, so an image gets the same
    commits (and keys) whichever targets are built. Parents are resolved through the platform:
    a recipe with ``base = "slim"`` builds on the slim base class, which is therefore not a leaf
    (a leaf's single commit carries the git revision, and children would rebuild on every commit).
    """
    names: set[str] = set()
    for cls in REGISTRY:
        if not cls.is_concrete():
            continue
        try:
            parent = resolve_parent(cls, platform)
        except RecipeError:
            parent = None
        if isinstance(parent, type):
            names.add(parent.name)
        for stage in (getattr(cls, "stages", None) or {}).values():
            if isinstance(stage, type) and getattr(stage, "name", None):
                names.add(stage.name)
    return names


def _is_stage(recipe: type[Recipe]) -> bool:
    return any(recipe in (cls.stages or {}).values() for cls in REGISTRY)


# --- rendering ----------------------------------------------------------------
class RenderContext:
    """What a step may know while rendering: settings, platform, its recipe, known image IDs."""

    def __init__(self, settings: Settings, platform: Platform, recipe: type[Recipe], base_variant: str | None,
                 image_ids: dict[str, str], digests: FileDigests):
        self.settings = settings
        self.platform = platform
        self.recipe = recipe
        self.base_variant = base_variant
        self.image_ids = image_ids
        self.digests = digests

    def resolve_file(self, rel: str) -> Path:
        path = Path(rel)
        if not path.is_absolute():
            path = self.recipe.recipe_dir() / rel
        if not path.exists():
            raise PlanError(f"recipe {self.recipe.name!r}: file {rel!r} not found (looked at {path}); "
                            "paths in Copy() are relative to the recipe's own folder")
        return path

    def digest(self, path: Path) -> str:
        return self.digests.tree(path)

    def resolve_stage(self, stage: object) -> type[Recipe]:
        return resolve_stage(self.recipe, stage)

    def image_id_of(self, recipe: type[Recipe]) -> str | None:
        return self.image_ids.get(recipe.name)


def base_variant(recipe: type[Recipe], platform: Platform) -> str | None:
    seen = 0
    current: object = recipe
    while isinstance(current, type) and seen < 50:
        if getattr(current, "platform_name", None):
            return getattr(current, "variant", None)
        current = resolve_parent(current, platform)
        seen += 1
    return None


def render_steps(node: Node, plan: Plan, image_ids: dict[str, str], digests: FileDigests) -> list[tuple[Step, Rendered]]:
    ctx = RenderContext(plan.settings, plan.platform, node.recipe, base_variant(node.recipe, plan.platform),
                        image_ids, digests)
    out = []
    for i, step in enumerate(own_steps(node.recipe, plan.settings)):
        try:
            out.append((step, step.render(ctx)))
        except RecipeError:
            raise
        except FileNotFoundError as exc:
            raise PlanError(f"recipe {node.name!r}, step {i + 1} ({step.kind}): missing file {exc}") from exc
    return out


def group_steps(rendered: list[tuple[Step, Rendered]]) -> tuple[list[list[tuple[Step, Rendered]]],
                                                                   list[tuple[Step, Rendered]]]:
    """Split into commit groups (each ends at a boundary step) and trailing config-only steps."""
    groups: list[list[tuple[Step, Rendered]]] = []
    current: list[tuple[Step, Rendered]] = []
    for item in rendered:
        current.append(item)
        if item[0].boundary:
            groups.append(current)
            current = []
    return groups, current


# --- final image metadata ------------------------------------------------------
def source_date_epoch(settings: Settings) -> int | None:
    return settings.source_date_epoch


def oci_labels(recipe: type[Recipe], settings: Settings, *, revision: str | None, source: str | None) -> dict[str, str]:
    sde = source_date_epoch(settings)
    created = _dt.datetime.fromtimestamp(sde if sde is not None else _now(), _dt.UTC)
    labels = {
        "org.opencontainers.image.title": recipe.name,
        "org.opencontainers.image.version": recipe.version,
        "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.licenses": recipe.licenses,
        "org.opencontainers.image.description": recipe.description(),
    }
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    if source:
        labels["org.opencontainers.image.source"] = source
    for klass in reversed(recipe.__mro__):
        labels.update(getattr(klass, "__dict__", {}).get("labels", {}) or {})
    return labels


def _now() -> float:
    import time

    return time.time()


def image_format_of(plan: Plan, node: Node) -> str:
    """docker when this image or an ancestor declares a HEALTHCHECK (OCI has no such field)."""
    current: Node | None = node
    while current is not None:
        if any(step.needs_docker_format for step in own_steps(current.recipe, plan.settings)):
            return "docker"
        parent = current.parent
        current = next((n for n in plan.nodes if isinstance(parent, type) and n.recipe is parent), None)
    return "oci"


VOLATILE_LABELS = ("org.opencontainers.image.created", "org.opencontainers.image.revision",
                   "org.opencontainers.image.source")


@dataclass
class FinalCommit:
    """One of the commits that finish an image: config + labels, squashed for leaves."""

    rendered: Rendered  # what is keyed
    calls: list  # trailing config calls to apply
    label_args: list[str]  # labels actually applied
    squash: bool
    feeds_children: bool  # child recipes build FROM this commit


def final_commits(node: Node, plan: Plan, trailing: list[tuple[Step, Rendered]], revision: str | None,
                  source: str | None, image_format: str) -> list[FinalCommit]:
    """How an image is finished.

    Labels that change with every git commit (revision, created, source) must not leak into the
    cache keys of child images, or each commit would rebuild every child. So a non-leaf image is
    finished in two commits: the *stable* one (trailing config + stable labels), which children
    build FROM, and the named image on top of it carrying the volatile labels (a config-only
    commit). A leaf (no child builds on it) is finished in one commit. ``created`` is keyed only when
    SOURCE_DATE_EPOCH pins it, so time passing is not a cache miss.
    """
    from .steps import ConfigCall

    settings = plan.settings
    labels = oci_labels(node.recipe, settings, revision=revision, source=source)

    def args(items) -> list[str]:
        return [a for k, v in sorted(items) for a in ("--label", f"{k}={v}")]

    def keyed(label_args: list[str]) -> tuple[str, ...]:
        return tuple(a for a in label_args if settings.source_date_epoch is not None
                     or not a.startswith("org.opencontainers.image.created="))

    calls = [c for _, r in trailing for c in r.calls]
    facts = [f"squash={node.squash}", f"format={image_format}", f"timestamp={settings.source_date_epoch}"]
    ref = node.recipe.image_ref()
    squashed = " (squashed)" if node.squash else ""
    if node.leaf:  # no child builds on it: one commit carries everything
        label_args = args(labels.items())
        rendered = Rendered("final", f"commit {ref}{squashed}", [*calls, ConfigCall(keyed(label_args))], facts)
        return [FinalCommit(rendered, calls, label_args, node.squash, True)]
    stable = args((k, v) for k, v in labels.items() if k not in VOLATILE_LABELS)
    volatile = args((k, v) for k, v in labels.items() if k in VOLATILE_LABELS)
    first = FinalCommit(Rendered("final", f"config + labels of {ref}{squashed}",
                                 [*calls, ConfigCall(tuple(stable))], facts),
                        calls, stable, node.squash, True)
    second = FinalCommit(Rendered("final", f"commit {ref} (revision labels)", [ConfigCall(keyed(volatile))], facts),
                         [], volatile, False, False)
    return [first, second]


def git_facts(plan: Plan) -> tuple[str | None, str | None]:
    """revision and source labels from the git checkout holding the target recipes, if any."""
    import sh

    folder = plan.targets[0].recipe_dir() if plan.targets else Path.cwd()
    revision = source = None
    try:
        git = sh.Command("git").bake("-C", str(folder))
        revision = str(git("rev-parse", "HEAD", _err=os.devnull)).strip() or None
        try:
            source = str(git("remote", "get-url", "origin", _err=os.devnull)).strip() or None
        except sh.ErrorReturnCode:
            source = None
    except (sh.ErrorReturnCode, sh.CommandNotFound):
        pass
    return revision, plan.settings.value("source", source)
