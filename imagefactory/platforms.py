"""Platforms: which base images exist, how packages are installed, and what packages are called.

``debian`` (default) bootstraps Debian 13 itself with debootstrap, so it needs no
container registry. ``ubi9`` starts from Red Hat's UBI images and uses dnf/microdnf.
Package names in recipes are Debian's; :data:`PACKAGE_NAMES` maps them for other
platforms in one place.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar


from .buildah import empty_folder
from .recipe import CATALOGUE, Recipe, RecipeError
from .retry import RetryPolicy
from .steps import HostCall, PrepareContext, RenderContext, Rendered, RunCall, Step, host_action

if TYPE_CHECKING:  # pragma: no cover
    from .buildah import Container
    from .config import Settings

# PYTHONHASHSEED: py3compile's .pyc files (set constants) come out the same in every build.
APT_ENV = (("DEBIAN_FRONTEND", "noninteractive"), ("LC_ALL", "C.UTF-8"), ("PYTHONHASHSEED", "0"))
# Written by every install, different every time (timestamps, inode numbers): never committed.
APT_LEFTOVERS = ("/var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/log/alternatives.log "
                 "/var/cache/ldconfig/aux-cache /var/cache/debconf/*-old /var/lib/dpkg/*-old")
APT_NET_OPTS = "-o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30"
_MIRROR_DOWN = ("Failed to fetch", "Could not connect", "Temporary failure resolving", "Connection refused",
                "Unable to connect", "Connection timed out", "Couldn't download", "Failed getting release file",
                "Failed getting release signature")

# Debian name → name on other platforms (None: not available there, dropped with a plan note).
PACKAGE_NAMES: dict[str, dict[str, str | None]] = {
    "build-essential": {"ubi9": "gcc gcc-c++ make glibc-devel"},
    "g++": {"ubi9": "gcc-c++"},
    "pkg-config": {"ubi9": "pkgconf-pkg-config"},
    "pkgconf": {"ubi9": "pkgconf-pkg-config"},
    "ninja-build": {"ubi9": "ninja-build"},
    "libtool-bin": {"ubi9": "libtool"},
    "autoconf": {"ubi9": "autoconf"},
    "automake": {"ubi9": "automake"},
    "git": {"ubi9": "git-core"},
    "xz-utils": {"ubi9": "xz"},
    "ca-certificates": {"ubi9": "ca-certificates"},
    "libpam0g-dev": {"ubi9": "pam-devel"},
    "libseccomp-dev": {"ubi9": "libseccomp-devel"},
    "liblz4-dev": {"ubi9": "lz4-devel"},
    "libreadline-dev": {"ubi9": "readline-devel"},
    "libnl-route-3-dev": {"ubi9": "libnl3-devel"},
    "libprotobuf-c-dev": {"ubi9": "protobuf-c-devel"},
    "protobuf-c-compiler": {"ubi9": "protobuf-c-compiler"},
    "libtalloc-dev": {"ubi9": "libtalloc-devel"},
    "libev-dev": {"ubi9": "libev-devel"},
    "libgnutls28-dev": {"ubi9": "gnutls-devel"},
    "libradcli-dev": {"ubi9": "radcli-devel"},
    "libkrb5-dev": {"ubi9": "krb5-devel"},
    "libcurl4-openssl-dev": {"ubi9": "libcurl-devel"},
    "liboath-dev": {"ubi9": "liboath-devel"},
    "libmaxminddb-dev": {"ubi9": "libmaxminddb-devel"},
    "gperf": {"ubi9": "gperf"},
    "linux-perf": {"ubi9": "perf"},
    "check": {"ubi9": "check-devel"},
    "libcmocka-dev": {"ubi9": "libcmocka-devel"},
    "python3-pytest": {"ubi9": "python3-pytest"},
    "python3": {"ubi9": "python3"},
    "lcov": {"ubi9": "lcov"},
    "gcovr": {"ubi9": "gcovr"},
    "iperf3": {"ubi9": "iperf3"},
    "tcpdump": {"ubi9": "tcpdump"},
    "dpkg-dev": {"ubi9": None},
    "rpm": {"ubi9": "rpm-build"},
    "createrepo-c": {"ubi9": "createrepo_c"},
    "file": {"ubi9": "file"},
    "procps": {"ubi9": "procps-ng"},
    "binutils": {"ubi9": "binutils"},
    "nodejs": {"ubi9": "nodejs"},
    "npm": {"ubi9": "npm"},
    "supervisor": {"ubi9": "supervisor"},
    "radosgw": {"ubi9": None},  # the ubi9 s4 runtime starts from the radosgw-posix image
    "ceph-common": {"ubi9": None},
    "python3-pip": {"ubi9": "python3-pip"},
    "unzip": {"ubi9": "unzip"},
    "curl": {"ubi9": "curl-minimal"},
    "passwd": {"ubi9": "shadow-utils"},
    "ccache": {"ubi9": "ccache"},
    # ocserv-modern images (recipes/packages.py, imagefactory.libraries.BUILD_DEPS)
    "gcc": {"ubi9": "gcc"},
    "libc6-dev": {"ubi9": "glibc-devel"},
    "make": {"ubi9": "make"},
    "cmake": {"ubi9": "cmake"},
    "meson": {"ubi9": "meson"},
    "patch": {"ubi9": "patch"},
    "less": {"ubi9": "less"},
    "gzip": {"ubi9": "gzip"},
    "tar": {"ubi9": "tar"},
    "gdb": {"ubi9": "gdb"},
    "valgrind": {"ubi9": "valgrind"},
    "strace": {"ubi9": "strace"},
}


class PlatformError(RecipeError):
    """The platform cannot do what a recipe asks (no mirror, unknown package, unknown platform)."""


def host_debian_mirror(apt_dir: str = "/etc/apt") -> str | None:
    """The Debian archive this host already uses, read from its own apt configuration."""
    uris: list[str] = []
    for path in sorted(glob.glob(f"{apt_dir}/sources.list.d/*.sources")):
        text = Path(path).read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Enabled:\s*no", stanza, re.MULTILINE | re.IGNORECASE):
                continue
            suites = " ".join(re.findall(r"^Suites:\s*(.+)$", stanza, re.MULTILINE))
            for line in re.findall(r"^URIs:\s*(.+)$", stanza, re.MULTILINE):
                for uri in line.split():
                    uris.append((uri, suites))
    for path in [f"{apt_dir}/sources.list", *sorted(glob.glob(f"{apt_dir}/sources.list.d/*.list"))]:
        if not Path(path).is_file():
            continue
        for line in Path(path).read_text(errors="replace").splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                uris.append((m.group(1), m.group(2)))
    for uri, suites in uris:
        if "security" in uri or "security" in suites:
            continue
        if uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    return None


@dataclass(frozen=True)
class Platform:
    name: str
    bases: dict[str, str]  # variant → recipe name

    def map_packages(self, names: tuple[str, ...] | list[str]) -> list[str]:
        out: list[str] = []
        for name in names:
            mapped = PACKAGE_NAMES.get(name, {}).get(self.name, name) if self.name != "debian" else name
            if mapped:
                out.extend(mapped.split())
        return out

    def install_calls(self, packages: list[str], variant: str | None) -> list[RunCall]:
        raise NotImplementedError

    def add_user_script(self, name: str, uid: int, gid: int, home: str, shell: str, groups: tuple[str, ...]) -> str:
        q = shlex.quote
        extra = f" -G {q(','.join(groups))}" if groups else ""
        return (f"getent group {gid} >/dev/null || groupadd -g {gid} {q(name)}\n"
                f"id -u {q(name)} >/dev/null 2>&1 || useradd -m -u {uid} -g {gid} -d {q(home)} "
                f"-s {q(shell)}{extra} {q(name)}")

    def diagnose(self, log_tail: str, settings=None) -> str | None:
        """A hint for a failed step whose log shows the package mirror could not be reached."""
        if not any(marker in log_tail for marker in _MIRROR_DOWN):
            return None
        configured = getattr(settings, "debian_mirror", None) if self.name == "debian" else None
        mirror = configured or (host_debian_mirror() if self.name == "debian" else None)
        return (f"the package mirror could not be reached from the build (image's apt sources; the host's mirror is "
                f"{mirror or 'unknown'}). Check the network, or set `debian_mirror` in imagefactory.yaml / "
                "IMAGEFACTORY_DEBIAN_MIRROR to a mirror this machine reaches, then rebuild; apt already retried "
                "each download 3 times.")

    def base_recipe(self, variant: str) -> type[Recipe]:
        if variant not in self.bases:
            raise PlatformError(f"platform {self.name!r} has no {variant!r} base; "
                                f"choose one of {', '.join(sorted(self.bases))}")
        return CATALOGUE.get(self.bases[variant])


class DebianPlatform(Platform):
    def install_calls(self, packages: list[str], variant: str | None) -> list[RunCall]:
        # apt retries transient fetch errors itself; --error-on=any turns an unreachable mirror into a
        # failed `apt-get update` instead of a misleading "Unable to locate package" later.
        script = (f"apt-get update -q --error-on=any {APT_NET_OPTS}\n"
                  f"apt-get install -y -q --no-install-recommends {APT_NET_OPTS} {' '.join(sorted(set(packages)))}\n"
                  f"apt-get clean\nrm -rf {APT_LEFTOVERS}")
        return [RunCall(("/bin/sh", "-ec", script), APT_ENV)]


class Ubi9Platform(Platform):
    def install_calls(self, packages: list[str], variant: str | None) -> list[RunCall]:
        pkgs = " ".join(sorted(set(packages)))
        if variant == "slim":
            script = (f"microdnf install -y --nodocs --setopt=install_weak_deps=0 {pkgs}\n"
                      "microdnf clean all")
        else:
            script = (f"dnf install -y --nodocs --setopt=install_weak_deps=False {pkgs}\n"
                      "dnf clean all")
        return [RunCall(("/bin/sh", "-ec", script))]

    def add_user_script(self, name, uid, gid, home, shell, groups) -> str:
        # ubi-minimal has no shadow-utils: write the entries directly, as its own images do.
        q = shlex.quote
        return (f"getent group {gid} >/dev/null || echo '{name}:x:{gid}:' >> /etc/group\n"
                f"id -u {q(name)} >/dev/null 2>&1 || echo '{name}:x:{uid}:{gid}::{home}:{shell}' >> /etc/passwd\n"
                f"mkdir -p {q(home)} && chown {uid}:{gid} {q(home)}")


PLATFORMS: dict[str, Platform] = {
    "debian": DebianPlatform("debian", {"full": "imagefactory-base-debian-full",
                                        "slim": "imagefactory-base-debian-slim"}),
    "ubi9": Ubi9Platform("ubi9", {"full": "imagefactory-base-ubi9", "slim": "imagefactory-base-ubi9-minimal"}),
}


def get_platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise PlatformError(f"unknown platform {name!r}; choose one of {', '.join(PLATFORMS)}") from None


# --- Debian base images, bootstrapped by us ---------------------------------
# What dpkg never unpacks, in any layer: the bootstrap hands these to mmdebstrap as --dpkgopt, so
# they apply while it extracts and installs the base (mmtarfilter in the extract phase, dpkg after)
# and stay in /etc/dpkg/dpkg.cfg.d/99mmdebstrap for every later apt install. Copyright files stay
# (SBOM licenses), and locale.alias (read by libc).
DPKG_PATH_EXCLUDES: tuple[str, ...] = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/doc-base/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)


def bootstrap_command(rootless: bool) -> list[str]:
    """mmdebstrap for root and rootless builds alike: it applies dpkg path filters from the first
    extracted package on (debootstrap unpacks the essential set with plain tar and cannot).
    Inside a user namespace it cannot mknod, so it skips the device nodes there."""
    return ["mmdebstrap", "--mode=root", *(["--skip=output/mknod"] if rootless else []),
            *(f"--dpkgopt={line}" for line in DPKG_PATH_EXCLUDES)]


@dataclass
class Bootstrap(Step):
    """Bootstrap a Debian release into an empty container's root (runs on the host, mmdebstrap)."""

    suite: str
    variant: str = "minbase"
    include: tuple[str, ...] = ("ca-certificates",)
    kind: ClassVar[str] = "bootstrap"
    # filled in by prepare(): host facts
    mirror: str | None = None
    tool: tuple[str, ...] = ()

    def prepare(self, ctx: PrepareContext) -> Bootstrap:
        mirror = ctx.settings.debian_mirror or host_debian_mirror()
        if not mirror:
            raise PlatformError(
                "no Debian mirror: set `debian_mirror` in imagefactory.yaml or IMAGEFACTORY_DEBIAN_MIRROR, "
                "or configure apt on this host (/etc/apt/sources.list.d/*.sources)")
        from .rootless import in_userns

        return replace(self, mirror=mirror, tool=tuple(bootstrap_command(rootless=in_userns())))

    def render(self, ctx: RenderContext) -> Rendered:
        if not self.mirror or not self.tool:
            raise ctx.fail("Bootstrap was rendered before it was prepared")
        from .arches import get_arch, host_arch

        arch = get_arch(ctx.arch) if ctx.arch else host_arch()
        options = (f"--variant={self.variant}", f"--include={','.join(self.include)}", "--components=main",
                   f"--architectures={arch.name}")  # a foreign one runs its maintainer scripts under qemu
        argv = [*self.tool, *options, self.suite, "<container root>", self.mirror]
        call = HostCall("bootstrap", " ".join(argv),
                        params=(("argv", json.dumps([*self.tool, *options, self.suite])), ("mirror", self.mirror)),
                        key=self.mirror)
        return Rendered(self.kind, f"{self.tool[0]} {self.suite} ({self.variant}, {arch.name}) from {self.mirror}",
                        [call])


