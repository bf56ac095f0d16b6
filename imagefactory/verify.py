"""Prove that every ELF binary installed under a prefix of an image rootfs is hardened.

The image is inspected as files on disk (a mounted rootfs), read with pyelftools so the
result does not depend on the host's binutils. Every path lookup (symlinks, RPATH,
DT_NEEDED, ld.so.conf) is anchored at the image root: a library that only the host has
must never make an image look complete.

Checks follow each file's own ``e_machine``, so one tree (or a cross-built stage) of another
architecture is judged by that architecture's rules: x86-64 files carry the CET check (IBT and
SHSTK, ``-fcf-protection``), aarch64 files the branch-protection check (BTI and PAC,
``-mbranch-protection=standard``); RELRO, BIND_NOW, PIE, NX stack, fortify, stack protector,
RPATH and the needed libraries apply to every architecture.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection
from rich.console import Console
from rich.table import Table
from rich.text import Text

MANIFEST = "usr/local/share/imagefactory/manifest.json"
PROFILES = ("debug", "release")

# Column order of the report; a file only carries the checks that apply to its kind.
CHECKS = ("relro", "stack-protector", "fortify", "pie", "nx-stack", "cet", "bti-pac", "rpath", "debug-info",
          "needed")

_DF_BIND_NOW = 0x8
_DF_1_NOW = 0x1
_DF_1_PIE = 0x08000000
_PF_X = 0x1
_ET_EXEC = 2
_ET_DYN = 3
_X86_IBT = 0x1
_X86_SHSTK = 0x2
_AARCH64_BTI = 0x1  # GNU_PROPERTY_AARCH64_FEATURE_1_BTI
_AARCH64_PAC = 0x2  # GNU_PROPERTY_AARCH64_FEATURE_1_PAC
_MAX_SYMLINKS = 40

# libc functions that glibc replaces with a __*_chk variant under _FORTIFY_SOURCE.
FORTIFIABLE = frozenset(
    """
    memcpy mempcpy memmove memset explicit_bzero strcpy stpcpy strncpy stpncpy strcat strncat
    sprintf snprintf vsprintf vsnprintf printf vprintf fprintf vfprintf dprintf vdprintf
    asprintf vasprintf syslog vsyslog obstack_printf obstack_vprintf read pread pread64 readlink
    readlinkat getcwd getwd realpath fgets fgets_unlocked fread fread_unlocked gets recv
    recvfrom poll ppoll confstr getgroups gethostname getdomainname getlogin_r ttyname_r
    ptsname_r wctomb mbstowcs wcstombs mbsrtowcs wcsrtombs mbsnrtowcs wcsnrtombs wcrtomb wcscpy
    wcpcpy wcsncpy wcpncpy wcscat wcsncat wmemcpy wmempcpy wmemmove wmemset swprintf vswprintf
    wprintf vwprintf fwprintf vfwprintf fgetws fgetws_unlocked longjmp
    """.split()  # noqa: SIM905 - a word list reads better than 80 quoted strings
)

_MULTIARCH = {
    "EM_X86_64": "x86_64-linux-gnu",
    "EM_AARCH64": "aarch64-linux-gnu",
    "EM_386": "i386-linux-gnu",
    "EM_ARM": "arm-linux-gnueabihf",
    "EM_PPC64": "powerpc64le-linux-gnu",
    "EM_S390": "s390x-linux-gnu",
    "EM_RISCV": "riscv64-linux-gnu",
}


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    INFO = "info"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": str(self.status), "detail": self.detail}


@dataclass
class FileResult:
    path: str  # relative to the image root, e.g. "usr/local/bin/app"
    kind: str  # "exe", "shared-lib" or "invalid"
    profile: str | None
    checks: dict[str, CheckResult] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "profile": self.profile,
            "checks": {
                name: {"status": str(c.status), "detail": c.detail} for name, c in self.checks.items()
            },
        }


@dataclass
class VerifyReport:
    prefix: str
    files: list[FileResult] = field(default_factory=list)
    # Whole-image checks such as check_size(); callers append to this list.
    image_checks: list[CheckResult] = field(default_factory=list)

    def _with_status(self, status: Status) -> list[tuple[str, str, str]]:
        found = [
            (f.path, c.name, c.detail) for f in self.files for c in f.checks.values() if c.status == status
        ]
        return found + [("(image)", c.name, c.detail) for c in self.image_checks if c.status == status]

    @property
    def failures(self) -> list[tuple[str, str, str]]:
        """(file, check, detail) for every failed check."""
        return self._with_status(Status.FAIL)

    @property
    def warnings(self) -> list[tuple[str, str, str]]:
        return self._with_status(Status.WARN)

    @property
    def ok(self) -> bool:
        return not self.failures

    def file(self, path: str) -> FileResult:
        """The result for one file, by path relative to the root (a leading "/" is tolerated)."""
        wanted = path.lstrip("/")
        for result in self.files:
            if result.path == wanted:
                return result
        raise KeyError(path)

    def to_dict(self) -> dict:
        return {
            "prefix": self.prefix,
            "ok": self.ok,
            "files": [f.to_dict() for f in self.files],
            "image_checks": [c.to_dict() for c in self.image_checks],
            "failures": [{"file": f, "check": c, "detail": d} for f, c, d in self.failures],
            "warnings": [{"file": f, "check": c, "detail": d} for f, c, d in self.warnings],
        }


# --- paths inside the image -------------------------------------------------------------


def resolve_in_root(root: Path, path: str) -> Path | None:
    """Resolve an image path the way a process inside the image would.

    Absolute symlink targets restart at `root`, never at the host's "/". Returns the host
    path (which may not exist) or None when symlinks loop.
    """
    pending = [p for p in reversed(path.split("/")) if p]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if not candidate.is_symlink():
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            return None
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(p for p in reversed(target.split("/")) if p)
    return root.joinpath(*resolved)


def _image_path(root: Path, host: Path) -> str:
    return "/" + host.relative_to(root).as_posix()


def _is_elf(host: Path) -> bool:
    try:
        with host.open("rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _is_linked_elf(host: Path) -> bool:
    """ELF that is not a relocatable object or core dump; a truncated header still counts so it gets reported."""
    try:
        with host.open("rb") as fh:
            header = fh.read(18)
    except OSError:
        return False
    if header[:4] != b"\x7fELF":
        return False
    if len(header) < 18:
        return True
    e_type = int.from_bytes(header[16:18], "big" if header[5] == 2 else "little")
    return e_type in (_ET_EXEC, _ET_DYN)


def _elf_files(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(image path, host path) of each distinct ELF file under prefix; symlinks count as their target."""
    base = resolve_in_root(root, prefix)
    if base is None or not base.is_dir():
        return []
    found: dict[tuple[int, int], tuple[str, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            host = resolve_in_root(root, _image_path(root, Path(dirpath, name)))
            if host is None or not host.is_file() or not _is_linked_elf(host):
                continue
            st = host.stat()
            found.setdefault((st.st_dev, st.st_ino), (_image_path(root, host), host))
    return sorted(found.values())


# --- reading the ELF facts once ---------------------------------------------------------


@dataclass
class ElfFacts:
    """What the checks need from one ELF file, read once while the file is open."""

    path: str  # absolute image path
    etype: str
    machine: str
    elfclass: int
    segments: dict[str, int]  # p_type -> p_flags
    interp: str | None
    needed: list[str]
    rpath: list[str]
    runpath: list[str]
    bind_now: bool
    flags_1: int
    sections: set[str]
    symbols: set[str]  # every name in .dynsym and .symtab
    imports: set[str]  # undefined names only
    x86_features: int | None  # GNU_PROPERTY_X86_FEATURE_1_AND, None when absent
    aarch64_features: int | None = None  # GNU_PROPERTY_AARCH64_FEATURE_1_AND, None when absent

    @property
    def kind(self) -> str:
        if self.etype == "ET_EXEC" or self.flags_1 & _DF_1_PIE:
            return "exe"
        looks_like_lib = re.search(r"\.so(\.|$)", posixpath.basename(self.path))
        return "exe" if self.interp and not looks_like_lib else "shared-lib"


def read_elf(host: Path, image_path: str) -> ElfFacts | None:
    """Facts about an executable or shared object; None for relocatable objects and core files."""
    with host.open("rb") as fh:
        elf = ELFFile(fh)
        if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
            return None
        segments: dict[str, int] = {}
        interp = None
        dyn: dict[str, list] = {}
        for seg in elf.iter_segments():
            segments.setdefault(seg["p_type"], seg["p_flags"])
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
            elif seg["p_type"] == "PT_DYNAMIC":
                dyn = _dynamic_tags(seg)
        symbols, imports = _symbols(elf)
        flags = sum(dyn.get("DT_FLAGS", []))
        flags_1 = sum(dyn.get("DT_FLAGS_1", []))
        return ElfFacts(
            path=image_path,
            etype=elf["e_type"],
            machine=elf["e_machine"],
            elfclass=elf.elfclass,
            segments=segments,
            interp=interp,
            needed=dyn.get("DT_NEEDED", []),
            rpath=[p for v in dyn.get("DT_RPATH", []) for p in v.split(":")],
            runpath=[p for v in dyn.get("DT_RUNPATH", []) for p in v.split(":")],
            bind_now="DT_BIND_NOW" in dyn or bool(flags & _DF_BIND_NOW) or bool(flags_1 & _DF_1_NOW),
            flags_1=flags_1,
            sections={s.name for s in elf.iter_sections()},
            symbols=symbols,
            imports=imports,
            x86_features=_gnu_property(elf, "GNU_PROPERTY_X86_FEATURE_1_AND"),
            aarch64_features=_gnu_property(elf, "GNU_PROPERTY_AARCH64_FEATURE_1_AND"),
        )


def _dynamic_tags(segment) -> dict[str, list]:
    values: dict[str, list] = {}
    for tag in segment.iter_tags():
        name = tag.entry.d_tag
        value = {"DT_NEEDED": "needed", "DT_RPATH": "rpath", "DT_RUNPATH": "runpath"}.get(name)
        values.setdefault(name, []).append(getattr(tag, value) if value else tag.entry.d_val)
    return values


def _symbols(elf: ELFFile) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    undefined: set[str] = set()
    for section in elf.iter_sections():
        if not isinstance(section, SymbolTableSection):
            continue
        for sym in section.iter_symbols():
            if not sym.name:
                continue
            names.add(sym.name)
            if sym["st_shndx"] == "SHN_UNDEF":
                undefined.add(sym.name)
    return names, undefined


def _gnu_property(elf: ELFFile, pr_type: str) -> int | None:
    """The bitmap of one GNU property note (feature markings the linker ANDs over all inputs)."""
    for section in elf.iter_sections():
        if not isinstance(section, NoteSection):
            continue
        for note in section.iter_notes():
            if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0":
                continue
            for prop in note["n_desc"]:
                if prop["pr_type"] == pr_type:
                    return prop["pr_data"]
    return None


# --- the checks: each takes ElfFacts and returns a CheckResult --------------------------


def check_relro(elf: ElfFacts) -> CheckResult:
    """Full RELRO: the GOT is read-only after relocation, which needs BIND_NOW too."""
    if "PT_GNU_RELRO" not in elf.segments:
        return CheckResult("relro", Status.FAIL, "no PT_GNU_RELRO segment (linked without -z relro)")
    if not elf.bind_now:
        return CheckResult("relro", Status.FAIL, "partial RELRO: no BIND_NOW (linked without -z now)")
    return CheckResult("relro", Status.PASS, "full RELRO")


def check_stack_protector(elf: ElfFacts, kind: str) -> CheckResult:
    """A canary shows up as a reference to __stack_chk_fail; a library may simply have no function needing one."""
    if elf.symbols & {"__stack_chk_fail", "__stack_chk_guard", "__stack_chk_fail_local"}:
        return CheckResult("stack-protector", Status.PASS, "canary present")
    if kind == "exe":
        return CheckResult("stack-protector", Status.FAIL, "no __stack_chk_fail reference")
    return CheckResult("stack-protector", Status.WARN, "no __stack_chk_fail (no canary-needing functions?)")


def check_fortify(elf: ElfFacts) -> CheckResult:
    """_FORTIFY_SOURCE leaves __*_chk imports; fortifiable imports with none of them mean it was off."""
    checked = sorted(s for s in elf.symbols if s.startswith("__") and s.endswith("_chk"))
    fortifiable = sorted(elf.imports & FORTIFIABLE)
    if checked:
        return CheckResult("fortify", Status.PASS, f"{len(checked)} fortified: {', '.join(checked[:4])}")
    if not fortifiable:
        return CheckResult("fortify", Status.PASS, "no fortifiable imports")
    return CheckResult("fortify", Status.FAIL, f"unfortified imports: {', '.join(fortifiable[:6])}")


def check_pie(elf: ElfFacts) -> CheckResult:
    """Executables must be position independent so ASLR covers them."""
    if elf.etype == "ET_EXEC":
        return CheckResult("pie", Status.FAIL, "ET_EXEC: not a position-independent executable")
    return CheckResult("pie", Status.PASS, "PIE")


def check_nx_stack(elf: ElfFacts) -> CheckResult:
    """Without PT_GNU_STACK the kernel assumes an executable stack."""
    flags = elf.segments.get("PT_GNU_STACK")
    if flags is None:
        return CheckResult("nx-stack", Status.FAIL, "no PT_GNU_STACK (stack executable by default)")
    if flags & _PF_X:
        return CheckResult("nx-stack", Status.FAIL, "PT_GNU_STACK is executable (linked with -z execstack)")
    return CheckResult("nx-stack", Status.PASS, "non-executable stack")


def _marking(check: str, features: int | None, bits: tuple[tuple[int, str], tuple[int, str]],
             unmarked: str) -> CheckResult:
    """PASS with both feature bits marked, WARN with one, INFO with none (report-only)."""
    marked = [n for bit, n in bits if (features or 0) & bit]
    if len(marked) == 2:
        return CheckResult(check, Status.PASS, f"{marked[0]} and {marked[1]} marked")
    if marked:
        return CheckResult(check, Status.WARN, f"only {marked[0]} marked")
    return CheckResult(check, Status.INFO, unmarked)


def check_cet(elf: ElfFacts) -> CheckResult:
    """Report-only: the linker drops the CET marking when crt files or libc lack it (Debian 13 does)."""
    if elf.machine not in ("EM_X86_64", "EM_386"):
        return CheckResult("cet", Status.INFO, f"not applicable to {elf.machine}")
    return _marking("cet", elf.x86_features, ((_X86_IBT, "IBT"), (_X86_SHSTK, "SHSTK")),
                    "no IBT/SHSTK marking (toolchain crt/libc lack it; report only)")


def check_bti_pac(elf: ElfFacts) -> CheckResult:
    """aarch64's CET: BTI landing pads and PAC return-address signing (``-mbranch-protection=standard``).

    Report-only like :func:`check_cet`: the linker keeps the marking only when every input has
    it, crt files and static libraries included, so a distribution whose crt files lack it
    leaves unmarked binaries whatever we compile with.
    """
    if elf.machine != "EM_AARCH64":
        return CheckResult("bti-pac", Status.INFO, f"not applicable to {elf.machine}")
    return _marking("bti-pac", elf.aarch64_features, ((_AARCH64_BTI, "BTI"), (_AARCH64_PAC, "PAC")),
                    "no BTI/PAC marking (toolchain crt/libc or an input lack it; report only)")


def control_flow_check(elf: ElfFacts) -> CheckResult:
    """The architecture's control-flow protection check: BTI/PAC on aarch64, CET elsewhere."""
    return check_bti_pac(elf) if elf.machine == "EM_AARCH64" else check_cet(elf)


def check_rpath(elf: ElfFacts, root: Path) -> CheckResult:
    """RPATH/RUNPATH entries must stay inside the image: $ORIGIN-relative or existing absolute dirs."""
    entries = elf.rpath + elf.runpath
    if not entries:
        return CheckResult("rpath", Status.PASS, "none")
    problems = [p for p in (_rpath_problem(e, root) for e in entries) if p]
    if problems:
        return CheckResult("rpath", Status.FAIL, "; ".join(problems))
    return CheckResult("rpath", Status.PASS, ":".join(entries))


def _rpath_problem(entry: str, root: Path) -> str | None:
    if entry == "":
        return "empty entry (searches the working directory)"
    if entry.startswith(("$ORIGIN", "${ORIGIN}")):
        return None
    if "$" in entry:
        return f"{entry}: unexpanded token"
    if not entry.startswith("/"):
        return f"{entry}: relative to the working directory"
    host = resolve_in_root(root, entry)
    if host is None or not host.is_dir():
        return f"{entry}: not in the image"
    return None


def check_debug_info(elf: ElfFacts, profile: str) -> CheckResult:
    """Release binaries ship stripped; debug binaries must keep DWARF to be useful."""
    debug = sorted(s for s in elf.sections if s.startswith((".debug_", ".zdebug_")))
    if profile == "release":
        leftovers = debug + sorted(elf.sections & {".symtab"})
        if leftovers:
            return CheckResult("debug-info", Status.FAIL, f"release not stripped: {', '.join(leftovers[:4])}")
        return CheckResult("debug-info", Status.PASS, "stripped (release)")
    if {".debug_info", ".zdebug_info"} & elf.sections:
        return CheckResult("debug-info", Status.PASS, "has .debug_info (debug)")
    return CheckResult("debug-info", Status.FAIL, "debug build without .debug_info (stripped or no -g)")


def check_needed(elf: ElfFacts, root: Path, conf_dirs: list[str]) -> CheckResult:
    """Every DT_NEEDED (and the interpreter) must be found inside the image, never on the host."""
    missing = []
    if elf.interp and not _usable(root, elf.interp, elf):
        missing.append(f"interpreter {elf.interp}")
    dirs = search_dirs(elf, conf_dirs)
    for name in elf.needed:
        candidates = [name] if "/" in name else [posixpath.join(d, name) for d in dirs]
        if not any(_usable(root, c, elf) for c in candidates):
            missing.append(name)
    if missing:
        return CheckResult("needed", Status.FAIL, f"not found in image: {', '.join(missing)}")
    return CheckResult("needed", Status.PASS, f"{len(elf.needed)} resolved")


def search_dirs(elf: ElfFacts, conf_dirs: list[str]) -> list[str]:
    """Library directories in ld.so's order: DT_RPATH (unless RUNPATH), RUNPATH, ld.so.conf, defaults."""
    origin = posixpath.dirname(elf.path)
    own = elf.runpath if elf.runpath else elf.rpath
    own = [e.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for e in own if e]
    multiarch = _MULTIARCH.get(elf.machine)
    defaults = [f"/lib/{multiarch}", f"/usr/lib/{multiarch}"] if multiarch else []
    defaults += ["/lib", "/usr/lib", "/usr/local/lib"]
    if elf.elfclass == 64:
        defaults += ["/lib64", "/usr/lib64"]
    return own + conf_dirs + defaults


def _usable(root: Path, image_path: str, elf: ElfFacts) -> bool:
    """ld.so skips files of another class or machine, so they do not count as found."""
    host = resolve_in_root(root, image_path)
    if host is None or not host.is_file() or not _is_elf(host):
        return False
    try:
        with host.open("rb") as fh:
            other = ELFFile(fh)
            return other.elfclass == elf.elfclass and other["e_machine"] == elf.machine
    except ELFError:
        return False


def ld_so_conf_dirs(root: Path) -> list[str]:
    """Directories listed by the image's /etc/ld.so.conf, following include globs."""
    dirs: list[str] = []
    _read_ld_conf(root, "/etc/ld.so.conf", dirs, set())
    return dirs


def _read_ld_conf(root: Path, conf: str, dirs: list[str], seen: set[str]) -> None:
    host = resolve_in_root(root, conf)
    if conf in seen or host is None or not host.is_file():
        return
    seen.add(conf)
    for raw in host.read_text(errors="replace").splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] == "hwcap":
            continue
        if words[0] == "include":
            for pattern in words[1:]:
                for match in _glob_in_root(root, posixpath.join(posixpath.dirname(conf), pattern)):
                    _read_ld_conf(root, match, dirs, seen)
            continue
        for word in words:
            dirs.extend(d for d in re.split(r"[:,=]", word) if d.startswith("/"))


def _glob_in_root(root: Path, pattern: str) -> list[str]:
    """Glob the last path component only, which is what ld.so.conf includes use in practice."""
    directory, name = posixpath.split(pattern)
    host = resolve_in_root(root, directory)
    if host is None or not host.is_dir():
        return []
    return sorted(posixpath.join(directory, m.name) for m in host.glob(name))


# --- profiles from the build manifest ---------------------------------------------------


@dataclass
class _Profiles:
    by_path: dict[str, str]
    default: str | None

    def lookup(self, image_path: str) -> str | None:
        return self.by_path.get(image_path, self.default)


def _validate_profile(profile: object, what: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"{what}: profile must be one of {PROFILES}, got {profile!r}")
    return str(profile)


def load_profiles(root: Path, prefix: str = "/usr/local") -> _Profiles:
    """Per-file build profiles from the manifest; relative file entries are taken relative to prefix."""
    host = root / MANIFEST
    if not host.is_file():
        return _Profiles({}, None)
    data = json.loads(host.read_text())
    if data.get("schema") != 1:
        raise ValueError(f"{MANIFEST}: unsupported schema {data.get('schema')!r}")
    by_path: dict[str, str] = {}
    shared: set[str] = set()
    for lib in data.get("libraries", []):
        profile = _validate_profile(lib.get("profile"), f"{MANIFEST}: {lib.get('name')}")
        shared.add(profile)
        for entry in lib.get("files") or []:
            target = resolve_in_root(root, posixpath.join(prefix, entry))
            if target is not None:
                by_path[_image_path(root, target)] = profile
    return _Profiles(by_path, shared.pop() if len(shared) == 1 else None)


# --- public entry points ----------------------------------------------------------------


def verify_tree(root: Path, *, prefix: str = "/usr/local", profile: str | None = None) -> VerifyReport:
    """Check every ELF executable and shared library under `prefix` of the image at `root`.

    `profile` ("debug"/"release") applies to all files; when None it comes per file from the
    build manifest, and a ValueError names the files whose profile cannot be determined.
    """
    root = Path(root)
    profiles = (
        _Profiles({}, _validate_profile(profile, "verify_tree")) if profile else load_profiles(root, prefix)
    )
    files = _elf_files(root, prefix)
    unknown = [path for path, _ in files if profiles.lookup(path) is None]
    if unknown:
        raise ValueError(
            f"no build profile for {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}: "
            f"the manifest does not settle it, pass profile='debug' or 'release'"
        )
    conf_dirs = ld_so_conf_dirs(root)
    report = VerifyReport(prefix=prefix)
    for image_path, host in files:
        result = verify_file(root, host, image_path, profiles.lookup(image_path), conf_dirs)
        if result is not None:
            report.files.append(result)
    return report


def verify_file(
    root: Path, host: Path, image_path: str, profile: str, conf_dirs: list[str] | None = None
) -> FileResult | None:
    """All checks for one ELF file; None when it is not an executable or shared object."""
    rel = image_path.lstrip("/")
    try:
        elf = read_elf(host, image_path)
    except Exception as exc:  # noqa: BLE001 - pyelftools raises assorted errors on corrupt files; report, don't crash
        return FileResult(
            rel, "invalid", profile, {"elf": CheckResult("elf", Status.FAIL, f"unreadable: {exc}")}
        )
    if elf is None:
        return None
    if conf_dirs is None:
        conf_dirs = ld_so_conf_dirs(root)
    kind = elf.kind
    results = [
        check_relro(elf),
        check_stack_protector(elf, kind),
        check_fortify(elf),
        *([check_pie(elf)] if kind == "exe" else []),
        check_nx_stack(elf),
        control_flow_check(elf),
        check_rpath(elf, root),
        check_debug_info(elf, profile),
        check_needed(elf, root, conf_dirs),
    ]
    return FileResult(rel, kind, profile, {r.name: r for r in results})


def check_size(size_bytes: int, budget_mb: float | None, image: str = "the image",
               platform: str | None = None) -> CheckResult:
    """Image size against a budget in MB (10^6 bytes, as podman/buildah print it).

    The failure names the image, its size and the budget, so a CI log line says it all.
    """
    if size_bytes < 0:
        raise ValueError(f"size must not be negative, got {size_bytes}")
    size_mb = size_bytes / 1_000_000
    if budget_mb is None:
        return CheckResult("size", Status.INFO, f"{image} is {size_mb:.1f} MB (no budget)")
    on = f" on {platform}" if platform else ""
    if size_mb > budget_mb:
        return CheckResult("size", Status.FAIL,
                           f"{image} is {size_mb:.1f} MB, over its size budget of {budget_mb:g} MB{on} "
                           f"by {size_mb - budget_mb:.1f} MB; make the image smaller or raise the "
                           "recipe's size_budget_mb")
    return CheckResult("size", Status.PASS, f"{image} is {size_mb:.1f} MB, within its size budget of "
                                            f"{budget_mb:g} MB{on}")


_SYMBOLS = {
    Status.PASS: Text("✓", style="green"),
    Status.FAIL: Text("✗", style="bold red"),
    Status.WARN: Text("!", style="yellow"),
    Status.INFO: Text("i", style="blue"),
}


def print_report(report: VerifyReport, console: Console) -> None:
    """One table row per file and check column, then a summary and the failures spelled out."""
    table = Table(title=f"Hardening of {report.prefix}")
    table.add_column("file")
    table.add_column("kind")
    for name in CHECKS:
        table.add_column(name, justify="center")
    for result in report.files:
        cells = [_SYMBOLS[c.status] if (c := result.checks.get(name)) else Text("-") for name in CHECKS]
        table.add_row(Text(result.path), result.kind, *cells)
    console.print(table)
    for check in report.image_checks:
        console.print(Text.assemble(_SYMBOLS[check.status], f" {check.name}: {check.detail}"))
    failures, warnings = report.failures, report.warnings
    verdict = Text("OK", style="bold green") if report.ok else Text("FAILED", style="bold red")
    console.print(
        Text.assemble(
            verdict, f": {len(report.files)} files, {len(failures)} failed checks, {len(warnings)} warnings"
        )
    )
    for file, check, detail in failures:
        console.print(Text(f"{file}: {check}: {detail}", style="red"))
    for file, check, detail in warnings:
        console.print(Text(f"{file}: {check}: {detail}", style="yellow"))
