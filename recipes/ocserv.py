"""The four ocserv-modern images: dev → test, and build → ci.

Every library of recipes/libs.py is built in its own hidden stage (:func:`library_stages`, one
per library and profile: ``ocserv-modern-lib-<library>-<profile>``) on a shared toolchain stage
(:class:`LibraryToolchain`) and on the libraries it ``needs``, nothing else. The intermediate
images ``dev`` (debug) and ``build`` (release) assemble ``/usr/local`` from them with one copy
layer per library in the fixed order of the list (:func:`assemble_libraries`); the leaves
``test`` and ``ci`` are squashed. Independent libraries build in parallel (``--jobs``), and
changing one library rebuilds its stage, the stages that need it and the copy layers from it on.

Per-library extra compiler flags come from settings values, so a flag can be tried on one
library without editing a recipe (only that library's stage and the copies after it rebuild)::

    IMAGEFACTORY_VALUES="ocserv.cflags.cjson=-DSOME_FLAG=1" imagefactory build ci

(``ocserv.cflags.<library>`` and ``ocserv.ldflags.<library>``; several flags separated by ``;``.)

Size trade-offs for ``build`` (see :class:`Build`): it keeps a working C build environment
(gcc, make, pkg-config, binutils, LTO) and dpkg-dev; g++, cmake and autotools are needed only to
build the libraries, so they stay in the library stages. Files no build runs
are dropped in the same layer that installs them (gcc's ``lto-dump``, CMake's offline help).
"""

from __future__ import annotations

from typing import ClassVar

from imagefactory.libraries import (BUILD_DEPS, PREFIX, BuildLibrary, LibrarySpec, cross_build_deps, library_labels,
                                    merge_manifests_script)
from imagefactory.recipe import Recipe, RecipeError, Runtime
from imagefactory.steps import AddUser, Config, Copy, CopyFrom, Install, Rendered, Run, RunCall, User
from imagefactory.toolchain import DEBUG, RELEASE, Profile

from .libs import ALL, in_build_order
from .packages import (DEBUG_TOOLS, MIN_TOOLCHAIN, NATIVE_PACKAGING, OCSERV_BUILD_DEPS, RPM_PACKAGING, TEST_TOOLS,
                       TOOLCHAIN)

SHARE = "/usr/local/share/ocserv-modern"
VERSIONS_FILE = f"{SHARE}/versions"  # name=version per library: quick-validate's EXPECT_<NAME>
LIBRARIES_FILE = f"{SHARE}/libraries"  # name, version, pkg-config modules, smoke command (tab-separated)
CHECKS_DIR = f"{SHARE}/checks"  # recipes/files/checks: check.h + <library>.c / <library>.sh
# In each library stage: the files that library installed, rooted at / (the images copy these).
STAGED_TREES = "/var/lib/ocserv-modern/staged"
LDCONFIG = "ldconfig && rm -f /var/cache/ldconfig/aux-cache"  # its inode cache differs every build

# Files a build never runs: dropped in the same layer that installs them, so they cost nothing.
# lto-dump is gcc's LTO bytecode inspector (~32 MB; -flto itself needs lto1, which stays);
# CMake's Help/ is the offline text of `cmake --help-*`.
UNUSED_BUILD_FILES = ("/usr/bin/*lto-dump*", "/usr/share/cmake-*/Help")
# The release build image does not build with sanitizers: their runtimes (~27 MB) go too.
SANITIZER_RUNTIMES = ("/usr/lib/*-linux-gnu/lib*san.so*", "/usr/lib/gcc/*/*/lib*san*.a",
                      "/usr/lib/gcc/*/*/lib*san*.so", "/usr/lib/gcc/*/*/lib*san_preinit.o")
# Documentation outside the paths dpkg is told to skip: CMake's offline help (~5 MB, the text of
# `cmake --help-*`). Dropped in the layer that installs it, so no layer carries it.
DOCS_DPKG_MISSES = ("/usr/share/cmake-*/Help",)
# binutils' gprofng profiler (~5 MB): a build image profiles nothing (dev keeps it).
PROFILER_FILES = ("/usr/bin/gprofng*", "/usr/lib/*-linux-gnu/libgprofng.so*",
                  "/usr/lib/*-linux-gnu/gprofng", "/etc/gprofng.rc")
# What a release build/CI image keeps besides MIN_TOOLCHAIN and the packaging tools: binutils
# (ar, ld, strip for LTO archives), file, xz/patch for source packages.
RELEASE_EXTRAS = ("binutils", "file", "patch", "xz-utils")
# rpm tooling on Debian is opt-in (recipes/packages.py, NATIVE_PACKAGING): a settings value turns it on.
RPM_SETTING = "ocserv.packaging.rpm"
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def protocol_names(settings) -> tuple[str, ...]:
    """The package with /etc/protocols and /etc/services, where the base lacks it.

    wolfSentry resolves protocol and port names (its JSON rules say "tcp") with
    getprotobyname/getservbyname: its unit tests, run by its ``make install``, need them at
    build time, and programs loading such rules at run time. Debian's slim base (debootstrap
    minbase) has no netbase (~50 kB); the full base has it, and UBI's ``setup`` package, in
    every UBI image, carries the files.
    """
    return ("netbase",) if settings.platform == "debian" else ()


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


class LibraryToolchain(Recipe):
    """Stage: the slim base plus what the library builds need (g++, cmake, autotools); not shipped

    Every library stage builds on it (both profiles), so the libraries share this one layer and
    none of that toolchain reaches an image that copies only the libraries out.
    """

    name = "ocserv-modern-lib-toolchain"
    hidden = True
    base = "slim"
    build_platform = True  # an arm64 image's libraries are cross-compiled here, on the build machine

    def steps(self):
        yield InstallTrimmed(*BUILD_DEPS, *protocol_names(self.settings), drop=UNUSED_BUILD_FILES)
        if self.cross:  # the native layer above is shared with native builds; the cross toolchain on top
            yield Install(*cross_build_deps(self.target.name))


def staged_tree(spec: LibrarySpec) -> str:
    """Where a library stage keeps the files that library installed (its own only, rooted at /)."""
    return f"{STAGED_TREES}/{spec.name}"


def library_stages(profile: Profile, libs=ALL, toolchain: type[Recipe] | None = None,
                   prefix: str = "ocserv-modern-lib") -> dict[str, type[Recipe]]:
    """One hidden stage recipe per library of ``libs`` built with ``profile``, by library name:
    ``<prefix>-<library>-<profile>`` (``toolchain``: what they build on, :class:`LibraryToolchain`).

    A library's stage builds on the toolchain stage and on the libraries it ``needs`` only
    (recipes/libs.py), so changing one library's patches or flags rebuilds that stage and what needs
    it, nothing else, and independent libraries build in parallel (``--jobs``). A stage with needs
    builds FROM the stage of the need that already holds most of them (wolfCLU on wolfSSL, which is
    on wolfSentry): no copy, and ldconfig has run there; needs not in it are copied in.
    """
    by_name = {spec.name: spec for spec in libs}
    stages: dict[str, type[Recipe]] = {}
    holds: dict[str, set[str]] = {}  # stage → the libraries in its /usr/local

    def closure(spec: LibrarySpec) -> set[str]:
        out: set[str] = set()
        for name in spec.needs:
            out |= {name} | closure(by_name[name])
        return out

    for spec in in_build_order(libs):
        wanted = closure(spec)
        parent_name = max(sorted(wanted), key=lambda n: len(holds[n]), default=None)
        parent = stages[parent_name] if parent_name else (toolchain or LibraryToolchain)
        have = holds[parent_name] if parent_name else set()
        copies = tuple(by_name[n] for n in by_name if n in wanted - have)  # in the order of `libs`
        stages[spec.name] = _library_stage(f"{prefix}-{spec.name}-{profile.name}", spec, profile, parent, copies,
                                           {dep.name: stages[dep.name] for dep in copies})
        holds[spec.name] = wanted | {spec.name}
    return {spec.name: stages[spec.name] for spec in libs}


