"""Recipes: Python classes that describe images, and the catalogue that finds them by name.

A recipe yields only its *own* steps. Inheritance means FROM: ``class Test(Dev)``
builds on the Dev image and runs Test's steps on top. A recipe with no recipe
parent starts from its platform's base (``base = "full"`` or ``"slim"``), from an
external image (``parent = "registry/name:tag"``), or from scratch.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .steps import Step

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings


class RecipeError(ValueError):
    """A recipe is malformed, unknown or forms a cycle; the message names it."""


@dataclass
class Runtime:
    """How an image is meant to run as a service or dev shell (Quadlet units, `shell`, `run`)."""

    ports: list[str] = field(default_factory=list)  # "7480:7480"
    volumes: list[str] = field(default_factory=list)  # "name:/path"
    environment: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # env vars that must never be written inline
    user: str | None = None
    group: str | None = None
    health_cmd: str | None = None
    cap_drop: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cpus: str | None = None
    memory: str | None = None
    workdir: str | None = None
    mount_project: str | None = None  # mount the current folder here (dev images)
    # Health check timing (podman --health-*; quadlet Health*=): durations like "30s", "2m".
    health_interval: str | None = None
    health_timeout: str | None = None
    health_start_period: str | None = None
    health_retries: int | None = None
    health_on_failure: str | None = None  # none | kill | restart | stop; quadlet defaults to kill
    pids_limit: int | None = None
    networks: list[str] = field(default_factory=list)  # quadlet: NAME.network units, joined by the container
    volume_units: bool = False  # quadlet: a NAME.volume unit for every named volume


class Recipe:
    """Base class of every image recipe.

    Class attributes (all optional but ``name``):
      name            image name (``ocserv-modern-dev``); makes the class a concrete recipe
      target          short CLI name (``dev``); defaults to ``name``
      parent          explicit parent recipe class or external image reference
      base            ``"full"`` or ``"slim"``: the platform base when there is no recipe parent;
                      or per platform, ``{"debian": "slim", "ubi9": "registry/image:tag"}``
      version         image tag and org.opencontainers.image.version
      squash          squash the final image; default: squash leaf images only
      size_budget_mb  ``verify --size`` fails above it; ``build`` reports against it; one number
                      for every platform, or per platform ``{"debian": 260, "ubi9": 200}``, or per
                      platform and architecture ``{"debian": 260, "debian/arm64": 280}``
      stages          ``{"builder": BuilderRecipe}`` for multi-stage recipes
      runtime         :class:`Runtime` settings for quadlet/shell
      labels          extra OCI labels
      licenses        SPDX expression for org.opencontainers.image.licenses
      build_platform  a stage that always runs on the build machine's architecture and produces
                      files for the image's (``--platform=$BUILDPLATFORM`` in BuildKit): its
                      ``steps()`` see ``self.target`` (what to build for) next to ``self.arch``
                      (what it runs on) and cross-compile when ``self.cross``

    Instances know the architecture they are planned for: ``self.arch`` (the image's own, an
    :class:`~imagefactory.arches.Arch`) and ``self.target`` (the architecture its output is for;
    the same except in a ``build_platform`` stage of a foreign-architecture build).
    """

    name: ClassVar[str]
    target: ClassVar[str | None] = None
    parent: ClassVar[Any] = None
    base: ClassVar[str | dict[str, str] | None] = None
    version: ClassVar[str] = "latest"
    squash: ClassVar[bool | None] = None
    size_budget_mb: ClassVar[float | dict[str, float] | None] = None
    stages: ClassVar[dict[str, type[Recipe]]] = {}
    runtime: ClassVar[Runtime | None] = None
    labels: ClassVar[dict[str, str]] = {}
    licenses: ClassVar[str] = "NOASSERTION"
    hidden: ClassVar[bool] = False  # stages and bases: built when needed, not listed as targets
    platform_name: ClassVar[str | None] = None  # set on platform base recipes
    build_platform: ClassVar[bool] = False

    def __init__(self, settings: Settings, arch: str | None = None, target: str | None = None):
        from .arches import get_arch, host_arch

        self.settings = settings
        self.arch = get_arch(arch) if arch else host_arch()
        self.target = get_arch(target) if target else self.arch

    @property
    def cross(self) -> bool:
        """True in a build-platform stage whose output is for another architecture."""
        return self.arch != self.target

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            CATALOGUE.add(cls)

    def steps(self) -> Iterable[Step]:
        return ()

    # -- class-level facts the planner asks for --------------------------------
    @classmethod
    def is_concrete(cls) -> bool:
        return "name" in cls.__dict__

    @classmethod
    def target_name(cls) -> str:
        return cls.__dict__.get("target") or cls.name

    @classmethod
    def description(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def recipe_dir(cls) -> Path:
        return Path(inspect.getfile(cls)).resolve().parent

    @classmethod
    def declared_parent(cls) -> type[Recipe] | str | None:
        """Explicit ``parent``, else the nearest concrete recipe this class inherits from."""
        if cls.__dict__.get("parent") is not None:
            return cls.__dict__["parent"]
        for klass in cls.__mro__[1:]:
            if klass is Recipe:
                break
            if isinstance(klass, type) and issubclass(klass, Recipe) and klass.is_concrete():
                return klass
            if klass.__dict__.get("parent") is not None:
                return klass.__dict__["parent"]
        return None

    @classmethod
    def size_budget(cls, platform: str, arch: str | None = None) -> float | None:
        """The budget on PLATFORM: a plain number applies everywhere, a dict names each platform's
        own (a platform it does not name has no budget); ``"debian/arm64"`` is that architecture's
        own budget on the platform (binaries differ in size per architecture), else the platform's."""
        budget = cls.size_budget_mb
        if not isinstance(budget, dict):
            return budget
        return budget.get(f"{platform}/{arch}", budget.get(platform)) if arch else budget.get(platform)

    @classmethod
    def image_ref(cls, arch: str | None = None) -> str:
        """The local name: ``localhost/NAME:VERSION`` for the build machine's architecture, with
        ``-ARCH`` appended to the tag for another (``ocserv-modern-ci:latest-arm64``)."""
        from .arches import get_arch, host_arch

        if arch and get_arch(arch) != host_arch():
            return f"localhost/{cls.name}:{cls.version}-{get_arch(arch).name}"
        return f"localhost/{cls.name}:{cls.version}"

    @classmethod
    def manifest_ref(cls) -> str:
        """The local manifest list of a multi-architecture build (``build --arch amd64,arm64``)."""
        return f"localhost/{cls.name}:{cls.version}-multiarch"


