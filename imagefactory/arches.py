"""CPU architectures: one table of the names each tool uses for the same machine.

OCI image configs, buildah's ``--arch`` and Debian say ``amd64``/``arm64``; GCC triples, ELF
headers and ``uname -m`` say ``x86_64``/``aarch64``; qemu's binfmt handlers are named after the
latter. Everything that crosses from one vocabulary to another goes through :func:`get_arch`.
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass


class ArchError(ValueError):
    pass


@dataclass(frozen=True)
class Arch:
    """One architecture in every vocabulary we need.

    name         the OCI / buildah / Debian name (``amd64``, ``arm64``): settings, tags, keys
    machine      ``uname -m`` and the GNU triple's first part (``x86_64``, ``aarch64``)
    triple       the GNU triple of Debian's cross compilers (``aarch64-linux-gnu``)
    elf_machine  pyelftools' ``e_machine`` (``EM_X86_64``, ``EM_AARCH64``)
    qemu         the binfmt_misc handler qemu-user-static registers (``qemu-aarch64``)
    variant      the OCI platform variant (``v8`` for arm64, as buildah/registries report it)
    """

    name: str
    machine: str
    triple: str
    elf_machine: str
    qemu: str
    variant: str = ""

    @property
    def platform(self) -> str:
        """``linux/arm64/v8`` style, as ``--platform`` and manifest lists spell it."""
        return "/".join(p for p in ("linux", self.name, self.variant) if p)


ARCHES: dict[str, Arch] = {
    a.name: a for a in (
        Arch("amd64", "x86_64", "x86_64-linux-gnu", "EM_X86_64", "qemu-x86_64"),
        Arch("arm64", "aarch64", "aarch64-linux-gnu", "EM_AARCH64", "qemu-aarch64", "v8"),
    )
}
_ALIASES = {a.machine: a.name for a in ARCHES.values()} | {"x86-64": "amd64", "aarch64_be": "arm64"}


def get_arch(name: str) -> Arch:
    """The architecture for an OCI, Debian or ``uname -m`` name; a clear error for anything else."""
    key = (name or "").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ARCHES:
        raise ArchError(f"unknown architecture {name!r}: imagefactory builds {', '.join(ARCHES)} "
                        "(OCI names; x86_64/aarch64 are accepted too)")
    return ARCHES[key]


def host_arch() -> Arch:
    """The build machine's architecture (where containers run without emulation)."""
    return get_arch(_platform.machine())


def parse_arches(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"amd64,arm64"`` (or a list) as OCI names, duplicates dropped, order kept."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and (name := get_arch(item).name) not in out:
            out.append(name)
    if not out:
        raise ArchError("no architecture given: use e.g. --arch amd64,arm64")
    return tuple(out)


__all__ = ["ARCHES", "Arch", "ArchError", "get_arch", "host_arch", "parse_arches"]