def _library_stage(name: str, spec: LibrarySpec, profile: Profile, parent: type[Recipe],
                   copies: tuple[LibrarySpec, ...], copied: dict[str, type[Recipe]]) -> type[Recipe]:
    def steps(self):
        for dep in copies:
            yield CopyFrom(dep.name, staged_tree(dep) + PREFIX, PREFIX)
        if copies:  # configure runs programs linked against them: the loader must find them
            yield Run(LDCONFIG, title="ldconfig: register the libraries this one builds against")
        yield BuildLibrary(spec, library_profile(self.settings, spec, profile), keep_tree=staged_tree(spec),
                           cross=self.target.name if self.cross else None)

    doc = (f"Stage: {spec.name} {spec.version} built with the {profile.name} profile (not shipped)\n\n"
           f"Builds on {parent.name}; keeps what it installed in {staged_tree(spec)} for the images "
           "that assemble the libraries (see library_stages).")
    return type(f"LibraryStage_{spec.name}_{profile.name}", (parent,), {
        "__doc__": doc, "__module__": __name__, "__qualname__": f"library_stages.{name}",
        "name": name, "hidden": True, "stages": copied, "steps": steps})


def assemble_libraries(libs=ALL):
    """The libraries in an image: one copy layer per library, in the fixed order of ``libs``, then
    one step that merges their manifests and registers them with the loader.

    Each copy holds that library's own files (never the libraries it was built on again), and the
    order does not depend on which stage finished first, so the image, its manifest and its SBOM
    are the same however the stages were scheduled. Changing one library re-copies it and the
    libraries after it (small layers); the others stay cached.
    """
    for spec in libs:
        yield CopyFrom(spec.name, staged_tree(spec) + PREFIX, PREFIX)
    yield Run(f"{merge_manifests_script()}\n{LDCONFIG}",
              title=f"manifest.json from manifest.d, ldconfig: register the libraries in {PREFIX}/lib")


def library_table(libs=ALL) -> str:
    """The library table: ``name<TAB>version<TAB>modules<TAB>smoke``, ``-`` for none."""
    rows = ["# name\tversion\tpkg-config modules\tsmoke command (written from recipes/libs.py)"]
    for spec in libs:
        modules = " ".join(pc.removesuffix(".pc") for pc in spec.pkgconfig) or "-"
        smoke = spec.smoke or "-"
        if "\t" in smoke or "\n" in smoke:
            raise ValueError(f"recipes/libs.py: {spec.name}'s smoke command must be one line without tabs")
        rows.append(f"{spec.name}\t{spec.version}\t{modules}\t{smoke}")
    return "\n".join(rows) + "\n"


def library_table_step(libs=ALL) -> Run:
    """Bake versions and the library table into the image (the key changes with any pin or spec)."""
    versions = "".join(f"{spec.name}={spec.version}\n" for spec in libs)
    script = (f"mkdir -p {SHARE}\n"
              f"cat > {VERSIONS_FILE} <<'EOF'\n{versions}EOF\n"
              f"cat > {LIBRARIES_FILE} <<'EOF'\n{library_table(libs)}EOF\n"
              f"chmod 0644 {VERSIONS_FILE} {LIBRARIES_FILE}")
    return Run(script, title=f"library table → {LIBRARIES_FILE}, {VERSIONS_FILE}")


def quick_validate_steps(libs=ALL, files: str = "files", checks: str | None = None):
    """quick-validate, the per-library check programs and the library table.

    ``files``/``checks``: where the script and the check programs are (relative to the recipe's
    folder, or absolute: a recipe elsewhere can reuse them with its own checks).
    """
    yield Copy(checks or f"{files}/checks", CHECKS_DIR)
    yield Copy(f"{files}/quick-validate", "/usr/local/bin/quick-validate", mode="0755")
    yield library_table_step(libs)


LIBRARY_LABELS = library_labels(ALL)


