"""Building as an ordinary user: the user namespace, the storage driver, and what to check.

buildah runs rootless by mapping the user to root inside a user namespace, with the
subordinate ID ranges of ``/etc/subuid`` and ``/etc/subgid`` (set up by ``newuidmap`` and
``newgidmap``) for every other ID. Reading a container's files (mounting it) and
bootstrapping a root file system only work *inside* that namespace, so the CLI re-runs
itself under ``buildah unshare`` once (:func:`reexec_in_userns`); inside, the process is
uid 0 and everything behaves as for root, with ``mmdebstrap`` instead of ``debootstrap``
(which needs ``mknod``).

The storage driver, unless the user sets one, is picked by :func:`choose_driver`: the one
an existing store already uses (buildah 1.28 does not notice a mismatch and would show an
empty store), else native overlay where the kernel allows it for unprivileged users
(Linux 5.13+), else fuse-overlayfs where ``/dev/fuse`` can be opened, else vfs (works
everywhere, costs a full copy per layer).
"""

from __future__ import annotations

import os
import platform
import pwd
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

USERNS_ENV = "_CONTAINERS_USERNS_CONFIGURED"
REEXEC_ENV = "IMAGEFACTORY_IN_USERNS"  # set for the copy of the CLI that runs inside buildah unshare
MIN_RANGE = 65536  # enough for every ID a Debian image uses, nobody (65534) included
FUSE_OVERLAYFS = "/usr/bin/fuse-overlayfs"


def is_rootless() -> bool:
    """True for an ordinary user, also inside ``buildah unshare`` (where the uid is 0)."""
    return os.geteuid() != 0 or in_userns()


def in_userns() -> bool:
    return bool(os.environ.get(USERNS_ENV))


def needs_userns() -> bool:
    return os.geteuid() != 0 and not in_userns()


@dataclass(frozen=True)
class DriverChoice:
    driver: str
    options: tuple[str, ...]  # --storage-opt values
    reason: str


def default_graphroot() -> Path:
    """Where buildah keeps an ordinary user's images when no --root is given."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "containers" / "storage"


def choose_driver(graphroot: str | None, kernel: str | None = None, fuse_ok: bool | None = None) -> DriverChoice:
    """The storage driver for a rootless store (see the module docstring for the order)."""
    root = Path(graphroot) if graphroot else default_graphroot()
    release = kernel or platform.release()
    native = _kernel_at_least(release, (5, 13))
    for driver in ("overlay", "vfs"):
        if (root / f"{driver}-images").is_dir():
            return DriverChoice(driver, _fuse_opts() if driver == "overlay" and not native else (),
                                f"the store at {root} already uses {driver}")
    if native:
        return DriverChoice("overlay", (), f"kernel {release} supports overlay for unprivileged users (5.13+)")
    fuse_ok = _fuse_usable() if fuse_ok is None else fuse_ok
    if fuse_ok:
        return DriverChoice("overlay", _fuse_opts(),
                            f"kernel {release} is older than 5.13; fuse-overlayfs can open /dev/fuse")
    return DriverChoice("vfs", (), f"kernel {release} is older than 5.13 and fuse-overlayfs cannot be used "
                                   "(not installed, or /dev/fuse not accessible): vfs copies each layer in full")


def _fuse_opts() -> tuple[str, ...]:
    return (f"overlay.mount_program={FUSE_OVERLAYFS}",)


def _fuse_usable() -> bool:
    if not Path(FUSE_OVERLAYFS).exists():
        return False
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def _kernel_at_least(release: str, wanted: tuple[int, int]) -> bool:
    parts = []
    for piece in release.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= wanted


def reexec_in_userns(storage_args: list[str], argv: list[str]) -> None:
    """Replace this process with ``buildah [storage args] unshare -- python -m imagefactory ARGV``."""
    buildah = shutil.which("buildah")
    if not buildah:
        raise SystemExit("imagefactory: buildah is not installed (run ci/setup or apt-get install buildah)")
    env = dict(os.environ)
    env[REEXEC_ENV] = "1"
    if not runtime_dir_ok():
        env.pop("XDG_RUNTIME_DIR", None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(buildah, [buildah, *storage_args, "unshare", "--", sys.executable, "-m", "imagefactory", *argv], env)


class RootlessError(RuntimeError):
    """This user cannot build without root (no user namespace or subordinate IDs); says how to fix it."""


def check_can_unshare() -> None:
    """Fail with the fix before buildah fails with something obscure (it only warns on missing ranges)."""
    problems = [f"{found}; fix: {fix}" for name, ok, found, fix in checks(skip_driver=True) if not ok
                and name.startswith(("rootless", "user namespaces", "unprivileged", "apparmor"))]
    if problems:
        raise RootlessError("building as an ordinary user needs a user namespace with subordinate IDs:\n  "
                          + "\n  ".join(problems) + "\n(`imagefactory doctor` shows every check)")


def follow_outer_process() -> None:
    """In the re-run copy: end (via SIGTERM, so working containers are removed) when the outer
    ``buildah unshare`` dies - a cancelled CI job signals only that outer process."""
    if os.environ.get(REEXEC_ENV) and in_userns():
        from ._process import die_with_parent

        die_with_parent()
        if os.getppid() == 1:  # the outer process is already gone
            raise SystemExit(143)


def runtime_dir_ok() -> bool:
    """buildah refuses an XDG_RUNTIME_DIR the user does not own (e.g. one inherited from root via su)."""
    path = os.environ.get("XDG_RUNTIME_DIR")
    if not path:
        return True
    try:
        return os.stat(path).st_uid == os.getuid()
    except OSError:
        return False


# --- doctor --------------------------------------------------------------------------------------
def subid_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """(start, count) of the user's largest range in /etc/subuid or /etc/subgid."""
    best = None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if best is None or count > best[1]:
            best = (start, count)
    return best


