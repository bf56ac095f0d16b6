"""Compiler profiles for libraries built from source: flags as data, hardening per the OpenSSF guide.

A :class:`Profile` is plain data (name, CFLAGS, CXXFLAGS, LDFLAGS, strip, debug). The build
step exports the flags to configure/CMake and records them in the build manifest, and the
flags are part of the step's cache key, so changing a flag rebuilds exactly the libraries
that use the profile.

:data:`HARDENING` follows the OpenSSF "Compiler Options Hardening Guide for C and C++"
(https://best.openssf.org/Compiler-Hardening-Guides/Compiler-Options-Hardening-Guide-for-C-and-C++):

* ``-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3``: undefine first so a distro default cannot win;
  level 3 needs optimisation, which both profiles have (-O2 / -O3).
* ``-fstack-protector-strong -fstack-clash-protection``, ``-fcf-protection=full`` (x86-64
  only; ``-mbranch-protection=standard`` on aarch64).
* ``-fPIC`` for everything we compile (static archives may be linked into shared objects);
  executables are PIE because Debian's GCC defaults to ``-pie`` (see :attr:`Profile.exe_ldflags`).
* ``-fno-delete-null-pointer-checks -fno-strict-overflow -fno-strict-aliasing``,
  ``-ftrivial-auto-var-init=zero``, ``-fexceptions`` (unwinding through C frames).
* ``-Wall -Wformat -Wformat=2 -Werror=format-security -Werror=implicit
  -Werror=incompatible-pointer-types -Werror=int-conversion``.
* C++ only: ``-D_GLIBCXX_ASSERTIONS``.
* Linker: ``-Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack -Wl,--as-needed
  -Wl,--no-copy-dt-needed-entries``.

Reproducible objects (:data:`REPRODUCIBLE`, in both profiles): ``-frandom-seed`` replaces the
random suffix GCC gives LTO section names (fat LTO objects in static archives differed in every
build), and ``-ffile-prefix-map`` writes the build folder (always :data:`BUILD_DIR`) as
``/usr/src/imagefactory`` into debug info and ``__FILE__``.

Left out on purpose:

* ``-pie`` in LDFLAGS: with GCC, ``-shared -pie`` on one command line links a PIE
  *executable* instead of a shared object, and the same LDFLAGS reach every shared-library
  link. Debian's GCC is configured with ``--enable-default-pie``, so executables are PIE
  anyway; ``Profile.exe_ldflags`` carries ``-pie`` for links we write ourselves, and
  ``imagefactory verify`` checks PIE on every installed executable.
* ``-Werror`` globally: warnings differ between compiler versions; a new GCC must not
  break a pinned release. (cJSON adds its own ``-Werror`` and is known to pass.)
* ``-fstrict-flex-arrays=3``: not validated against all the pinned releases (wolfSSL sizes its
  ``sp_int`` buffers through trailing digit arrays whose declared length differs from the
  allocation); a recipe can add it per library with ``profile.with_(extra_cflags=[...])``.
* ``-Wl,-z,nodlopen``: these are shared libraries that applications may ``dlopen``.
* ``-Wconversion -Wsign-conversion -Wextra``: useful in one's own code, pure noise for
  third-party releases we do not patch.
* ``-fzero-init-padding-bits=all`` / ``-fhardened``: need GCC 15 / are a bundle of the above.
"""

from __future__ import annotations

import dataclasses
import platform as _platform
from dataclasses import dataclass

from .arches import ArchError, get_arch


def _arch() -> str:
    machine = _platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _machine(arch: str) -> str:
    """``uname -m`` spelling of an OCI, Debian or uname name (unknown names pass through)."""
    try:
        return get_arch(arch).machine
    except ArchError:
        return arch


def arch_hardening(arch: str) -> tuple[str, ...]:
    """Control-flow protection flags that exist only on one architecture (``amd64`` or ``x86_64`` alike).

    x86-64: ``-fcf-protection=full`` (IBT + shadow stack, CET); aarch64:
    ``-mbranch-protection=standard`` (BTI landing pads + PAC return-address signing).
    """
    arch = _machine(arch)
    if arch in ("x86_64", "i686", "i386"):
        return ("-fcf-protection=full",)
    if arch == "aarch64":
        return ("-mbranch-protection=standard",)
    return ()


# Every architecture-only flag we know: what Profile.for_arch swaps out.
_ARCH_ONLY_FLAGS = frozenset(f for m in ("x86_64", "aarch64") for f in arch_hardening(m))


def hardening_cflags(arch: str | None = None) -> tuple[str, ...]:
    arch = arch or _arch()
    return (
        "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=3",
        "-fstack-protector-strong", "-fstack-clash-protection", *arch_hardening(arch),
        "-fPIC",
        "-fno-delete-null-pointer-checks", "-fno-strict-overflow", "-fno-strict-aliasing",
        "-ftrivial-auto-var-init=zero", "-fexceptions",
        "-Wall", "-Wformat", "-Wformat=2", "-Werror=format-security",
        "-Werror=implicit", "-Werror=incompatible-pointer-types", "-Werror=int-conversion",
    )


