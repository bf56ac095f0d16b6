"""Build a pinned C library from source inside an image: one step, one layer, sources never committed.

:class:`BuildLibrary` renders to ONE ``RUN`` that

1. sees the verified archive through a read-only bind mount at ``/run/imagefactory/src`` (the
   content-addressed cache folder holding just that file) and the library's patches at
   ``/run/imagefactory/patches``;
2. extracts to a temporary folder, applies ``patches/<library>/<version>/*.patch`` in name
   order with ``patch -p1``;
3. configures (autotools / CMake / GNU make / a custom script) with the profile's flags, builds with
   ``-j$(nproc)``, installs into a staging folder, strips shared objects and executables in
   release profiles, and copies the staged tree to ``/usr/local``;
4. writes ``/usr/local/share/imagefactory/manifest.d/<library>.json`` and regenerates
   ``/usr/local/share/imagefactory/manifest.json`` (schema 1, read by ``sbom`` and ``verify``),
   runs ``ldconfig`` and removes the sources; with ``keep_tree`` it also keeps the staged tree
   (this library's files and manifest fragment only) in that folder, for an image that copies
   one library out of a stage built on others (recipes/ocserv.py's library stages).

Preparing fetches (cache first, so a warm cache needs no network) and verifies the archive and
checks that the patches apply; rendering is pure. The step's cache key covers the archive's sha256, each patch's bytes and the profile's flags.
Build dependencies are the recipe's job: ``Install(*BUILD_DEPS)`` before the first library.

Cross-compiling (``BuildLibrary(spec, profile, cross="arm64")``) runs the same script on the build
machine's architecture with the target's toolchain (BuildKit's ``--platform=$BUILDPLATFORM``
pattern; emulated compiles are an order of magnitude slower): ``CC``/``CXX``/``AR``... are the
``<triple>-`` tools, autotools gets ``--build``/``--host``, CMake a toolchain file, pkg-config
sees only the target's ``.pc`` files, and the profile's architecture-only flags are the target's
(:meth:`Profile.for_arch`). Programs a build runs for itself (wolfSentry's unit tests, configure
checks) run under qemu-user through the host's binfmt_misc handler, with the cross libc as
``QEMU_LD_PREFIX``. The manifest entry says ``"arch"``. Install ``cross_build_deps(arch)`` too.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from .arches import Arch, get_arch, host_arch
from .buildah import Mount
from .sources import FetchedArchive, SourceError, SourcePin, Sources
from .steps import PrepareContext, RenderContext, Rendered, RunCall, Step, StepError
from .toolchain import BUILD_DIR, Profile

PREFIX = "/usr/local"
SRC_MOUNT = "/run/imagefactory/src"
PATCH_MOUNT = "/run/imagefactory/patches"
MANIFEST_DIR = "/usr/local/share/imagefactory/manifest.d"
MANIFEST = "/usr/local/share/imagefactory/manifest.json"
PATCHES_ROOT = Path(__file__).resolve().parent.parent / "patches"
BUILD_KINDS = ("autotools", "cmake", "make", "custom")

# Debian package names a BuildLibrary step needs in the image (recipes install them).
BUILD_DEPS: tuple[str, ...] = (
    "gcc", "g++", "libc6-dev", "make", "cmake", "pkgconf",
    "autoconf", "automake", "libtool-bin",  # wolfSSL's GitHub archive has no configure: autogen.sh
    "patch", "xz-utils", "gzip", "tar", "file", "binutils",
)


def cross_build_deps(arch: str, build: Arch | None = None) -> tuple[str, ...]:
    """Debian packages that cross-compile for ``arch`` on the build machine (next to BUILD_DEPS).

    The compilers and binutils named after the GNU triple, and the target's C library in
    ``/usr/<triple>`` (which is also what qemu-user loads programs against at build time).
    Debian spells the triple's ``_`` as ``-`` in package names (``gcc-x86-64-linux-gnu``).
    None for the build machine's own architecture (``build``, default this machine's), so
    ``Install(*BUILD_DEPS, *cross_build_deps(arch))`` serves native and cross stages alike.
    """
    target = get_arch(arch)
    if target.name == (build or host_arch()).name:
        return ()
    pkg = target.triple.replace("_", "-")
    return (f"gcc-{pkg}", f"g++-{pkg}", f"binutils-{pkg}", f"libc6-dev-{target.name}-cross")


# llhttp's generated C sources are the same in its release archive and in every vendored copy
# (e.g. httptools' sdist, which has no CMakeLists.txt), so we build them by hand.
LLHTTP_BUILD = r"""
soname="libllhttp.so.${VERSION%%.*}"
for f in api http llhttp; do
  "${CC:-cc}" $CFLAGS -Iinclude -c "src/$f.c" -o "$f.o"
