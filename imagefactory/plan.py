"""From targets to a plan: a finished value holding every image's steps, each rendered once.

Three phases, each handing the next a value:

1. :func:`resolve_graph` asks each recipe for its ``steps()`` (once) and builds the DAG of
   images (parents, stages a ``CopyFrom`` names), refusing cycles and unknown names;
2. :func:`prepare` resolves what needs I/O (sources, patches, file digests, host facts);
3. :func:`render` turns every prepared step into calls + key material (pure), groups them into
   layers (one commit each) and says how each image is finished (config, labels, squash).

Nothing here talks to buildah or knows image IDs: cache keys chain on image IDs, so they are
computed by :func:`imagefactory.walk.walk` while it meets them.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .arches import host_arch
from .config import Settings
from .platforms import Platform, get_platform
from .prepare import FileDigests, HostFacts, host_facts, prepare_steps
from .recipe import CATALOGUE, Recipe, RecipeError
from .steps import ConfigCall, CopyFrom, HostCall, RenderContext, Rendered, RunCall, Step, StepError


class PlanError(RecipeError):
    """The targets cannot be planned: unknown parent, cycle, bad stage reference, unresolvable input."""


@dataclass(frozen=True)
class PlannedStep:
    index: int  # 1-based position in its image
    step: Step
    rendered: Rendered


@dataclass(frozen=True)
class FinalCommit:
    """One of the commits that finish an image: config + labels, squashed for leaves."""

    index: int
    rendered: Rendered  # what is keyed
    trailing: tuple[PlannedStep, ...]  # config-only steps after the last layer, applied here
    label_args: tuple[str, ...]  # labels actually applied
    squash: bool
    feeds_children: bool  # child recipes build FROM this commit

    @property
    def calls(self) -> list:
        return [c for p in self.trailing for c in p.rendered.calls]


@dataclass(frozen=True)
class Layer:
    """Steps run in one working container and committed together: one cache entry.

    ``final``: the image's first final commit (config + labels) folded into this, its last layer,
    so an image that is not squashed costs no extra container, commit or layer to finish.
    """

    steps: tuple[PlannedStep, ...]
    final: FinalCommit | None = None

    @property
    def first(self) -> int:
        return self.steps[0].index

    @property
    def stages(self) -> list[str]:
        return [s for p in self.steps for s in p.rendered.stages]


@dataclass(frozen=True)
class Flatten:
    """Squash the parent into one layer before this image's steps: its chain would pass the layer budget."""

    rendered: Rendered
    depth: int  # layers the image would stack without it

    index: int = 0


@dataclass
class Node:
    """One image of the plan."""

    recipe: type[Recipe]
    parent: type[Recipe] | str | None  # recipe, external image ref, or scratch
    deps: list[type[Recipe]] = field(default_factory=list)  # parent recipe + stages it copies from
    steps: list[Step] = field(default_factory=list)  # the recipe's own steps (prepared after `prepare`)
    leaf: bool = False  # no recipe builds FROM it
    shipped: bool = True  # a target users run (not a base or a stage)
    base_variant: str | None = None
    layers: list[Layer] = field(default_factory=list)  # filled by render()
    finals: list[FinalCommit] = field(default_factory=list)
    image_format: str = "oci"
    flatten: Flatten | None = None  # set by render() when the chain would pass `max_layers`
    depth: int = 0  # layers of the image children build on (1 when squashed)
    # architectures (OCI names): what the image is (its binaries, its config), and what it is
    # built for (differs only in a build-platform stage of a foreign-architecture build)
    arch: str = ""
    target_arch: str = ""
    node_name: str = ""  # unique in the plan: the recipe's name, ``@ARCH`` added for a foreign target
    parent_name: str | None = None  # the parent recipe's node
    dep_names: list[str] = field(default_factory=list)  # the nodes of ``deps``

    @property
    def name(self) -> str:
        return self.node_name or self.recipe.name

    @property
    def ref(self) -> str:
        """The image's local name (``-ARCH`` in the tag for a foreign target architecture)."""
        return self.recipe.image_ref(self.target_arch or None)

    @property
    def squash(self) -> bool:
        """Shipped leaf images are squashed unless the recipe says otherwise; stages and bases never need it."""
        return self.recipe.squash if self.recipe.squash is not None else (self.leaf and self.shipped)

    @property
    def all_finals(self) -> list[FinalCommit]:
        """The final commits, the one folded into the last layer included."""
        folded = [self.layers[-1].final] if self.layers and self.layers[-1].final else []
        return folded + list(self.finals)

    @property
    def planned(self) -> list[PlannedStep]:
        """Every step of the image in order, rendered (layers, then trailing config steps)."""
        return [p for layer in self.layers for p in layer.steps] + [p for fc in self.all_finals for p in fc.trailing]

    @property
    def total_steps(self) -> int:
        return (sum(len(layer.steps) for layer in self.layers) + len(self.all_finals)
                + (1 if self.flatten else 0))