HARDENING: tuple[str, ...] = hardening_cflags()
BUILD_DIR = "/tmp/imagefactory-build"  # where BuildLibrary builds, inside the image's working container
REPRODUCIBLE: tuple[str, ...] = ("-frandom-seed=imagefactory", f"-ffile-prefix-map={BUILD_DIR}=/usr/src/imagefactory")
# C-only error flags that g++ rejects or warns about.
_C_ONLY = frozenset({"-Werror=implicit", "-Werror=incompatible-pointer-types", "-Werror=int-conversion"})
HARDENING_CXX: tuple[str, ...] = (*(f for f in HARDENING if f not in _C_ONLY), "-D_GLIBCXX_ASSERTIONS")
HARDENING_LDFLAGS: tuple[str, ...] = (
    "-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack", "-Wl,--as-needed", "-Wl,--no-copy-dt-needed-entries",
)


@dataclass(frozen=True)
class Profile:
    """How to compile: flags as tuples, and whether installed binaries are stripped.

    ``strip``: run ``strip --strip-unneeded`` on installed shared objects and executables.
    ``debug``: the build keeps DWARF (``-g``); the verifier expects ``.debug_info``.
    ``exe_ldflags``: added only when linking executables ourselves (never to shared objects).
    """

    name: str
    cflags: tuple[str, ...]
    cxxflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    strip: bool
    debug: bool
    exe_ldflags: tuple[str, ...] = ("-pie",)

    @property
    def CFLAGS(self) -> str:  # noqa: N802 - the make variable's name
        return " ".join(self.cflags)

    @property
    def CXXFLAGS(self) -> str:  # noqa: N802
        return " ".join(self.cxxflags)

    @property
    def LDFLAGS(self) -> str:  # noqa: N802
        return " ".join(self.ldflags)

    def flags(self) -> dict[str, str]:
        """The manifest's ``flags`` object."""
        return {"CFLAGS": self.CFLAGS, "CXXFLAGS": self.CXXFLAGS, "LDFLAGS": self.LDFLAGS}

    def with_(self, *, extra_cflags: tuple[str, ...] | list[str] = (), extra_cxxflags: tuple[str, ...] | list[str] = (),
              extra_ldflags: tuple[str, ...] | list[str] = (), drop: tuple[str, ...] | list[str] = (),
              **replace: object) -> Profile:
        """A copy with flags appended (later flags win) and/or removed; other fields via keywords.

        ``RELEASE.with_(extra_cflags=["-DNO_FOO"], drop=["-fexceptions"])``
        """
        dropped = set(drop)

        def edit(flags: tuple[str, ...], extra) -> tuple[str, ...]:
            return tuple(f for f in flags if f not in dropped) + tuple(extra)

        changed = dataclasses.replace(
            self,
            cflags=edit(self.cflags, extra_cflags),
            cxxflags=edit(self.cxxflags, extra_cxxflags),
            ldflags=edit(self.ldflags, extra_ldflags),
        )
        return dataclasses.replace(changed, **replace) if replace else changed

    def for_arch(self, arch: str) -> Profile:
        """The same profile for another architecture: its control-flow flags instead of ours.

        ``RELEASE.for_arch("arm64")`` has ``-mbranch-protection=standard`` where the x86-64 profile
        has ``-fcf-protection=full`` (same position, so the flag order stays readable); every
        other flag is shared. A profile with no architecture flag (one a recipe made without
        them) stays without; the build machine's own architecture returns ``self`` unchanged.
        """
        wanted = arch_hardening(arch)

        def swap(flags: tuple[str, ...]) -> tuple[str, ...]:
            out: list[str] = []
            for flag in flags:
                if flag not in _ARCH_ONLY_FLAGS:
                    out.append(flag)
                elif not any(f in out for f in wanted):
                    out.extend(wanted)
            return tuple(out)

        changed = dataclasses.replace(self, cflags=swap(self.cflags), cxxflags=swap(self.cxxflags),
                                      ldflags=swap(self.ldflags))
        return self if changed == self else changed

    def to_dict(self) -> dict:
        return {"name": self.name, "strip": self.strip, "debug": self.debug, **self.flags()}


DEBUG = Profile(
    name="debug",
    cflags=("-O2", "-g", *HARDENING, *REPRODUCIBLE),
    cxxflags=("-O2", "-g", *HARDENING_CXX, *REPRODUCIBLE),
    ldflags=HARDENING_LDFLAGS,
    strip=False,
    debug=True,
)

# -ffat-lto-objects: static archives keep real machine code next to the LTO bytecode, so
# they link with any compiler version (and `ar`/`strip` do not need the LTO plugin).
_LTO = ("-flto=auto", "-ffat-lto-objects")
RELEASE = Profile(
    name="release",
    cflags=("-O3", *_LTO, *HARDENING, *REPRODUCIBLE),
    cxxflags=("-O3", *_LTO, *HARDENING_CXX, *REPRODUCIBLE),
    ldflags=("-O3", "-flto=auto", *HARDENING_LDFLAGS),
    strip=True,
    debug=False,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (DEBUG, RELEASE)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


__all__ = ["BUILD_DIR", "DEBUG", "HARDENING", "REPRODUCIBLE", "HARDENING_CXX", "HARDENING_LDFLAGS", "PROFILES", "RELEASE", "Profile",
           "arch_hardening", "get_profile", "hardening_cflags"]