done
"${CC:-cc}" $CFLAGS $LDFLAGS -shared -Wl,-soname,"$soname" -o "libllhttp.so.$VERSION" api.o http.o llhttp.o
"${AR:-ar}" rcs libllhttp.a api.o http.o llhttp.o
install -d "$STAGE$PREFIX/lib/pkgconfig" "$STAGE$PREFIX/include"
install -m 0644 include/llhttp.h "$STAGE$PREFIX/include/llhttp.h"
install -m 0755 "libllhttp.so.$VERSION" "$STAGE$PREFIX/lib/"
install -m 0644 libllhttp.a "$STAGE$PREFIX/lib/"
ln -sf "libllhttp.so.$VERSION" "$STAGE$PREFIX/lib/$soname"
ln -sf "$soname" "$STAGE$PREFIX/lib/libllhttp.so"
cat > "$STAGE$PREFIX/lib/pkgconfig/llhttp.pc" <<EOF
prefix=$PREFIX
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: llhttp
Description: Port of http_parser to llparse
URL: https://github.com/nodejs/llhttp
Version: $VERSION
Libs: -L\${libdir} -lllhttp
Cflags: -I\${includedir}
EOF
"""


@dataclass(frozen=True)
class LibrarySpec:
    """A pinned library plus how to build it.

    kind       ``autotools`` (``./configure``; ``./autogen.sh`` first when there is no configure),
               ``cmake``, ``make`` (the project's own Makefile: ``make -j$JOBS OPTIONS`` then
               ``make OPTIONS install`` with ``PREFIX`` and ``DESTDIR=$STAGE``), or ``custom``
               (``script`` runs in the source tree).
    options    configure / ``-D`` options, or make command-line variables (in which ``$CFLAGS``,
               ``$LDFLAGS``, ``$PREFIX``, ``$STAGE``... are expanded, for Makefiles that ignore
               the environment), recorded in the manifest.
    needs      names of the libraries this one builds against (built before it).
    smoke      a shell command that proves the installed library/tool runs (for image checks).
    extra_cflags / extra_ldflags  appended to the profile for this library only.
    script     the custom build; sees $CFLAGS $CXXFLAGS $LDFLAGS $EXE_LDFLAGS $PREFIX $STAGE
               $VERSION $JOBS and must install into ``$STAGE$PREFIX``; it compiles with
               ``"${CC:-cc}"`` (``$CXX``, ``$AR``... likewise), which cross builds set.
    """

    pin: SourcePin
    kind: str
    options: tuple[str, ...] = ()
    extra_cflags: tuple[str, ...] = ()
    extra_ldflags: tuple[str, ...] = ()
    script: str | None = None
    patch_root: Path | None = None  # default: the repository's patches/
    pkgconfig: tuple[str, ...] = ()  # .pc names the build must install (checked in the step)
    labels_name: str | None = None
    needs: tuple[str, ...] = ()
    smoke: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BUILD_KINDS:
            raise StepError(f"{self.pin.library}: kind must be one of {BUILD_KINDS}, got {self.kind!r}")
        if self.kind == "custom" and not self.script:
            raise StepError(f"{self.pin.library}: a custom build needs a script")
        if self.kind == "make":
            for option in self.options:
                _make_arg(self.pin.library, option)

    @property
    def name(self) -> str:
        return self.pin.library

    @property
    def version(self) -> str:
        return self.pin.version

    def profile_for(self, profile: Profile) -> Profile:
        if not (self.extra_cflags or self.extra_ldflags):
            return profile
        return profile.with_(extra_cflags=self.extra_cflags, extra_cxxflags=self.extra_cflags,
                             extra_ldflags=self.extra_ldflags)

    def patch_dir(self) -> Path:
        return (self.patch_root or PATCHES_ROOT) / self.name / self.version

    def patches(self) -> list[Path]:
        folder = self.patch_dir()
        return sorted(folder.glob("*.patch"), key=lambda p: p.name) if folder.is_dir() else []


@dataclass
class BuildLibrary(Step):
    """Compile, install and record one library (see the module docstring).

    ``cross``: the target architecture (``"arm64"``; OCI, Debian or ``uname -m`` names) when it
    is not the build machine's; None, or the build machine's own architecture, builds natively.
    """

    spec: LibrarySpec
    profile: Profile
    cross: str | None = None
    kind: ClassVar[str] = "library"
    _sources: Sources | None = field(default=None, repr=False, compare=False)
    # filled in by prepare(): the verified archive and each patch with its sha256
    archive: FetchedArchive | None = field(default=None, repr=False)
    patch_digests: tuple[tuple[Path, str], ...] = field(default=(), repr=False)
    # also keep the staged tree in this folder of the image (see keep_tree_script): library stages
    keep_tree: str | None = None

    def __post_init__(self) -> None:
        if self.cross is not None:
            name = get_arch(self.cross).name  # a clear error for an unknown architecture
            self.cross = None if name == host_arch().name else name

    @property
    def target(self) -> Arch | None:
        """The architecture cross-compiled for; None for a native build."""
        return get_arch(self.cross) if self.cross else None

    def library_profile(self, image_arch: str | None = None) -> Profile:
        """The flags this step compiles with: the spec's extras, and the architecture flags of what it
        compiles for (the cross target, else the image's own architecture, e.g. an arm64 image
        compiling natively under qemu)."""
        profile = self.spec.profile_for(self.profile)
        arch = self.cross or image_arch
        return profile.for_arch(arch) if arch else profile

    def prepare(self, ctx: PrepareContext) -> BuildLibrary:
        """Fetch (cache first, so a warm cache needs no network) and verify the archive; check the patches."""
        sources = self._sources or Sources.from_settings(ctx.settings, digest=ctx.file_digest)
        try:
            archive = sources.fetch(self.spec.pin)
        except SourceError as exc:  # reported like a missing Copy() input: names the recipe, no traceback
            raise StepError(f"recipe {ctx.recipe.name!r}: {exc}") from None
        patches = tuple((p, ctx.file_digest(p)) for p in self.spec.patches())
        if patches:
            check_patches_apply(ctx, self.spec, archive, list(patches))
        return replace(self, archive=archive, patch_digests=patches)

    def render(self, ctx: RenderContext) -> Rendered:
        archive, patches = self.archive, self.patch_digests
        if archive is None:
            raise ctx.fail(f"BuildLibrary({self.spec.name}) was rendered before it was prepared")
        profile = self.library_profile(ctx.arch)
        script = build_script(self.spec, archive, [(p.name, sha) for p, sha in patches], profile, self.target)
        if self.keep_tree:
            script += "\n" + keep_tree_script(self.keep_tree)
        mounts = [Mount(target=SRC_MOUNT, source=str(archive.folder), type="bind", readonly=True)]
        if patches:
            mounts.append(Mount(target=PATCH_MOUNT, source=str(self.spec.patch_dir()), type="bind", readonly=True))
        call = RunCall(("/bin/sh", "-ec", script), (("LC_ALL", "C.UTF-8"),), mounts=tuple(mounts))
        inputs = [f"archive {archive.filename} sha256:{archive.sha256}",
                  *(f"patch {p.name} sha256:{sha}" for p, sha in patches)]
        alt = "" if archive.is_primary else " (alternate archive)"
        summary = (f"{self.spec.name} {self.spec.version} ({profile.name}) from {archive.filename}{alt}"
                   + (f" + {len(patches)} patch(es)" if patches else "")
                   + (f", cross-compiled for {self.cross}" if self.cross else ""))
        return Rendered(self.kind, summary, [call], inputs)


def manifest_entry(spec: LibrarySpec, archive: FetchedArchive, patches: list[tuple[str, str]],
                   profile: Profile, arch: str | None = None) -> dict:
    """The manifest fragment, without ``files`` (the build fills that in).

    ``arch`` (cross builds only, so native entries stay as they were): the OCI architecture name
    the files are for; without it they are for the image's own architecture.
    """
    pin = spec.pin
    return {
        "name": pin.library,
        "version": pin.version,
        "license": pin.license,
        "purl": pin.purl,
        "upstream_url": pin.url,
        "homepage": pin.homepage,
        "archive": {"name": archive.filename, "sha256": archive.sha256,
                    "url": pin.url if archive.is_primary else None,
                    "alternate": not archive.is_primary, "tree_root": archive.tree_root,
                    **({"tree_sha256": pin.tree_sha256} if pin.tree_sha256 else {})},
        "patches": [{"name": name, "sha256": sha} for name, sha in patches],
        "profile": profile.name,
        "flags": profile.flags(),
        "options": list(spec.options),
        "build": spec.kind,
        **({"arch": arch} if arch else {}),
    }


def check_patches_apply(ctx: PrepareContext, spec: LibrarySpec, archive: FetchedArchive,
                        patches: list[tuple[Path, str]]) -> None:
    """Apply the patches to a scratch copy of the tree on the host, once per (archive, patches).

    A patch that no longer applies (a rebased upstream, a hand-edited hunk) is reported
    before any container starts, naming the patch file and the failing hunk, instead of
    failing minutes into a build. Success is remembered in the state folder, so a no-op
    rebuild does not extract archives again.
    """
    import hashlib
    import subprocess
    import tarfile
    import tempfile

    memo_key = hashlib.sha256("\n".join([archive.sha256, *(sha for _, sha in patches)]).encode()).hexdigest()
    memo = Path(ctx.settings.state_dir) / "patch-checks" / memo_key
    if memo.is_file():
        return
    with tempfile.TemporaryDirectory(prefix=f"imagefactory-patchcheck-{spec.name}-") as tmp:
        with tarfile.open(archive.path) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+
                tar.extractall(tmp, filter="data")
            else:  # older 3.11: refuse absolute and escaping paths ourselves
                safe = [m for m in tar.getmembers() if not m.name.startswith("/") and ".." not in Path(m.name).parts
                        and (m.isfile() or m.isdir() or m.issym())]
                tar.extractall(tmp, members=safe)
        tree = Path(tmp) / archive.tree_root.strip("/")
        for patch, _sha in patches:
            proc = subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)], cwd=tree,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                output = (proc.stdout + proc.stderr).strip().splitlines()
                failed = [line for line in output if "FAILED" in line or "can't find file" in line
                          or "malformed" in line.lower() or "Reversed" in line or "Only garbage" in line]
                current = next((line for line in output if line.startswith("patching file")), "")
                detail = "; ".join(dict.fromkeys([current, *failed] if failed else output[-3:]))
                raise StepError(f"recipe {getattr(ctx.recipe, 'name', ctx.recipe.__name__)!r}: patch {patch} does not apply to "
                                f"{spec.name} {spec.version} ({archive.filename}): {detail}. "
                                f"Regenerate it against the {archive.tree_root} tree (see patches/README.md)")
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(f"{spec.name} {spec.version} {archive.filename}\n")


def build_script(spec: LibrarySpec, archive: FetchedArchive, patches: list[tuple[str, str]],
                 profile: Profile, cross: Arch | None = None) -> str:
    """The shell script of the RUN: everything the cache key needs, nothing host-specific.

    ``cross``: the target of a cross build (the profile must already be its :meth:`Profile.for_arch`).
    """
    q = shlex.quote
    entry = manifest_entry(spec, archive, patches, profile, cross.name if cross else None)
    head = json.dumps(entry, sort_keys=False)[:-1] + ', "files": ['
    tree = archive.tree_root.strip("/")
    lines = [
        "umask 022",
        f"export PREFIX={PREFIX} VERSION={q(spec.version)}",
        f"export CFLAGS={q(profile.CFLAGS)}",
        f"export CXXFLAGS={q(profile.CXXFLAGS)}",
        f"export LDFLAGS={q(profile.LDFLAGS)}",
        f"export EXE_LDFLAGS={q(' '.join(profile.exe_ldflags))}",
        *(_cross_environment(cross) if cross else []),
        'JOBS=$(nproc); export JOBS',
        f"W={BUILD_DIR}; rm -rf \"$W\"; mkdir -p \"$W\"",  # one fixed path: it ends up in objects
        "trap 'rm -rf \"$W\"' EXIT INT TERM",
        'STAGE="$W/stage"; export STAGE',
        'mkdir -p "$W/src" "$STAGE"',
        f"tar -xf {q(SRC_MOUNT + '/' + archive.filename)} -C \"$W/src\"",
        f"cd \"$W/src\"/{q(tree)}",
    ]
    for name, _sha in patches:
        lines += [f"echo 'imagefactory: applying {name}'",
                  f"patch -p1 --forward --batch -i {q(PATCH_MOUNT + '/' + name)}"]
    lines += _configure_build_install(spec, profile, cross)
    lines += [
        'find "$STAGE" -name "*.la" -delete',
    ]
    if profile.strip:
        lines += [
            "# release: strip shared objects and executables (never static archives)",
            'find "$STAGE" -type f \\( -name "*.so" -o -name "*.so.*" -o -perm -u+x \\) | while read -r f; do',
            '  if [ "$(head -c 4 "$f" | od -An -tx1 | tr -d " \\n")" = 7f454c46 ]; then '
            f'{cross.triple + "-strip" if cross else "strip"} --strip-unneeded "$f"; fi',
            "done",
        ]
    for pc in spec.pkgconfig:
        lines.append(f'test -f "$STAGE{PREFIX}/lib/pkgconfig/{pc}" || '
                     f'{{ echo "imagefactory: {spec.name} did not install {pc}" >&2; exit 1; }}')
    frag = f"{MANIFEST_DIR}/{spec.name}.json"
    lines += [
        "# manifest: the exact installed files, then the merged manifest.json",
        'FILES=$(cd "$STAGE" && find . \\( -type f -o -type l \\) | LC_ALL=C sort | sed "s|^\\./|/|")',
        'case "$FILES" in *\\"*|*\\\\*) echo "imagefactory: unexpected file name" >&2; exit 1;; esac',
        f'mkdir -p "$STAGE"{MANIFEST_DIR}',
        f'{{ printf "%s" {q(head)}; printf "%s\\n" "$FILES" | sed "s/.*/\\"&\\"/" | paste -sd, -; '
        f'printf "]}}\\n"; }} > "$STAGE"{frag}',
        'cp -a "$STAGE"/. /',
        ("ldconfig && rm -f /var/cache/ldconfig/aux-cache  # inode numbers: differ every build" if not cross else
         "# no ldconfig: the files are for another architecture (the image they are copied into runs it)"),
        merge_manifests_script(),
        f"echo 'imagefactory: installed {spec.name} {spec.version} ({profile.name}"
        f"{', ' + cross.name if cross else ''})'",
    ]
    return "\n".join(lines)


def merge_manifests_script() -> str:
    """Shell: regenerate manifest.json from every manifest.d fragment (in name order), atomically.

    Run after each library is installed, and by an image that assembles libraries built elsewhere.
    """
    return (f'cd /; M={MANIFEST}; {{ printf \'{{"schema": 1, "libraries": [\'; sep=""; '
            f'for f in {MANIFEST_DIR}/*.json; do printf "%s" "$sep"; tr -d "\\n" < "$f"; sep=", "; done; '
            'printf "]}\\n"; } > "$M.tmp"; mv "$M.tmp" "$M"')


def keep_tree_script(folder: str) -> str:
    """Shell: keep a copy of the staged tree (this library's files and manifest fragment only) in
    ``folder``, so an image can copy one library out of a stage without the libraries it was built on."""
    q = shlex.quote
    return f'rm -rf {q(folder)}; mkdir -p {q(folder)}; cp -a "$STAGE"/. {q(folder)}/'


def _cross_environment(target: Arch) -> list[str]:
    """Exports that point every build kind at the target's toolchain, libraries and emulator."""
    t = target.triple
    return [
        f"# cross-compiling for {target.name} ({t}) on the build machine",
        f"export CC={t}-gcc CXX={t}-g++ AR={t}-ar RANLIB={t}-ranlib NM={t}-nm STRIP={t}-strip",
        # pkg-config sees the target's .pc files only: earlier libraries of this stage, multiarch -dev packages
        f"export PKG_CONFIG_LIBDIR={PREFIX}/lib/pkgconfig:/usr/lib/{t}/pkgconfig:/usr/share/pkgconfig",
        f"export CPATH={PREFIX}/include  # the native gcc searches it by default, a cross gcc does not",
        # programs the build runs for itself (configure checks, wolfSentry's unit tests) run under
        # qemu-user via the host's binfmt_misc handler; the target's libc is the cross one
        f"export QEMU_LD_PREFIX=/usr/{t}",
    ]


def cmake_toolchain(target: Arch) -> str:
    """A CMake toolchain file for ``target``: Debian's cross compilers, target-only library lookups.

    Programs come from the build machine; libraries, headers and packages are looked up in the
    cross libc's tree and in /usr/local (what earlier cross steps installed) before anything else,
    and CMake's multiarch directory is the target's, so the build machine's libraries never match.
    """
    t = target.triple
    return "\n".join([
        "set(CMAKE_SYSTEM_NAME Linux)",
        f"set(CMAKE_SYSTEM_PROCESSOR {target.machine})",
        f"set(CMAKE_C_COMPILER {t}-gcc)",
        f"set(CMAKE_CXX_COMPILER {t}-g++)",
        f"set(CMAKE_LIBRARY_ARCHITECTURE {t})",
        f"set(CMAKE_FIND_ROOT_PATH /usr/{t} {PREFIX})",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)",
    ])