class Dev(Recipe):
    """ocserv-modern development shell: C toolchain, debuggers, ocserv deps, the libraries (debug)

    Packages (Debian names; see recipes/packages.py for the reasons per package):
      TOOLCHAIN          gcc g++ libc6-dev make cmake meson ninja-build autoconf automake libtool-bin
                         pkgconf git ca-certificates patch file xz-utils procps less
      DEBUG_TOOLS        gdb valgrind linux-perf strace
      OCSERV_BUILD_DEPS  libpam0g-dev libseccomp-dev liblz4-dev libreadline-dev libnl-route-3-dev
                         libprotobuf-c-dev protobuf-c-compiler libtalloc-dev gperf libev-dev
                         libradcli-dev libkrb5-dev liboath-dev libmaxminddb-dev
    plus the libraries' BUILD_DEPS, then every library of recipes/libs.py (wolfSentry, wolfSSL,
    wolfCLU, libuv, llhttp, cJSON, mimalloc) built with the DEBUG profile (-O2 -g, hardening
    flags, unstripped) in its own stage (``ocserv-modern-lib-<library>-debug``, built while
    these packages install) and copied into /usr/local, one layer each in that order, then
    one layer that merges their manifests and runs ldconfig.
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
      the seven DEBUG libraries (7 copies)   ~41 MB  wolfSSL 26.9 (unstripped, -g; its wolfCLU and
                                                       wolfSentry options add ~11), wolfSentry 3.2,
                                                       wolfCLU 1.6 (five libraries: 24.7 MB)
    No docs, man pages or locales in any layer (the base's dpkg filters); CMake's offline help
    is dropped in the layer that installs it.
    """

    name = "ocserv-modern-dev"
    target = "dev"
    base = "full"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 805, "ubi9": 500}
    labels: ClassVar[dict[str, str]] = {**LIBRARY_LABELS, "io.imagefactory.profile": DEBUG.name}
    runtime = Runtime(user="developer", workdir="/workspace", mount_project="/workspace")
    stages: ClassVar[dict] = library_stages(DEBUG)

    def steps(self):
        yield InstallTrimmed(*unique(TOOLCHAIN, BUILD_DEPS), drop=DOCS_DPKG_MISSES)
        yield Install(*OCSERV_BUILD_DEPS)
        yield Install(*DEBUG_TOOLS)
        yield from assemble_libraries()
        yield AddUser("developer", 1000, 1000, home="/home/developer", owns=("/workspace",))
        yield Config(user="developer", workdir="/workspace", cmd=["bash"])


