"""The four ocserv-modern images: dev → test, and build → ci.

==========  ======================  ======  ===========  ====================================
target      image                   base    budget (MB)  what it is for
                                            debian/ubi9
==========  ======================  ======  ===========  ====================================
``dev``     ocserv-modern-dev       full    805/500      developer shell: full toolchain,
                                                         debuggers, ocserv build deps, the
                                                         five libs (DEBUG)
``test``    ocserv-modern-test      dev     860/500      unit tests + coverage of /workspace
                                                         (``run-tests``), frameworks, net tools
``build``   ocserv-modern-build     slim    295/200      release builds and packaging: C
                                                         toolchain, the platform's packaging
                                                         tools, the libs (RELEASE)
``ci``      ocserv-modern-ci        build   295/200      CI runner scripts + ``quick-validate``
==========  ======================  ======  ===========  ====================================

Budgets are per platform: ``ubi9`` keeps 500/200; on Debian each is the image's measured size
plus at most 5 % (the breakdowns are in the class docstrings), so ``verify --size`` catches
growth. No layer holds docs, man pages or locales: the Debian base tells dpkg to skip them
before the first package is unpacked, dnf runs with ``--nodocs``.

Every library is its own layer (one :class:`~imagefactory.libraries.BuildLibrary` step each)
in the intermediate images ``dev`` and ``build``; the leaves ``test`` and ``ci`` are squashed.

Per-library extra compiler flags come from settings values, so a flag can be tried on one
library without editing a recipe (only that library's layer and the ones after it rebuild)::

    IMAGEFACTORY_VALUES="ocserv.cflags.cjson=-DSOME_FLAG=1" imagefactory build ci

(``ocserv.cflags.<library>`` and ``ocserv.ldflags.<library>``; several flags separated by ``;``.)

Size trade-offs for ``build`` (see :class:`Build`): it keeps a working C build environment
(gcc, make, pkg-config, binutils, LTO) and dpkg-dev; g++, cmake and autotools are needed only to
build the libraries, so they stay in the :class:`ReleaseLibraries` stage. Files no build runs
are dropped in the same layer that installs them (gcc's ``lto-dump``, CMake's offline help).
"""

from __future__ import annotations

from typing import ClassVar

from imagefactory.libraries import BUILD_DEPS, BuildLibrary, LibrarySpec, library_labels
from imagefactory.recipe import Recipe, RecipeError, Runtime
from imagefactory.steps import AddUser, Config, Copy, CopyFrom, Install, Rendered, Run, RunCall, User
from imagefactory.toolchain import DEBUG, RELEASE, Profile

from .libs import ALL, CJSON, LIBUV, LLHTTP, MIMALLOC, WOLFSSL
from .packages import (DEBUG_TOOLS, MIN_TOOLCHAIN, NATIVE_PACKAGING, OCSERV_BUILD_DEPS, RPM_PACKAGING, TEST_TOOLS,
                       TOOLCHAIN)

SHARE = "/usr/local/share/ocserv-modern"
VERSIONS_FILE = f"{SHARE}/versions"

# name in the versions file / quick-validate's EXPECT_<NAME> → library spec
EXPECTED = {"wolfssl": WOLFSSL, "libuv": LIBUV, "llhttp": LLHTTP, "cjson": CJSON, "mimalloc": MIMALLOC}

# Files a build never runs: dropped in the same layer that installs them, so they cost nothing.
# lto-dump is gcc's LTO bytecode inspector (~32 MB; -flto itself needs lto1, which stays);
# CMake's Help/ is the offline text of `cmake --help-*`.
UNUSED_BUILD_FILES = ("/usr/bin/*lto-dump*", "/usr/share/cmake-*/Help")
# The release build image does not build with sanitizers: their runtimes (~27 MB) go too.
SANITIZER_RUNTIMES = ("/usr/lib/x86_64-linux-gnu/lib*san.so*", "/usr/lib/gcc/*/*/lib*san*.a",
                      "/usr/lib/gcc/*/*/lib*san*.so", "/usr/lib/gcc/*/*/lib*san_preinit.o")
# Documentation outside the paths dpkg is told to skip: CMake's offline help (~5 MB, the text of
# `cmake --help-*`). Dropped in the layer that installs it, so no layer carries it.
DOCS_DPKG_MISSES = ("/usr/share/cmake-*/Help",)
# binutils' gprofng profiler (~5 MB): a build image profiles nothing (dev keeps it).
PROFILER_FILES = ("/usr/bin/gprofng*", "/usr/lib/x86_64-linux-gnu/libgprofng.so*",
                  "/usr/lib/x86_64-linux-gnu/gprofng", "/etc/gprofng.rc")
