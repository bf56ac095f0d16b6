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