class Test(Dev):
    """ocserv-modern test runner: runs /workspace's tests with coverage (run-tests), or its self-test

    Adds check, libcmocka-dev, python3-pytest, lcov, gcovr, tcpdump, iperf3 and
    /usr/local/bin/run-tests (the default command): a project mounted at /workspace
    (Makefile, meson.build, CMakeLists.txt or configure) is built with --coverage, its tests
    run, and gcovr writes HTML, Cobertura XML and a text summary to $TEST_RESULTS
    (default /workspace/coverage). With nothing mounted it runs quick-validate's check
    programs (every library's) compiled with coverage, and says that it did.

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
        yield from quick_validate_steps()
        yield Copy("files/run-tests", "/usr/local/bin/run-tests", mode="0755")
        yield Config(user="developer", workdir="/workspace", cmd=["run-tests"])


class Build(Recipe):
    """ocserv-modern release build environment: C toolchain, packaging tools, the libraries (release)

    Packages (Debian names): MIN_TOOLCHAIN (gcc libc6-dev make pkgconf), binutils, file, patch,
    xz-utils and the platform's own packaging tools: dpkg-dev on Debian, rpm-build and
    createrepo_c on UBI (rpm and createrepo-c on Debian only with ``--set ocserv.packaging.rpm=1``).
    netbase (Debian; see protocol_names). No debuggers. The libraries are built with the RELEASE
    profile (-O3, LTO, hardening, stripped), each in its own stage
    (``ocserv-modern-lib-<library>-release``, see :func:`library_stages`), and copied in one
    layer per library in the order of recipes/libs.py, so the step cache works per library and
    the package install overlaps the library builds. Runs as ``builder`` (1000:1000). Not
    squashed: it is an intermediate (``ci`` builds on it), and with nothing deleted in a later
    layer squashing would save nothing.

    Size on Debian 13 (gcc 14), as ``buildah images`` reports it: 283 MB measured, budget 295
    (+4.2 %). Was 361 MB (the 128 MB base with docs, rpm tooling, gprofng). By layer:
      base (minbase, no docs/man/locales)   83.3 MB  coreutils, perl-base, apt, libc, bash, ...
      packages                             183.4 MB  gcc's cc1 33 + lto1 32 (-flto needs it),
                                                     perl for dpkg-dev 53, libc6-dev + kernel
                                                     headers ~33, binutils ~20, file's magic 10,
                                                     libgcc/crt 8, the rest of /usr/bin 11
      the seven libraries (7 copies)       ~26 MB  wolfSSL 18.5 (its wolfCLU/wolfSentry
                                                     options add 7.5), wolfSentry 2.2,
                                                     wolfCLU 0.4 (five libraries: 16.3 MB)
    Dropped in the install layer (no build runs them): gcc's lto-dump, the sanitizer runtimes,
    binutils' gprofng. Opting in to rpm tooling adds 28 MB (311 MB measured): a recipe that
    does so declares its own budget (subclass ``Build``).

    On arm64 (``--arch arm64``; libraries cross-compiled, docs/multiarch.md): 309 MB measured, budget
    325 (+5.2 %): the same packages, but the arm64 base is 104 MB (aarch64 code and Debian's arm64
    builds of the same libraries are larger) and so are gcc's cc1/lto1.
    """

    name = "ocserv-modern-build"
    target = "build"
    base = "slim"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 295, "debian/arm64": 325, "ubi9": 200}
    stages: ClassVar[dict] = library_stages(RELEASE)
    labels: ClassVar[dict[str, str]] = {**LIBRARY_LABELS, "io.imagefactory.profile": RELEASE.name}
    runtime = Runtime(user="builder", workdir="/workspace", mount_project="/workspace")

    def steps(self):
        yield InstallTrimmed(*unique(MIN_TOOLCHAIN, RELEASE_EXTRAS, protocol_names(self.settings),
                                     packaging_tools(self.settings)),
                             drop=UNUSED_BUILD_FILES + SANITIZER_RUNTIMES + PROFILER_FILES)
        yield from assemble_libraries()
        yield AddUser("builder", 1000, 1000, home="/home/builder", owns=("/workspace",))
        yield Config(user="builder", workdir="/workspace", cmd=["bash"])


class Ci(Build):
    """ocserv-modern CI runner: quick-validate (every library, versions), ci-build and ci-env on PATH

    /usr/local/bin/quick-validate reads the library table baked from recipes/libs.py
    (/usr/local/share/ocserv-modern/libraries), checks each library's pkg-config modules and
    smoke command, then compiles and runs its check program from .../checks (wolfSentry
    blocking one address and allowing another, SHA-256 + TLS 1.3 + wolfSentry hooks in wolfSSL,
    wolfCLU's hash against sha256sum, a libuv timer, an HTTP request → JSON, cJSON on mimalloc)
    and checks every library's version against the pins in .../versions.
    /usr/local/bin/ci-build builds and tests the project at /workspace (autotools, meson,
    CMake or make) with the release flags and collects artifacts in $CI_ARTIFACTS.

    Size on Debian 13: 282 MB measured, budget 295 (+4.6 %); was 315 MB. It is ``build``
    squashed into one layer plus four scripts and the versions file (a few kB).
    """

    name = "ocserv-modern-ci"
    target = "ci"
    size_budget_mb: ClassVar[dict[str, float]] = {"debian": 295, "debian/arm64": 325, "ubi9": 200}

    def steps(self):
        yield User("root")  # build's image runs as builder
        yield from quick_validate_steps()
        yield Copy("files/ci-build", "/usr/local/bin/ci-build", mode="0755")
        yield Copy("files/ci-env", "/usr/local/bin/ci-env", mode="0755")
        yield Config(user="builder", workdir="/workspace", cmd=["quick-validate"])


__all__ = ["Build", "Ci", "Dev", "InstallTrimmed", "LibraryToolchain", "Test", "assemble_libraries", "library_profile",
           "library_stages", "library_table", "staged_tree",
           "packaging_tools", "quick_validate_steps", "unique"]