# What a release build/CI image keeps besides MIN_TOOLCHAIN and the packaging tools: binutils
# (ar, ld, strip for LTO archives), file, xz/patch for source packages.
RELEASE_EXTRAS = ("binutils", "file", "patch", "xz-utils")
# rpm tooling on Debian is opt-in (recipes/packages.py, NATIVE_PACKAGING): a settings value turns it on.
RPM_SETTING = "ocserv.packaging.rpm"
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def unique(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Concatenate package groups, first occurrence wins, order kept (plans stay readable)."""
    out: list[str] = []
    for group in groups:
        out.extend(p for p in group if p not in out)
    return tuple(out)


class InstallTrimmed(Install):
    """Install packages, then delete files nobody runs *in the same layer* (so they add no bytes)."""

    def __init__(self, *packages: str, drop: tuple[str, ...] = ()):
        super().__init__(*packages)
        self.drop = tuple(drop)

    def render(self, ctx) -> Rendered:
        rendered = super().render(ctx)
        if self.drop:
            rendered.calls.append(RunCall(("/bin/sh", "-ec", "rm -rf " + " ".join(self.drop))))
            rendered.summary += " (then trimmed)"
        return rendered


def packaging_tools(settings) -> tuple[str, ...]:
    """The platform's own packaging tools; rpm tooling on Debian only when ``ocserv.packaging.rpm`` is on."""
    native = NATIVE_PACKAGING.get(settings.platform, ())
    wanted = (settings.value(RPM_SETTING) or "").strip().lower()
    if wanted not in _YES + _NO:
        raise RecipeError(f"setting {RPM_SETTING}={wanted!r} (ocserv-modern-build): use 1/true/yes/on to "
                          "install rpm and createrepo-c, or 0/false/no/off (the default) to leave them out")
    return unique(native, RPM_PACKAGING) if wanted in _YES else native


def library_profile(settings, spec: LibrarySpec, profile: Profile) -> Profile:
    """The profile for one library, plus ``ocserv.cflags.<lib>`` / ``ocserv.ldflags.<lib>`` values."""
    cflags = [f for f in (settings.value(f"ocserv.cflags.{spec.name}") or "").split(";") if f]
    ldflags = [f for f in (settings.value(f"ocserv.ldflags.{spec.name}") or "").split(";") if f]
    if not (cflags or ldflags):
        return profile
    return profile.with_(extra_cflags=cflags, extra_cxxflags=cflags, extra_ldflags=ldflags)


def build_libraries(settings, profile: Profile):
    """One BuildLibrary step (one layer) per library, in dependency-free pin order."""
    for spec in ALL:
        yield BuildLibrary(spec, library_profile(settings, spec, profile))


def versions_step() -> Run:
    """Bake the pinned versions into the image for quick-validate (key changes with any pin)."""
    lines = "\n".join(f"{name}={spec.version}" for name, spec in EXPECTED.items())
    return Run(f"mkdir -p {SHARE}\ncat > {VERSIONS_FILE} <<'EOF'\n{lines}\nEOF\nchmod 0644 {VERSIONS_FILE}",
               title=f"expected library versions → {VERSIONS_FILE}")


LIBRARY_LABELS = library_labels(ALL)


class Dev(Recipe):
    """ocserv-modern development shell: C toolchain, debuggers, ocserv deps, the five libraries (debug)

    Packages (Debian names; see recipes/packages.py for the reasons per package):
      TOOLCHAIN          gcc g++ libc6-dev make cmake meson ninja-build autoconf automake libtool-bin
                         pkgconf git ca-certificates patch file xz-utils procps less
      DEBUG_TOOLS        gdb valgrind linux-perf strace
      OCSERV_BUILD_DEPS  libpam0g-dev libseccomp-dev liblz4-dev libreadline-dev libnl-route-3-dev
                         libprotobuf-c-dev protobuf-c-compiler libtalloc-dev gperf libev-dev
                         libradcli-dev libkrb5-dev liboath-dev libmaxminddb-dev
    plus the libraries' BUILD_DEPS, then wolfSSL, libuv, llhttp, cJSON, mimalloc built with the
    DEBUG profile (-O2 -g, hardening flags, unstripped) into /usr/local, one layer each.
    Runs as ``developer`` (1000:1000), who owns /workspace.

    Size on Debian 13, as ``buildah images`` reports it: 769 MB measured, budget 805 (+4.7 %).
    Was 823 MB (the 128 MB base with docs). By layer (package sizes from dpkg, approximate):
      base (minbase, no docs/man/locales)     83.3 MB
      TOOLCHAIN + BUILD_DEPS                 486.6 MB  gcc+g++ 14 ~190 (cc1, cc1plus, lto1,
                                                       lto-dump, libstdc++ headers, sanitizer
                                                       runtimes), perl ~53 (git, autotools),
                                                       cmake ~53, git ~49, python3 ~50 (meson),
                                                       binutils ~22, libc + kernel headers ~24
      OCSERV_BUILD_DEPS                       19.3 MB
      DEBUG_TOOLS                            155.0 MB  valgrind ~84 + libc6-dbg 17 (valgrind
                                                       depends on it), linux-perf ~22, gdb ~12
      the five DEBUG libraries               24.7 MB  wolfSSL 16.2 (unstripped, -g)
    No docs, man pages or locales in any layer (the base's dpkg filters); CMake's offline help
    is dropped in the layer that installs it.
    """

    name = "ocserv-modern-dev"
    target = "dev"
    base = "full"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 805, "ubi9": 500}
    labels: ClassVar[dict[str, str]] = {**LIBRARY_LABELS, "io.imagefactory.profile": DEBUG.name}
    runtime = Runtime(user="developer", workdir="/workspace", mount_project="/workspace")

    def steps(self):
        yield InstallTrimmed(*unique(TOOLCHAIN, BUILD_DEPS), drop=DOCS_DPKG_MISSES)
        yield Install(*OCSERV_BUILD_DEPS)
        yield Install(*DEBUG_TOOLS)
        yield from build_libraries(self.settings, DEBUG)
        yield AddUser("developer", 1000, 1000, home="/home/developer", owns=("/workspace",))
        yield Config(user="developer", workdir="/workspace", cmd=["bash"])


