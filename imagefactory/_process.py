"""Small facts about processes, shared by the modules that clean up after killed runs."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a running process? (Another user's process counts as running.)"""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(sig: int = 15) -> None:
    """Ask the kernel to send ``sig`` (SIGTERM) to this process when its parent dies.

    Used in two places: buildah children (set in the forked child before exec) so a killed
    imagefactory leaves no buildah running, and the copy of imagefactory that runs inside
    ``buildah unshare``, so a SIGTERM to the outer process reaches the build and cleans up.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass
