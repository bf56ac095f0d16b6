"""Where buildah keeps images: the storage root, its driver and buildah's scratch space.

The one place that decides the storage driver: an ordinary user's store gets the driver
:func:`imagefactory.rootless.choose_driver` picks (buildah alone would default to vfs and show an
overlay store as empty); root keeps buildah's default unless a driver is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import rootless


@dataclass(frozen=True)
class StorageOptions:
    """Where buildah keeps images, and how it isolates RUN steps."""

    root: str | None = None
    runroot: str | None = None
    driver: str | None = None
    isolation: str = "chroot"
    driver_options: tuple[str, ...] = ()  # --storage-opt, e.g. overlay.mount_program=... (fuse-overlayfs)
    # buildah's scratch space (layer blobs during commit); per process below this folder, so
    # what a killed commit leaves is found and removed by the next run. None: $TMPDIR.
    tmp_root: str | None = None

    def global_args(self) -> list[str]:
        args: list[str] = []
        if self.root:
            args += ["--root", self.root]
        if self.runroot:
            args += ["--runroot", self.runroot]
        if self.driver:
            args += ["--storage-driver", self.driver]
        for opt in self.driver_options:
            args += ["--storage-opt", opt]
        return args

    def resolved(self) -> StorageOptions:
        """These options with the driver decided (here and only here): see the module docstring."""
        if self.driver or not rootless.is_rootless():
            return self
        choice = rootless.choose_driver(self.root)
        return replace(self, driver=choice.driver, driver_options=choice.options)

__all__ = ["StorageOptions"]
