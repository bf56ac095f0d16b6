"""Layer tarballs compared entry by entry: what `reproduce` says about a differing layer."""

from __future__ import annotations

import io
import tarfile

from imagefactory.layerdiff import compare_layers, describe


def _layer(path, entries):
    """entries: (name, kind, data/link, mode, mtime, uid)"""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode, mtime, uid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid = mode, mtime, uid
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


BASE = [("etc", "dir", None, 0o755, 100, 0), ("etc/shadow", "file", b"root:*:20000:0:99999:7:::\n", 0o640, 100, 0),
        ("etc/os", "link", "../usr/lib/os", 0o777, 100, 0), ("usr/lib/libx.a", "file", b"!<arch>\nA", 0o644, 100, 0)]


def test_identical_layers_have_no_differences(tmp_path):
    a = _layer(tmp_path / "a.tar", BASE)
    b = _layer(tmp_path / "b.tar", BASE)
    assert compare_layers(a, b) == {"count": 0, "files": [], "order_differs": False}


def test_every_kind_of_difference_is_named(tmp_path):
    a = _layer(tmp_path / "a.tar", [*BASE, ("var/log/dpkg.log", "file", b"2026-01-01 install\n", 0o644, 100, 0)])
    changed = [("etc", "dir", None, 0o755, 100, 0),
               ("etc/shadow", "file", b"root:*:20001:0:99999:7:::\n", 0o640, 100, 0),  # content
               ("etc/os", "link", "../usr/lib/os-release", 0o777, 100, 0),  # link target
               ("usr/lib/libx.a", "file", b"!<arch>\nA", 0o600, 200, 1000),  # mode, mtime, owner
               ("var/cache/ldconfig/aux-cache", "file", b"x", 0o600, 100, 0)]
    b = _layer(tmp_path / "b.tar", changed)
    diff = compare_layers(a, b)
    by_path = {f["path"]: f["what"] for f in diff["files"]}
    assert by_path == {"/etc/shadow": ["content"], "/etc/os": ["link"],
                       "/usr/lib/libx.a": ["mode", "uid", "mtime"],
                       "/var/log/dpkg.log": ["only in a"], "/var/cache/ldconfig/aux-cache": ["only in b"]}
    assert next(f for f in diff["files"] if f["path"] == "/usr/lib/libx.a")["mtimes"] == [100, 200]
    assert diff["count"] == 5
    assert "/etc/shadow: content" in describe(diff)


def test_same_entries_in_another_order(tmp_path):
    a = _layer(tmp_path / "a.tar", BASE)
    b = _layer(tmp_path / "b.tar", list(reversed(BASE)))
    diff = compare_layers(a, b)
    assert diff["count"] == 0 and diff["order_differs"]
    assert describe(diff) == ["same entries in a different order"]


def test_the_list_is_capped_but_counted(tmp_path):
    a = _layer(tmp_path / "a.tar", [(f"f{i}", "file", b"a", 0o644, 1, 0) for i in range(30)])
    b = _layer(tmp_path / "b.tar", [(f"f{i}", "file", b"b", 0o644, 1, 0) for i in range(30)])
    diff = compare_layers(a, b, limit=10)
    assert diff["count"] == 30 and len(diff["files"]) == 10
    assert describe(diff, limit=5)[-1] == "… and 25 more"