@dataclass
class Plan:
    settings: Settings
    platform: Platform
    nodes: list[Node]  # topological order: every node after its deps
    targets: list[type[Recipe]]
    facts: HostFacts | None = None  # set by prepare()
    rendered: bool = False

    def node(self, recipe: type[Recipe] | str, arch: str | None = None) -> Node:
        """The node of a recipe (or node name); with ``arch``, the one built for that architecture."""
        name = recipe if isinstance(recipe, str) else recipe.name
        for n in self.nodes:
            if n.name == name and arch in (None, n.target_arch):
                return n
        for n in self.nodes:
            if n.recipe.name == name and arch in (None, n.target_arch):
                return n
        raise KeyError(name if arch is None else f"{name} ({arch})")

    def levels(self) -> list[list[Node]]:
        """Groups that can build concurrently: each level depends only on earlier ones."""
        depth: dict[str, int] = {}
        for n in self.nodes:
            depth[n.name] = 1 + max((depth[d] for d in n.dep_names), default=-1)
        out: list[list[Node]] = []
        for n in self.nodes:
            while len(out) <= depth[n.name]:
                out.append([])
            out[depth[n.name]].append(n)
        return out


Progress = Callable[[str], None]


def build_plan(targets: Iterable[str | type[Recipe]], settings: Settings, *, digests: FileDigests | None = None,
               progress: Progress | None = None) -> Plan:
    """load → resolve → prepare → render: the plan both `plan` and `build` walk."""
    graph = resolve_graph(targets, settings)
    if progress:
        progress(f"preparing inputs of {len(graph.nodes)} image(s): sources, patches, files")
    digests = digests or FileDigests(settings.state_path() / "file-digests.json")
    prepared = prepare(graph, digests)
    digests.save()
    return render(prepared)