class Test(Dev):
    """ocserv-modern test runner: runs /workspace's tests with coverage (run-tests), or its self-test

    Adds check, libcmocka-dev, python3-pytest, lcov, gcovr, tcpdump, iperf3 and
    /usr/local/bin/run-tests (the default command): a project mounted at /workspace
    (Makefile, meson.build, CMakeLists.txt or configure) is built with --coverage, its tests
    run, and gcovr writes HTML, Cobertura XML and a text summary to $TEST_RESULTS
    (default /workspace/coverage). With nothing mounted it compiles the five-library
    self-test with coverage, runs it and says that it did.

    Size on Debian 13: 822 MB measured, budget 860 (+4.6 %); was 843 MB. It is ``dev`` (769 MB)
    squashed plus TEST_TOOLS, 53 MB: lcov's perl modules (DateTime's time zone data) ~28 MB,
    gcovr's and pytest's python packages (pygments, lxml, jinja2, setuptools) ~20 MB, check,
    cmocka, tcpdump and iperf3 ~5 MB.
    """

    name = "ocserv-modern-test"
    target = "test"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 860, "ubi9": 500}

    def steps(self):
        yield User("root")  # dev's image runs as developer; installing needs root
        yield Install(*TEST_TOOLS)
        yield Copy("files/quick-validate.c", f"{SHARE}/quick-validate.c", mode="0644")
        yield Copy("files/quick-validate", "/usr/local/bin/quick-validate", mode="0755")
        yield Copy("files/run-tests", "/usr/local/bin/run-tests", mode="0755")
        yield versions_step()
        yield Config(user="developer", workdir="/workspace", cmd=["run-tests"])


class ReleaseLibraries(Recipe):
    """Stage: the five libraries built with the RELEASE profile, one layer each (not shipped)

    The stage holds what only the library builds need (g++ for mimalloc, cmake, autotools);
    ``build`` copies just the resulting /usr/local, so none of that toolchain ships.
    """

    name = "ocserv-modern-release-libs"
    hidden = True
    base = "slim"

    def steps(self):
        yield InstallTrimmed(*BUILD_DEPS, drop=UNUSED_BUILD_FILES)
        yield from build_libraries(self.settings, RELEASE)


