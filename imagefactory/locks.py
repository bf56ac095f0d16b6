"""Locks between imagefactory processes sharing one store.

Two levels, both ``flock`` on files in the store's state folder (the kernel drops them
when the holder dies, even by SIGKILL, so there are no stale locks):

- the **store** lock: builds hold it *shared*, so builds of different images run side by
  side; ``clean`` and ``cache prune`` hold it *exclusive*, because they remove images a
  running build may be using;
- one lock per **image**: a build holds it while it builds that image, so two runs never
  build the same image at once. The second waits, says for whom, then finds the first
  one's commits in the cache instead of building them again.

Whoever holds a lock writes who it is (PID, what it does, since when) next to it, so a
waiting run can say what it waits for.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._process import pid_alive
from .buildah import Cancelled

Note = Callable[[str], None]


def _who(purpose: str) -> str:
    return f"pid {os.getpid()} ({purpose}, since {time.strftime('%H:%M:%S')})"


def _acquire(f, mode: int, waiting: Callable[[], str], note: Note | None, poll: float,
             stop: Callable[[], bool] = lambda: False) -> float:
    """Take the lock, saying once what we wait for; returns the seconds spent waiting.
    ``stop`` ends the wait (a cancelled build) with :class:`Cancelled`."""
    try:
        fcntl.flock(f, mode | fcntl.LOCK_NB)
        return 0.0
    except BlockingIOError:
        pass
    t0 = time.monotonic()
    (note or (lambda m: print(m, flush=True)))(waiting())
    while True:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
            return time.monotonic() - t0
        except BlockingIOError:
            if stop():
                raise Cancelled("build cancelled while waiting for a lock") from None
            time.sleep(poll)


class StoreLocks:
    def __init__(self, state_path: Path, poll: float = 0.2):
        self.folder = state_path / "locks"
        self.poll = poll

    # -- store level ----------------------------------------------------------
    @contextmanager
    def store(self, purpose: str, *, exclusive: bool, note: Note | None = None) -> Iterator[None]:
        holders = self.folder / "holders"
        holders.mkdir(parents=True, exist_ok=True)
        path = self.folder / "store.lock"
        mine = holders / str(os.getpid())
        with open(path, "a+") as f:
            def waiting() -> str:
                who = self.holders(exclude_self=True)
                return (f"waiting for the store lock {path}: held by {'; '.join(who) or 'another imagefactory process'}"
                        "; this run continues when that ends")

            waited = _acquire(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, waiting, note, self.poll)
            if waited and note:
                note(f"got the store lock after {waited:.1f}s")
            mine.write_text(_who(purpose))
            try:
                yield
            finally:
                mine.unlink(missing_ok=True)
                fcntl.flock(f, fcntl.LOCK_UN)

    def holders(self, exclude_self: bool = False) -> list[str]:
        out = []
        for entry in sorted((self.folder / "holders").glob("*")):
            if not entry.name.isdigit() or not pid_alive(int(entry.name)):
                entry.unlink(missing_ok=True)  # a killed holder's note
                continue
            if exclude_self and int(entry.name) == os.getpid():
                continue
            try:
                out.append(entry.read_text().strip())
            except OSError:
                continue
        return out

    # -- image level ----------------------------------------------------------
    @contextmanager
    def image(self, name: str, purpose: str, note: Note | None = None,
              stop: Callable[[], bool] = lambda: False) -> Iterator[float]:
        """Hold the lock of one image; yields how long we waited (0.0: nobody else was building it)."""
        folder = self.folder / "images"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)}.lock"
        with open(path, "a+") as f:
            def waiting() -> str:
                f.seek(0)
                holder = f.read().strip() or "another imagefactory process"
                return f"waiting for image {name}: {holder} is building it; its layers will be reused"

            waited = _acquire(f, fcntl.LOCK_EX, waiting, note, self.poll, stop)
            f.seek(0)
            f.truncate()
            f.write(_who(purpose) + "\n")
            f.flush()
            try:
                yield waited
            finally:
                f.seek(0)
                f.truncate()
                f.flush()
                fcntl.flock(f, fcntl.LOCK_UN)


def store_lock(settings, purpose: str, note: Note | None = None):
    """The exclusive store lock, for commands that remove images (`clean`, `cache prune`)."""
    return StoreLocks(settings.state_path()).store(purpose, exclusive=True, note=note)


__all__ = ["StoreLocks", "store_lock"]