# --- 1. the graph ---------------------------------------------------------------
def resolve_graph(targets: Iterable[str | type[Recipe]], settings: Settings) -> Plan:
    """The DAG of images for every target on every architecture of ``settings.build_arches``.

    A node is a recipe planned for one target architecture. Images of a foreign architecture
    run under emulation, except ``build_platform`` stages: those run on the build machine (their
    own parents and plain stages they copy from too) and cross-compile for the target. Nodes for
    the build machine's architecture keep the recipe's name, so they are shared with a native
    build; the others are ``NAME@ARCH``.
    """
    platform = get_platform(settings.platform)
    wanted = [CATALOGUE.get(t) if isinstance(t, str) else t for t in targets]
    if not wanted:
        raise PlanError("no targets given; `imagefactory list` shows what can be built")
    host = host_arch().name
    nodes: dict[str, Node] = {}
    order: list[Node] = []
    visiting: list[str] = []

    def node_name(recipe: type[Recipe], target: str) -> str:
        return recipe.name if target == host else f"{recipe.name}@{target}"

    def dep_target(owner: type[Recipe], dep: type[Recipe], target: str) -> str:
        """What a parent or stage is built for: a build-platform stage's plain dependencies run natively."""
        return target if dep.build_platform or not owner.build_platform else host

    def visit(recipe: type[Recipe], target: str) -> str:
        name = node_name(recipe, target)
        if name in nodes:
            return name
        if name in visiting:
            cycle = " → ".join([*visiting[visiting.index(name):], name])
            raise PlanError(f"recipe cycle: {cycle}; a recipe cannot build on itself")
        visiting.append(name)
        if recipe.platform_name and recipe.platform_name != platform.name:
            raise PlanError(f"recipe {recipe.name!r} is a {recipe.platform_name} base, "
                            f"but the platform is {platform.name}")
        arch = host if recipe.build_platform else target
        parent = resolve_parent(recipe, platform)
        deps: list[type[Recipe]] = [parent] if isinstance(parent, type) else []
        steps = []
        for step in own_steps(recipe, settings, arch, target):
            if isinstance(step, CopyFrom):
                stage_cls = resolve_stage(recipe, step.stage)
                step = replace(step, stage_name=node_name(stage_cls, dep_target(recipe, stage_cls, target)))
                if stage_cls not in deps:
                    deps.append(stage_cls)
            for stage in step.depends_on() if not isinstance(step, CopyFrom) else ():
                stage_cls = resolve_stage(recipe, stage)
                if stage_cls not in deps:
                    deps.append(stage_cls)
            steps.append(step)
        dep_names = [visit(dep, dep_target(recipe, dep, target)) for dep in deps]
        visiting.pop()
        node = Node(recipe, parent, deps, steps, base_variant=base_variant(recipe, platform), arch=arch,
                    target_arch=target, node_name=name, dep_names=dep_names,
                    parent_name=dep_names[0] if isinstance(parent, type) else None)
        nodes[name] = node
        order.append(node)
        return name

    for target in settings.build_arches:
        for recipe in wanted:
            visit(recipe, target)
    built_upon = _built_upon(platform) | {d.name for n in order for d in n.deps}
    for node in order:
        node.leaf = node.recipe.name not in built_upon
        node.shipped = not node.recipe.hidden and not _is_stage(node.recipe)
    return Plan(settings, platform, order, wanted)


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
            return CATALOGUE.get(stage)
        except RecipeError:
            raise PlanError(f"recipe {owner.name!r}: CopyFrom names stage {stage!r}, which is neither in its "
                            f"`stages` ({', '.join(stages) or 'none'}) nor a known recipe") from None
    if isinstance(stage, type) and issubclass(stage, Recipe) and stage.is_concrete():
        return stage
    raise PlanError(f"recipe {owner.name!r}: CopyFrom needs a recipe class or stage name, got {stage!r}")


def own_steps(recipe: type[Recipe], settings: Settings, arch: str | None = None,
              target: str | None = None) -> list[Step]:
    try:
        steps = list(recipe(settings, arch, target).steps())
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


def base_variant(recipe: type[Recipe], platform: Platform) -> str | None:
    seen = 0
    current: object = recipe
    while isinstance(current, type) and seen < 50:
        if getattr(current, "platform_name", None):
            return getattr(current, "variant", None)
        current = resolve_parent(current, platform)
        seen += 1
    return None


def _built_upon(platform: Platform) -> set[str]:
    """Names of recipes another registered recipe builds FROM or copies from, on this platform.

    Decided over the whole catalogue, not the requested targets, so an image gets the same
    commits (and keys) whichever targets are built. Parents are resolved through the platform:
    a recipe with ``base = "slim"`` builds on the slim base class, which is therefore not a leaf
    (a leaf's single commit carries the git revision, and children would rebuild on every commit).
    """
    names: set[str] = set()
    for cls in CATALOGUE:
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
    return any(recipe in (cls.stages or {}).values() for cls in CATALOGUE)


