"""Which files make two layers differ: compare two layer tarballs entry by entry.

A layer's digest is the sha256 of its uncompressed tar, so two layers differ when any entry
differs in content, metadata (mode, owner, mtime, link target, xattrs) or position. Reading
both tars once and comparing every entry names all the differing files in one round, instead
of one rebuild per guess (`reproduce` uses it on the layers of a non-reproducible step).
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

# What is compared per entry, in the order differences are reported.
FIELDS = ("type", "size", "content", "mode", "uid", "gid", "uname", "gname", "mtime", "link", "xattrs", "device")
_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
          tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


@dataclass(frozen=True)
class Entry:
    """One tar entry, reduced to what makes its bytes in the layer."""

    type: str
    size: int
    content: str  # sha256 of the file's bytes ("" for non-files)
    mode: str
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: int
    link: str
    xattrs: tuple[tuple[str, str], ...]
    device: str

    def differences(self, other: Entry) -> list[str]:
        return [f for f in FIELDS if getattr(self, f) != getattr(other, f)]


def _name(member: tarfile.TarInfo) -> str:
    return "/" + member.name.lstrip("./").rstrip("/") if member.name not in (".", "./") else "/"


def read_layer(path: Path) -> tuple[dict[str, Entry], list[str]]:
    """Entries of a layer tar (plain or compressed) by absolute path, and the paths in tar order."""
    entries: dict[str, Entry] = {}
    order: list[str] = []
    with tarfile.open(path, mode="r:*") as tar:
        for member in tar:
            digest = ""
            if member.isfile():
                f = tar.extractfile(member)
                digest = hashlib.file_digest(f, "sha256").hexdigest() if f is not None else ""
            xattrs = tuple(sorted((k, v) for k, v in (member.pax_headers or {}).items()
                                  if k.startswith(("SCHILY.xattr.", "LIBARCHIVE.xattr."))))
            name = _name(member)
            entries[name] = Entry(
                _TYPES.get(member.type, repr(member.type)), member.size if member.isfile() else 0, digest,
                f"{member.mode:04o}", member.uid, member.gid, member.uname, member.gname, int(member.mtime),
                member.linkname, xattrs,
                f"{member.devmajor}:{member.devminor}" if member.ischr() or member.isblk() else "")
            order.append(name)
    return entries, order


def compare_layers(a: Path, b: Path, limit: int = 200) -> dict:
    """``{"files": [{"path", "what": [fields] | ["only in a"] | ["only in b"]}], "count", "order_differs"}``.

    ``files`` is capped at ``limit`` entries (``count`` has the total). ``order_differs``: the
    same entries in another order (e.g. a tool that walks directories unsorted).
    """
    ea, order_a = read_layer(a)
    eb, order_b = read_layer(b)
    files: list[dict] = []
    for path in sorted(set(ea) | set(eb)):
        if path not in eb:
            files.append({"path": path, "what": ["only in a"]})
        elif path not in ea:
            files.append({"path": path, "what": ["only in b"]})
        else:
            what = ea[path].differences(eb[path])
            if what:
                item = {"path": path, "what": what}
                if "mtime" in what:
                    item["mtimes"] = [ea[path].mtime, eb[path].mtime]
                files.append(item)
    order_differs = not files and order_a != order_b
    return {"count": len(files), "files": files[:limit], "order_differs": order_differs}


def describe(diff: dict, limit: int = 20) -> list[str]:
    """Short lines for a terminal: ``/etc/shadow: content`` …"""
    lines = [f"{f['path']}: {', '.join(f['what'])}" for f in diff["files"][:limit]]
    if diff["count"] > limit:
        lines.append(f"… and {diff['count'] - limit} more")
    if diff.get("order_differs"):
        lines.append("same entries in a different order")
    return lines


__all__ = ["Entry", "compare_layers", "describe", "read_layer"]