def checks(graphroot: str | None = None, driver: str | None = None,
           skip_driver: bool = False) -> list[tuple[str, bool, str, str]]:
    """(name, ok, found, how to fix) rows for `doctor` when running as an ordinary user."""
    uid = os.getuid() if not in_userns() else int(os.environ.get("_CONTAINERS_ROOTLESS_UID", os.getuid()))
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    rows: list[tuple[str, bool, str, str]] = []
    for kind, path in (("subuid", "/etc/subuid"), ("subgid", "/etc/subgid")):
        rng = subid_range(path, user, uid)
        ok = rng is not None and rng[1] >= MIN_RANGE
        found = f"{user}:{rng[0]}:{rng[1]}" if rng else f"no entry for {user} in {path}"
        fix = (f"as root: usermod --add-{kind}s 100000-{100000 + MIN_RANGE - 1} {user} "
               f"(a range of at least {MIN_RANGE} IDs, listed by name)")
        rows.append((f"rootless {kind}", ok, found, fix))
    for tool in ("newuidmap", "newgidmap"):
        path = shutil.which(tool) or (f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else None)
        if not path:
            rows.append((f"rootless {tool}", False, "not found", "as root: apt-get install uidmap"))
            continue
        mode = os.stat(path).st_mode
        setuid = bool(mode & 0o4000)
        caps = _has_file_caps(path)
        rows.append((f"rootless {tool}", setuid or caps, f"{path} ({'setuid' if setuid else 'file caps' if caps else 'neither setuid nor file caps'})",
                     f"as root: chmod u+s {path} (or reinstall uidmap)"))
    max_ns = _read_int("/proc/sys/user/max_user_namespaces")
    rows.append(("user namespaces", max_ns is None or max_ns > 0,
                 f"user.max_user_namespaces={max_ns}" if max_ns is not None else "no limit file",
                 "as root: sysctl -w user.max_user_namespaces=15000"))
    clone = _read_int("/proc/sys/kernel/unprivileged_userns_clone")
    if clone is not None:
        rows.append(("unprivileged userns", clone == 1, f"kernel.unprivileged_userns_clone={clone}",
                     "as root: sysctl -w kernel.unprivileged_userns_clone=1"))
    apparmor = _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if apparmor:
        rows.append(("apparmor userns", False, "kernel.apparmor_restrict_unprivileged_userns=1",
                     "as root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor "
                     "profile allowing userns for buildah"))
    rows.append(_userns_smoke_test())
    rows.append(("XDG_RUNTIME_DIR", runtime_dir_ok(), os.environ.get("XDG_RUNTIME_DIR") or "unset (buildah uses "
                 f"/var/tmp/containers-user-{uid})",
                 "unset it, or point it at a 0700 folder you own (imagefactory drops a foreign one itself)"))
    if skip_driver:
        return rows
    choice = choose_driver(graphroot)
    if driver:
        rows.append(("storage driver", True, f"{driver} (set in the settings); automatic choice would be "
                     f"{choice.driver}: {choice.reason}", ""))
    else:
        rows.append(("storage driver", True, f"{choice.driver}"
                     f"{' + fuse-overlayfs' if choice.options else ''}: {choice.reason}", ""))
    rows.append(("bootstrap tool", bool(shutil.which("mmdebstrap")), shutil.which("mmdebstrap") or "not found",
                 "apt-get install mmdebstrap (rootless bootstraps use it; debootstrap needs real root)"))
    return rows


def _userns_smoke_test() -> tuple[str, bool, str, str]:
    """Enter buildah's user namespace for real: the ID map must hold more than the user itself."""
    import subprocess

    if in_userns():
        lines = Path("/proc/self/uid_map").read_text().strip().splitlines()
    else:
        try:
            proc = subprocess.run(["buildah", "unshare", "cat", "/proc/self/uid_map"], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return ("rootless namespace", False, str(exc)[:200], "install buildah and uidmap (ci/setup)")
        if proc.returncode != 0:
            return ("rootless namespace", False, (proc.stderr.strip().splitlines() or ["failed"])[-1][:200],
                    "fix the rootless checks above, then run doctor again")
        lines = proc.stdout.strip().splitlines()
    ok = len(lines) >= 2
    found = f"{len(lines)} ID range(s) mapped: " + "; ".join(" ".join(line.split()) for line in lines)
    return ("rootless namespace", ok, found, "" if ok else "only your own ID is mapped: add subuid/subgid ranges "
            "(see the rootless subuid/subgid rows) and make newuidmap/newgidmap setuid")


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _has_file_caps(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


__all__ = ["DriverChoice", "checks", "choose_driver", "default_graphroot", "in_userns", "is_rootless",
           "needs_userns", "reexec_in_userns", "subid_range"]