# --- 2. prepare: the only I/O ------------------------------------------------------
def prepare(graph: Plan, digests: FileDigests) -> Plan:
    """Every step of every image prepared; all problems reported together."""
    problems: list[str] = []
    nodes = [replace(n, steps=prepare_steps(n.recipe, n.steps, graph.settings, digests, problems))
             for n in graph.nodes]
    if problems:
        head = "the build cannot start" if len(problems) == 1 else f"the build cannot start ({len(problems)} problems)"
        raise PlanError(head + ":\n  " + "\n  ".join(problems))
    folder = graph.targets[0].recipe_dir() if graph.targets else Path.cwd()
    return replace(graph, nodes=nodes, facts=host_facts(graph.settings, folder))


# --- 3. render: pure ------------------------------------------------------------
def render(prepared: Plan) -> Plan:
    if prepared.facts is None:
        raise PlanError("render() needs a prepared plan: call prepare() first (or build_plan())")
    nodes: list[Node] = []
    formats: dict[str, str] = {}
    depths: dict[str, int] = {}
    for node in prepared.nodes:
        ctx = RenderContext(prepared.settings, prepared.platform, node.recipe, node.base_variant, node.arch)
        planned: list[PlannedStep] = []
        for i, step in enumerate(node.steps, 1):
            try:
                planned.append(PlannedStep(i, step, with_epoch(step.render(ctx), prepared.settings.source_date_epoch)))
            except StepError as exc:
                raise PlanError(str(exc)) from None
        layers, trailing = _group(planned)
        parent_format = formats.get(node.parent_name) if node.parent_name else None
        fmt = "docker" if parent_format == "docker" or any(s.needs_docker_format for s in node.steps) else "oci"
        formats[node.name] = fmt
        done = replace(node, layers=layers, image_format=fmt)
        done.finals = final_commits(done, prepared.settings, prepared.facts, trailing, first_index=len(planned) + 1)
        if done.layers and not done.squash:  # finish in the last layer's container: one commit fewer
            done.layers[-1] = replace(done.layers[-1], final=done.finals[0])
            done.finals = done.finals[1:]
        _budget_layers(done, depths, prepared.settings.max_layers)
        nodes.append(done)
    return replace(prepared, nodes=nodes, rendered=True)


def _budget_layers(node: Node, depths: dict[str, int], budget: int) -> None:
    """Keep every chain under overlay's depth limit: flatten the parent when this image would pass ``budget``.

    The flattened parent is its own cache entry (keyed on the parent's ID), so the keys of this
    image's steps keep their meaning: same parent, same flattening, same keys.
    """
    start = depths.get(node.parent_name, 1) if node.parent_name else 1
    own = len(node.layers) + len(node.finals)  # a folded final adds no layer
    if start > 1 and start + own > budget:
        parent = node.parent.name if isinstance(node.parent, type) else node.parent
        node.flatten = Flatten(Rendered("flatten", f"flatten {parent} into one layer ({start} layers; "
                                        f"{start + own} would pass the budget of {budget})",
                                        [], [f"budget={budget}"]),
                               start + own)
        start = 1
    depths[node.name] = 1 if node.squash else start + own


def with_epoch(rendered: Rendered, sde: int | None) -> Rendered:
    """SOURCE_DATE_EPOCH for every command of a step, when it is set: tools that stamp dates into files
    (useradd's last-change day, .pyc invalidation, gzip, gcc's __DATE__) then write the same bytes in
    every build. It enters the key (the env of a RUN, an input of host work): the bytes depend on it."""
    if sde is None:
        return rendered
    pin = ("SOURCE_DATE_EPOCH", str(sde))
    calls = [replace(c, env=tuple(sorted({*c.env, pin}))) if isinstance(c, RunCall) else c for c in rendered.calls]
    inputs = rendered.inputs + ([f"SOURCE_DATE_EPOCH={sde}"] if any(isinstance(c, HostCall) for c in calls) else [])
    return replace(rendered, calls=calls, inputs=inputs)