class Catalogue:
    """Every concrete recipe class by name and target; filled as recipe modules are imported."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Recipe]] = {}
        self.loaded_from: list[str] = []

    def add(self, cls: type[Recipe]) -> None:
        existing = self._by_name.get(cls.name)
        if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
            raise RecipeError(
                f"recipe name {cls.name!r} is defined twice: {_qualname(existing)} and {_qualname(cls)}; "
                "give the new class another `name`, or subclass the existing one to build on it")
        self._by_name[cls.name] = cls

    def __iter__(self) -> Iterator[type[Recipe]]:
        return iter(sorted(self._by_name.values(), key=lambda c: c.name))

    def targets(self) -> list[type[Recipe]]:
        return [c for c in self if not c.hidden]

    def get(self, name: str) -> type[Recipe]:
        """Find by target or image name; unknown names get a list of what exists."""
        for cls in self._by_name.values():
            if not cls.hidden and cls.target_name() == name:
                return cls
        if name in self._by_name:
            return self._by_name[name]
        known = ", ".join(c.target_name() for c in self.targets()) or "(none loaded)"
        raise RecipeError(f"unknown target {name!r}; known targets: {known}. "
                          "Recipes are loaded from recipes/ and the `recipe_paths` setting.")

    def clear(self) -> None:
        self._by_name.clear()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


CATALOGUE = Catalogue()
