"""What the store says about a built image: ID, labels, parent chain, base, pushed digest (for SBOM and provenance)."""

from __future__ import annotations

from .buildah import Buildah
from .config import Settings
from .plan import resolve_graph
from .recipe import CATALOGUE, Recipe
from .registry import find_pushed


class SupplyError(RuntimeError):
    """A supply-chain step cannot run; the message says what to do."""


def _labels(info: dict) -> dict[str, str]:
    for section in ("OCIv1", "Docker"):
        labels = ((info.get(section) or {}).get("config") or {}).get("Labels")
        if labels:
            return dict(labels)
    return {}


def _architecture(info: dict) -> str | None:
    """The image config's architecture (``amd64``, ``arm64``), as the SBOM's purls qualify it."""
    for section in ("OCIv1", "Docker"):
        arch = (info.get(section) or {}).get("architecture")
        if arch:
            return str(arch)
    return None


def _lookup_external(index: dict[str, str], ref: str) -> str | None:
    for candidate in (ref, f"docker.io/library/{ref}", f"localhost/{ref}"):
        if candidate in index:
            return index[candidate]
    return None


def image_facts(settings: Settings, target: str | type[Recipe], bd: Buildah, registry: str | None = None,
                arch: str | None = None):
    """:class:`~imagefactory.sbom.ImageFacts` for a built target (its ``arch`` instance): ID, labels,
    parent chain, base, digest."""
    from .sbom import BaseImage, ImageFacts

    cls = CATALOGUE.get(target) if isinstance(target, str) else target
    ref = cls.image_ref(arch)
    index = bd.image_index()
    if ref not in index:
        raise SupplyError(f"{ref} is not built in this store: run `imagefactory build {cls.target_name()}` first")
    info = bd.inspect(ref)
    image_id = str(info.get("FromImageID") or index[ref]).removeprefix("sha256:")
    labels = _labels(info)
    plan = resolve_graph([cls], settings)
    parents: list[tuple[str, str]] = []
    base = None
    node = plan.node(cls, arch)
    parent = node.parent
    for _ in range(64):
        if parent is None:
            break
        if isinstance(parent, type):
            node = plan.node(node.parent_name)
            pid = index.get(node.ref) or ""
            parents.append((parent.name, pid))
            if getattr(parent, "platform_name", None):
                base = BaseImage(description=parent.description() or f"{parent.platform_name} base image",
                                 image_id=pid or None, name=parent.name)
                break
            parent = node.parent
        else:
            pid = _lookup_external(index, parent) or ""
            parents.append((parent, pid))
            base = BaseImage(description=f"external image {parent}", image_id=pid or None, name=parent)
            break
    pushed = find_pushed(settings, target=cls.target_name(), registry=registry, image_id=image_id)
    if pushed is None and registry is None:
        pushed = find_pushed(settings, target=cls.target_name(), image_id=image_id)
    facts = ImageFacts(
        name=pushed.repository if pushed else cls.name,
        tag=cls.version,
        image_id=image_id,
        digest=pushed.digest if pushed else None,
        parents=parents,
        base=base,
        platform=settings.platform,
        created=labels.get("org.opencontainers.image.created") or None,
        labels=labels,
        architecture=_architecture(info),
    )
    return facts


__all__ = ["SupplyError", "image_facts"]
