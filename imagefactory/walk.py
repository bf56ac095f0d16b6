"""The one cache walk: which layers of an image are cached, and where, and which must run.

:func:`walk` knows nothing of buildah or registries. Where images can come from arrives
through a :class:`Provider` (resolvelib's pattern): `plan` passes a read-only view of the
store and only formats the decisions; `build` passes the live store (and a registry cache)
and applies them, sending back the ID of each image it commits. Because both go through this
function, `plan` and `build` cannot disagree about a key or a hit.

A key hashes the image it builds on (its ID, so a rebuilt parent means new keys), the fully
rendered steps (command, env, user, workdir), the digests of their inputs and the IDs of
the stages they copy from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Protocol

from .plan import FinalCommit, Flatten, Layer, Node
from .steps import Rendered

CACHE_REPO = "localhost/imagefactory-cache"
KEY_VERSION = "imagefactory-cache-v2"
SCRATCH = "scratch"  # the parent ID of an image built from nothing


def cache_ref(key: str) -> str:
    return f"{CACHE_REPO}:{key[:40]}"


def step_key(parent: str, rendered: Rendered, stage_ids: Mapping[str, str] | None = None) -> str:
    """Key = hash(parent image ID or key, the fully rendered step, the digests of its inputs)."""
    h = hashlib.sha256()
    h.update(KEY_VERSION.encode() + b"\n" + parent.encode() + b"\n" + rendered.key_material(stage_ids).encode())
    return h.hexdigest()


def layer_key(parent: str, layer: Layer, stage_ids: Mapping[str, str]) -> str:
    key = parent
    for p in layer.steps:
        key = step_key(key, p.rendered, stage_ids)
    return key


@dataclass(frozen=True)
class Found:
    """A cache entry: the image ID it names and where it is (``local`` store or a ``registry``)."""

    image_id: str
    where: str
    ref: str


class Provider(Protocol):
    """Where cached images can come from."""

    def find(self, key: str) -> Found | None: ...


class StoreIndex:
    """Look-ups in one listing of a local store (`name → image ID`); never touches the store."""

    def __init__(self, index: Mapping[str, str]):
        self.index = index

    def find(self, key: str) -> Found | None:
        ref = cache_ref(key)
        image_id = self.index.get(ref)
        return Found(image_id, "local", ref) if image_id else None


class FirstFound:
    """Ask providers in order (local store first, then a registry cache)."""

    def __init__(self, *providers: Provider):
        self.providers = providers

    def find(self, key: str) -> Found | None:
        for provider in self.providers:
            found = provider.find(key)
            if found is not None:
                return found
        return None


class NoCache:
    """`--no-cache`: nothing is found, every step runs."""

    def find(self, key: str) -> Found | None:
        return None


@dataclass
class Decision:
    """What happens to one layer or final commit of an image.

    action: ``hit`` (a cached layer), ``run`` (build the layer), ``final-hit`` / ``final``
    (the finishing commit, cached or to do). ``base`` is the image ID it builds on (``scratch``
    for none; None when unknown because something before it must run first, as in `plan`).
    """

    node: Node
    unit: Layer | FinalCommit | Flatten
    action: str
    key: str | None
    base: str | None
    found: Found | None = None

    @property
    def is_final(self) -> bool:
        return isinstance(self.unit, FinalCommit)

    @property
    def is_flatten(self) -> bool:
        return isinstance(self.unit, Flatten)

    @property
    def hit(self) -> bool:
        return self.found is not None

    @property
    def source(self) -> str:
        """Where the result comes from: ``local``, ``registry`` or ``build``."""
        return self.found.where if self.found else "build"


Walk = Generator[Decision, "str | None", "str | None"]


def walk(node: Node, parent_id: str | None, stage_ids: Mapping[str, str], provider: Provider) -> Walk:
    """Yield a :class:`Decision` per layer and final commit of ``node``, in order.

    For a ``run``/``final`` decision the caller sends back the ID of the image it committed
    (None when it only plans: later keys are then unknown). Returns the ID children build on
    (the stable commit of a non-leaf image), or None when unknown.
    """
    base = parent_id  # None: unknown (a parent or stage that is not built yet)
    if node.flatten:
        key = step_key(_keyed(base, node), node.flatten.rendered) if base else None
        base = yield from _decide(node, node.flatten, key, base, provider, ("hit", "run"))
    for_children = None
    for layer in node.layers:
        key = _key(_keyed(base, node), layer, stage_ids)
        if key and layer.final:
            key = step_key(key, layer.final.rendered)
        base = yield from _decide(node, layer, key, base, provider, ("hit", "run"))
        if layer.final and layer.final.feeds_children:
            for_children = base
    for fc in node.finals:
        key = step_key(_keyed(base, node), fc.rendered) if base else None
        base = yield from _decide(node, fc, key, base, provider, ("final-hit", "final"))
        if fc.feeds_children:
            for_children = base
    return for_children


def _decide(node: Node, unit: Layer | FinalCommit | Flatten, key: str | None, base: str | None,
            provider: Provider, actions: tuple[str, str]) -> Walk:
    """One decision: a hit where the provider finds the key, else a run; the image the next unit builds on."""
    found = provider.find(key) if key else None
    if found:
        yield Decision(node, unit, actions[0], key, base, found)
        return found.image_id
    return (yield Decision(node, unit, actions[1], key, base))


def _keyed(base: str | None, node: Node) -> str | None:
    """The parent as key material: an image ID carries its architecture; nothing (scratch) does,
    so an image built from scratch keys on the architecture it is for."""
    return f"{SCRATCH}/{node.arch}" if base == SCRATCH and node.arch else base


def _key(base: str | None, layer: Layer, stage_ids: Mapping[str, str]) -> str | None:
    if base is None or any(stage not in stage_ids for stage in layer.stages):
        return None
    return layer_key(base, layer, stage_ids)


__all__ = ["CACHE_REPO", "SCRATCH", "Decision", "FirstFound", "Found", "NoCache", "Provider", "StoreIndex",
           "cache_ref", "layer_key", "step_key", "walk"]