def _configure_build_install(spec: LibrarySpec, profile: Profile, cross: Arch | None = None) -> list[str]:
    q = shlex.quote
    opts = " ".join(q(o) for o in spec.options)
    if spec.kind == "autotools":
        host = f" --build=\"$(gcc -dumpmachine)\" --host={cross.triple}" if cross else ""
        return [
            "[ -x ./configure ] || ./autogen.sh",
            f"./configure{host} --prefix={PREFIX} --libdir={PREFIX}/lib --enable-shared --enable-static {opts}".rstrip(),
            'make -j"$JOBS"',
            'make install DESTDIR="$STAGE"',
        ]
    if spec.kind == "cmake":
        # Our flags come from CFLAGS/CXXFLAGS/LDFLAGS; the per-build-type flags are emptied so
        # CMake's -O3/-O2 defaults cannot override the profile (debug keeps asserts, release -DNDEBUG).
        bt, bt_flags = ("Release", "-DNDEBUG") if not profile.debug else ("RelWithDebInfo", "")
        up = bt.upper()
        toolchain, use_toolchain = [], ""
        if cross:
            toolchain = [f"cat > \"$W/toolchain.cmake\" <<'EOF'\n{cmake_toolchain(cross)}\nEOF"]
            use_toolchain = ' "-DCMAKE_TOOLCHAIN_FILE=$W/toolchain.cmake"'
        return [
            *toolchain,
            f'cmake -S . -B "$W/build"{use_toolchain} '
            f'-DCMAKE_INSTALL_PREFIX={PREFIX} -DCMAKE_INSTALL_LIBDIR=lib '
            f"-DCMAKE_BUILD_TYPE={bt} -DCMAKE_C_FLAGS_{up}={q(bt_flags)} -DCMAKE_CXX_FLAGS_{up}={q(bt_flags)} "
            f"-DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_TESTING=OFF {opts}".rstrip(),
            'cmake --build "$W/build" -j "$JOBS"',
            'DESTDIR="$STAGE" cmake --install "$W/build"',
        ]
    if spec.kind == "make":
        args = " ".join(_make_arg(spec.name, o) for o in spec.options)
        return [
            f'make -j"$JOBS" PREFIX="$PREFIX" {args}'.rstrip(),
            f'make PREFIX="$PREFIX" DESTDIR="$STAGE" {args} install',
        ]
    return [spec.script.strip()]  # custom


def _make_arg(name: str, option: str) -> str:
    """One make argument in double quotes: ``$VAR`` expands, nothing else does."""
    if "$(" in option or "`" in option or "${" in option:
        raise StepError(f"{name}: make option {option!r}: only plain $NAME references are expanded "
                        "(no $(...), ${...} or backquotes)")
    return '"' + option.replace("\\", "\\\\").replace('"', '\\"') + '"'


def library_labels(libs, prefix: str = "io.imagefactory.lib.") -> dict[str, str]:
    """OCI labels with each library's version, e.g. ``io.imagefactory.lib.wolfssl=5.9.2``."""
    out = {}
    for lib in libs:
        spec = lib.spec if isinstance(lib, BuildLibrary) else lib
        pin = spec.pin if isinstance(spec, LibrarySpec) else spec
        out[f"{prefix}{(getattr(spec, 'labels_name', None) or pin.library).lower()}"] = pin.version
    return out


__all__ = ["BUILD_DEPS", "LLHTTP_BUILD", "MANIFEST", "MANIFEST_DIR", "BuildLibrary", "LibrarySpec",
           "build_script", "cmake_toolchain", "cross_build_deps", "keep_tree_script", "library_labels",
           "manifest_entry", "merge_manifests_script"]