class Build(Recipe):
    """ocserv-modern release build environment: C toolchain, packaging tools, the five libraries (release)

    Packages (Debian names): MIN_TOOLCHAIN (gcc libc6-dev make pkgconf), binutils, file, patch,
    xz-utils and the platform's own packaging tools: dpkg-dev on Debian, rpm-build and
    createrepo_c on UBI (rpm and createrepo-c on Debian only with ``--set ocserv.packaging.rpm=1``).
    No debuggers. The five libraries are built with the RELEASE profile (-O3, LTO, hardening,
    stripped) in the :class:`ReleaseLibraries` stage (one layer per library, so the step cache
    works per library) and their /usr/local is copied in. Runs as ``builder`` (1000:1000). Not
    squashed: it is an intermediate (``ci`` builds on it), and with nothing deleted in a later
    layer squashing would save nothing.

    Size on Debian 13 (gcc 14), as ``buildah images`` reports it: 283 MB measured, budget 295
    (+4.2 %). Was 361 MB (the 128 MB base with docs, rpm tooling, gprofng). By layer:
      base (minbase, no docs/man/locales)   83.3 MB  coreutils, perl-base, apt, libc, bash, ...
      packages                             183.4 MB  gcc's cc1 33 + lto1 32 (-flto needs it),
                                                     perl for dpkg-dev 53, libc6-dev + kernel
                                                     headers ~33, binutils ~20, file's magic 10,
                                                     libgcc/crt 8, the rest of /usr/bin 11
      the five libraries (/usr/local)       16.3 MB
    Dropped in the install layer (no build runs them): gcc's lto-dump, the sanitizer runtimes,
    binutils' gprofng. Opting in to rpm tooling adds 28 MB (311 MB measured): a recipe that
    does so declares its own budget (subclass ``Build``).
    """

    name = "ocserv-modern-build"
    target = "build"
    base = "slim"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 295, "ubi9": 200}
    stages: ClassVar[dict] = {"libraries": ReleaseLibraries}
    labels: ClassVar[dict[str, str]] = {**LIBRARY_LABELS, "io.imagefactory.profile": RELEASE.name}
    runtime = Runtime(user="builder", workdir="/workspace", mount_project="/workspace")

    def steps(self):
        yield InstallTrimmed(*unique(MIN_TOOLCHAIN, RELEASE_EXTRAS, packaging_tools(self.settings)),
                             drop=UNUSED_BUILD_FILES + SANITIZER_RUNTIMES + PROFILER_FILES)
        yield CopyFrom("libraries", "/usr/local", "/usr/local")
        yield Run("ldconfig", title="ldconfig: register the libraries in /usr/local/lib")
        yield AddUser("builder", 1000, 1000, home="/home/builder", owns=("/workspace",))
        yield Config(user="builder", workdir="/workspace", cmd=["bash"])


class Ci(Build):
    """ocserv-modern CI runner: quick-validate (all five libraries, versions) and ci-build on PATH

    /usr/local/bin/quick-validate compiles /usr/local/share/ocserv-modern/quick-validate.c
    against wolfSSL, libuv, llhttp, cJSON and mimalloc, runs it (HTTP request → JSON,
    SHA-256 + TLS 1.3 context, a libuv timer, mimalloc allocations) and checks every
    library's version against the pins baked into /usr/local/share/ocserv-modern/versions.
    /usr/local/bin/ci-build builds and tests the project at /workspace (autotools, meson,
    CMake or make) with the release flags and collects artifacts in $CI_ARTIFACTS.

    Size on Debian 13: 282 MB measured, budget 295 (+4.6 %); was 315 MB. It is ``build``
    squashed into one layer plus four scripts and the versions file (a few kB).
    """

    name = "ocserv-modern-ci"
    target = "ci"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 295, "ubi9": 200}

    def steps(self):
        yield User("root")  # build's image runs as builder
        yield Copy("files/quick-validate.c", f"{SHARE}/quick-validate.c", mode="0644")
        yield Copy("files/quick-validate", "/usr/local/bin/quick-validate", mode="0755")
        yield Copy("files/ci-build", "/usr/local/bin/ci-build", mode="0755")
        yield Copy("files/ci-env", "/usr/local/bin/ci-env", mode="0755")
        yield versions_step()
        yield Config(user="builder", workdir="/workspace", cmd=["quick-validate"])


__all__ = ["Build", "Ci", "Dev", "EXPECTED", "InstallTrimmed", "Test", "library_profile", "packaging_tools",
           "unique"]