def _group(planned: list[PlannedStep]) -> tuple[list[Layer], list[PlannedStep]]:
    """Split into layers (each ends at a boundary step) and trailing config-only steps."""
    layers: list[Layer] = []
    current: list[PlannedStep] = []
    for p in planned:
        current.append(p)
        if p.step.boundary:
            layers.append(Layer(tuple(current)))
            current = []
    return layers, current


# --- final image metadata ------------------------------------------------------
VOLATILE_LABELS = ("org.opencontainers.image.created", "org.opencontainers.image.revision",
                   "org.opencontainers.image.source")


def oci_labels(recipe: type[Recipe], settings: Settings, *, revision: str | None, source: str | None,
               now: float | None = None) -> dict[str, str]:
    sde = settings.source_date_epoch
    created = _dt.datetime.fromtimestamp(sde if sde is not None else (now or time.time()), _dt.UTC)
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


def final_commits(node: Node, settings: Settings, facts: HostFacts, trailing: list[PlannedStep],
                  first_index: int) -> list[FinalCommit]:
    """How an image is finished.

    Labels that change with every git commit (revision, created, source) must not leak into the
    cache keys of child images, or each commit would rebuild every child. So a non-leaf image is
    finished in two commits: the *stable* one (trailing config + stable labels), which children
    build FROM, and the named image on top of it carrying the volatile labels (a config-only
    commit). A leaf (no child builds on it) is finished in one commit. ``created`` is keyed only when
    SOURCE_DATE_EPOCH pins it, so time passing is not a cache miss. Bases and stages (not shipped)
    carry no volatile labels at all: one commit, folded into their last layer.
    """
    labels = oci_labels(node.recipe, settings, revision=facts.revision, source=facts.source, now=facts.started)

    def args(items) -> tuple[str, ...]:
        return tuple(a for k, v in sorted(items) for a in ("--label", f"{k}={v}"))

    def keyed(label_args: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a for a in label_args if settings.source_date_epoch is not None
                     or not a.startswith("org.opencontainers.image.created="))

    calls = [c for p in trailing for c in p.rendered.calls]
    facts_text = [f"squash={node.squash}", f"format={node.image_format}", f"timestamp={settings.source_date_epoch}"]
    ref = node.ref
    squashed = " (squashed)" if node.squash else ""
    if not node.shipped:  # a base or a stage: never run or published, so it needs no revision labels
        label_args = args((k, v) for k, v in labels.items() if k not in VOLATILE_LABELS)
        rendered = Rendered("final", f"config + labels of {ref}{squashed}", [*calls, ConfigCall(label_args)],
                            facts_text)
        return [FinalCommit(first_index, rendered, tuple(trailing), label_args, node.squash, True)]
    if node.leaf:  # no child builds on it: one commit carries everything
        label_args = args(labels.items())
        rendered = Rendered("final", f"commit {ref}{squashed}", [*calls, ConfigCall(keyed(label_args))], facts_text)
        return [FinalCommit(first_index, rendered, tuple(trailing), label_args, node.squash, True)]
    stable = args((k, v) for k, v in labels.items() if k not in VOLATILE_LABELS)
    volatile = args((k, v) for k, v in labels.items() if k in VOLATILE_LABELS)
    first = FinalCommit(first_index, Rendered("final", f"config + labels of {ref}{squashed}",
                                              [*calls, ConfigCall(stable)], facts_text),
                        tuple(trailing), stable, node.squash, True)
    second = FinalCommit(first_index + 1, Rendered("final", f"commit {ref} (revision labels)",
                                                   [ConfigCall(keyed(volatile))], facts_text),
                         (), volatile, False, False)
    return [first, second]


__all__ = ["FinalCommit", "Flatten", "Layer", "Node", "Plan", "PlanError", "PlannedStep", "build_plan", "oci_labels",
           "prepare", "render", "resolve_graph", "resolve_parent", "resolve_stage"]
