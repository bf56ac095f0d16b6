"""Running another architecture's programs on the build machine: qemu-user through binfmt_misc.

Building an arm64 image on amd64 runs arm64 programs: the base's maintainer scripts, every
``Run``/``Install`` step in the image, the unit tests a cross-compiled library runs while it
builds (with the cross libc as ``QEMU_LD_PREFIX``). The kernel hands those to qemu-user through
a binfmt_misc handler; it must carry the fix-binary flag (``F``: the kernel opens the emulator
when the handler is registered), or the emulator is looked up inside each container, where it
does not exist. Debian's ``qemu-user-static`` registers its handlers that way.

:func:`binfmt_status` reads ``/proc/sys/fs/binfmt_misc``; :func:`doctor_rows` is what ``doctor``
reports, with the exact commands that fix what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .arches import ARCHES, Arch, get_arch, host_arch

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class BinfmtStatus:
    """What the kernel says about one architecture's qemu handler."""

    arch: Arch
    mounted: bool  # binfmt_misc is mounted (its register file exists)
    globally_enabled: bool  # binfmt_misc/status says enabled
    registered: bool  # binfmt_misc/<handler> exists
    enabled: bool  # ... and says enabled
    flags: str  # e.g. "PF" (preserve argv[0], fix binary)
    interpreter: str

    @property
    def ok(self) -> bool:
        return self.mounted and self.globally_enabled and self.registered and self.enabled and "F" in self.flags

    def describe(self) -> str:
        if not self.mounted:
            return "binfmt_misc is not mounted"
        if not self.globally_enabled:
            return "binfmt_misc is disabled (status: disabled)"
        if not self.registered:
            return f"no {self.arch.qemu} handler registered"
        if not self.enabled:
            return f"{self.arch.qemu} is registered but disabled"
        if "F" not in self.flags:
            return (f"{self.arch.qemu} lacks the fix-binary flag (flags: {self.flags or 'none'}): "
                    "containers cannot find its emulator")
        return f"{self.arch.qemu} enabled, flags {self.flags}, {self.interpreter}"


def binfmt_status(arch: str | Arch, folder: Path = BINFMT_MISC) -> BinfmtStatus:
    """The handler for ``arch`` (``arm64``, ``aarch64``...) as ``folder`` (binfmt_misc) shows it."""
    target = arch if isinstance(arch, Arch) else get_arch(arch)
    mounted = (folder / "register").exists()
    status = _read(folder / "status")
    text = _read(folder / target.qemu)
    fields = dict(line.split(" ", 1) for line in (text or "").splitlines()[1:] if " " in line)
    return BinfmtStatus(
        arch=target,
        mounted=mounted,
        globally_enabled=mounted and (status or "").strip() == "enabled",
        registered=text is not None,
        enabled=(text or "").splitlines()[:1] == ["enabled"],
        flags=fields.get("flags:", "").strip(),
        interpreter=fields.get("interpreter", "").strip(),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def enable_commands(arch: str | Arch, status: BinfmtStatus | None = None) -> list[str]:
    """The commands (as root) that make ``arch``'s handler usable, from the first missing piece on.

    ``apt-get install qemu-user-static binfmt-support`` registers every handler with the ``F``
    flag (binfmt-support's ``update-binfmts`` reads qemu's /usr/share/binfmts entries) once
    binfmt_misc is mounted; ``update-binfmts --enable`` (re)registers one by name. A handler
    some other tool registered without ``F`` is removed first (``echo -1`` to its file).
    """
    target = arch if isinstance(arch, Arch) else get_arch(arch)
    status = status or binfmt_status(target)
    steps: list[str] = []
    if not status.registered:
        steps.append("apt-get install qemu-user-static binfmt-support")
    if not status.mounted:
        steps.append(f"mount -t binfmt_misc binfmt_misc {BINFMT_MISC}")
    if not status.globally_enabled:
        steps.append(f"echo 1 > {BINFMT_MISC}/status")
    if status.registered and "F" not in status.flags:  # registered by something else, without F
        steps.append(f"echo -1 > {BINFMT_MISC}/{target.qemu}")
    if not status.ok:
        steps.append(f"update-binfmts --enable {target.qemu}")
    return steps


class EmulationError(RuntimeError):
    """Another architecture's programs cannot run here; the message has the commands that fix it."""


def require_emulation(arch: str | Arch, folder: Path = BINFMT_MISC, build: Arch | None = None) -> None:
    """Fail before a build starts when ``arch`` needs qemu-user and the kernel cannot run it.

    For a preflight: building an arm64 image (or cross-compiling a library whose build runs
    its tests) on amd64 without the handler fails minutes in with "Exec format error".
    """
    target = arch if isinstance(arch, Arch) else get_arch(arch)
    if target.name == (build or host_arch()).name:
        return
    status = binfmt_status(target, folder)
    if not status.ok:
        raise EmulationError(f"cannot build for {target.name} on this {(build or host_arch()).name} machine: "
                             f"{status.describe()}. As root: {'; '.join(enable_commands(target, status))} "
                             "(or run ci/setup; see docs/multiarch.md)")


def foreign_arches(build: Arch | None = None) -> list[Arch]:
    """The architectures imagefactory builds that the build machine runs only under emulation."""
    build = build or host_arch()
    return [a for a in ARCHES.values() if a.name != build.name]


def doctor_rows(configured: Iterable[str], folder: Path = BINFMT_MISC,
                build: Arch | None = None) -> list[tuple[str, bool, str, str]]:
    """``doctor`` rows (name, ok, found, how to fix), one per foreign architecture.

    A problem with an architecture the settings' ``arches`` do not list is only a warning: the
    row says so and stays ok, so ``doctor`` does not fail a machine that builds amd64 only.
    The names are ``qemu <arch>``; :func:`required_rows` says which must pass.
    """
    wanted = {get_arch(a).name for a in configured}
    rows = []
    for arch in foreign_arches(build):
        status = binfmt_status(arch, folder)
        fix = "; ".join(enable_commands(arch, status)) + " (ci/setup does this)"
        if status.ok:
            rows.append((f"qemu {arch.name}", True, status.describe(), ""))
        elif arch.name in wanted:
            rows.append((f"qemu {arch.name}", False, status.describe(), fix))
        else:
            rows.append((f"qemu {arch.name}", True, f"warning: {status.describe()} (needed only for "
                                                    f"--arch {arch.name}; to enable: {fix})", ""))
    return rows


def required_rows(configured: Iterable[str], build: Arch | None = None) -> set[str]:
    """Row names of :func:`doctor_rows` that must pass: the configured foreign architectures."""
    wanted = {get_arch(a).name for a in configured}
    return {f"qemu {a.name}" for a in foreign_arches(build) if a.name in wanted}


__all__ = ["BINFMT_MISC", "BinfmtStatus", "EmulationError", "binfmt_status", "doctor_rows", "enable_commands",
           "foreign_arches", "require_emulation", "required_rows"]
