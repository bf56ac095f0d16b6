"""Images of one target for several architectures, and the manifest list that names them together.

A build for ``arches: [amd64, arm64]`` plans every image once per architecture (see
:func:`imagefactory.plan.resolve_graph`); each instance keeps its own tag
(``localhost/NAME:VERSION`` on the build machine's architecture, ``...:VERSION-arm64`` for
another, plus ``...:VERSION-amd64`` as an alias of the native one), and the target gets a local
manifest list ``localhost/NAME:VERSION-multiarch`` that ``push`` sends with every instance and
``sign`` signs (the index and each instance).
"""

from __future__ import annotations

from dataclasses import dataclass

from .arches import get_arch, host_arch
from .recipe import Recipe


@dataclass(frozen=True)
class Instance:
    arch: str
    ref: str


def instances(cls: type[Recipe], arches: tuple[str, ...] | list[str]) -> list[Instance]:
    """The per-architecture images of a target, in the order the architectures were given."""
    return [Instance(get_arch(a).name, cls.image_ref(a)) for a in arches]


def arch_alias(cls: type[Recipe]) -> str:
    """The build machine's image under its architecture's tag too (``...:latest-amd64``)."""
    return f"localhost/{cls.name}:{cls.version}-{host_arch().name}"


def is_multiarch(arches: tuple[str, ...] | list[str]) -> bool:
    """A manifest list is made when more than one architecture, or a foreign one alone, is built."""
    return len(arches) > 1 or any(get_arch(a) != host_arch() for a in arches)


def make_manifest_lists(bd, targets: list[type[Recipe]], arches: tuple[str, ...]) -> list[dict]:
    """(Re)create each target's local manifest list from its built instances; what was made."""
    made = []
    for cls in targets:
        members = instances(cls, arches)
        missing = [m.ref for m in members if not bd.exists(m.ref)]
        if missing:
            raise RuntimeError(f"{cls.name}: cannot make its manifest list, {', '.join(missing)} is not built")
        if any(get_arch(m.arch) == host_arch() for m in members):
            bd.tag(cls.image_ref(), arch_alias(cls))
        list_id = bd.manifest_list(cls.manifest_ref(), [m.ref for m in members])
        made.append({"target": cls.target_name(), "list": cls.manifest_ref(), "id": list_id,
                     "instances": [{"arch": m.arch, "ref": m.ref} for m in members]})
    return made


__all__ = ["Instance", "arch_alias", "instances", "is_multiarch", "make_manifest_lists"]