@host_action("bootstrap")
def bootstrap_into(call: HostCall, ctr: Container, log: Path, settings: Settings) -> None:
    """Bootstrap into the container's mounted root; retried from an empty root while the mirror is down."""
    argv, mirror = json.loads(call.param("argv")), call.param("mirror")
    policy = RetryPolicy.from_settings(settings)
    root = ctr.mount()

    def bootstrap() -> None:
        empty_folder(root)  # a retry starts from nothing, as the tools require
        ctr.buildah.host([*argv, str(root), mirror], log=log, env=_host_env(settings.source_date_epoch))

    def mirror_down(exc: BaseException) -> bool:
        from .buildah import BuildahError

        return isinstance(exc, BuildahError) and any(m in exc.stderr_tail for m in _MIRROR_DOWN)

    try:
        policy.retrying(mirror_down)(bootstrap)
        _tidy_rootfs(root)
    finally:
        ctr.umount()


def _host_env(source_date_epoch: int | None = None) -> dict[str, str]:
    """PATH and locale; SOURCE_DATE_EPOCH reaches the maintainer scripts (shadow's last-change day)."""
    import os

    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C", "PYTHONHASHSEED": "0"}
    if source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
    return env


def _tidy_rootfs(root: Path) -> None:
    """Drop what debootstrap leaves that no image needs (apt lists, caches, logs), and what differs
    between two bootstraps of the same packages (logs, backups, ldconfig's inode cache, the host's
    name and resolver, which the container runtime provides); buildah's commit clamps the mtimes."""
    import shutil

    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/log/*.log", "var/log/apt/*", "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old",
                    "var/lib/dpkg/*-old"):
        for path in glob.glob(str(root / pattern)):
            p = Path(path)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.name not in ("lock", "partial"):
                p.unlink(missing_ok=True)
    for name in ("etc/hostname", "etc/resolv.conf"):
        p = root / name
        if p.is_file() and not p.is_symlink():
            p.write_text("")


class DebianFull(Recipe):
    """Debian 13 minbase bootstrapped from the configured mirror, without docs, man pages or locales.

    dpkg is told before the first package is unpacked (:data:`DPKG_PATH_EXCLUDES`), so no layer of
    this base or of any image built on it carries them: nothing is deleted later.
    """

    name = "imagefactory-base-debian-full"
    hidden = True
    platform_name = "debian"
    variant = "full"

    def steps(self):
        yield Bootstrap(self.settings.debian_suite)


class DebianSlim(DebianFull):
    """Debian 13 minbase without docs, man pages or locales: the full base itself (nothing to strip).

    On ``ubi9`` the two variants are different images (ubi, ubi-minimal); on Debian the full base
    is already minimal, so slim adds no step and shares its bootstrap layer.
    """

    name = "imagefactory-base-debian-slim"
    variant = "slim"

    def steps(self):
        return ()


class Ubi9(Recipe):
    """Red Hat UBI 9 (dnf), pulled from the registry."""

    name = "imagefactory-base-ubi9"
    hidden = True
    platform_name = "ubi9"
    variant = "full"
    parent = "registry.access.redhat.com/ubi9/ubi:latest"


class Ubi9Minimal(Recipe):
    """Red Hat UBI 9 minimal (microdnf), pulled from the registry."""

    name = "imagefactory-base-ubi9-minimal"
    hidden = True
    platform_name = "ubi9"
    variant = "slim"
    parent = "registry.access.redhat.com/ubi9/ubi-minimal:latest"
