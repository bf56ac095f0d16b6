"""Fetching pinned archives against a real local HTTP server with injected faults, and the real mirror files."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SHARED_SOURCES

from imagefactory.sources import Alternate, RetryPolicy, SourceError, SourcePin, Sources, sha256_file

FAST = RetryPolicy(attempts=4, initial=0.001, maximum=0.01, timeout=5)


class FaultServer:
    """Serves ``files`` by path; ``faults[path]`` is a queue of "500", "404", "truncate" consumed per request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.hits: Counter[str] = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                outer.hits[self.path] += 1
                queue = outer.faults.get(self.path) or []
                fault = queue.pop(0) if queue else None
                body = outer.files.get(self.path)
                if fault == "500":
                    self.send_error(500, "injected")
                elif fault == "404" or body is None:
                    self.send_error(404)
                elif fault == "truncate":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body) + 1000))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.stop()


def _pin(name: str, data: bytes, url: str, alternates=()) -> SourcePin:
    return SourcePin(library=f"testlib-{name}", version="1.0", license="MIT", url=url,
                     sha256=hashlib.sha256(data).hexdigest(), filename=f"{name}-1.0.tar.gz",
                     tree_root=f"{name}-1.0/", purl=f"pkg:generic/{name}@1.0", alternates=tuple(alternates))


def _cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_two_500s_then_success_is_retried(server, tmp_path):
    data = os.urandom(200_000)
    pin = _pin("retry", data, "unused")
    server.files["/m/retry-1.0.tar.gz"] = data
    server.faults["/m/retry-1.0.tar.gz"] = ["500", "500"]
    got = Sources(tmp_path / "cache", [server.url + "/m"], retry=FAST).fetch(pin)
    assert server.hits["/m/retry-1.0.tar.gz"] == 3
    assert got.path == tmp_path / "cache" / pin.sha256 / "retry-1.0.tar.gz"
    assert got.path.read_bytes() == data
    assert got.url_used == server.url + "/m/retry-1.0.tar.gz"
    assert got.tree_root == "retry-1.0/" and got.is_primary
    assert _cache_files(tmp_path / "cache") == [f"{pin.sha256}/retry-1.0.tar.gz"]


def test_upstream_url_is_the_last_resort(server, tmp_path):
    data = b"upstream bytes" * 1000
    server.files["/releases/v1.0.tar.gz"] = data
    pin = _pin("up", data, server.url + "/releases/v1.0.tar.gz")
    got = Sources(tmp_path / "cache", [str(tmp_path / "empty-mirror"), server.url + "/nothing"], retry=FAST).fetch(pin)
    assert got.url_used == pin.url
    assert server.hits["/nothing/up-1.0.tar.gz"] == 1  # a 404 is not retried
    assert got.path.read_bytes() == data


def test_wrong_hash_is_a_hard_error_and_not_cached(server, tmp_path):
    good, bad = b"the real release" * 100, b"something else!!" * 100
    pin = _pin("evil", good, server.url + "/upstream/evil.tar.gz")
    server.files["/m/evil-1.0.tar.gz"] = bad
    server.files["/upstream/evil.tar.gz"] = good
    with pytest.raises(SourceError) as err:
        Sources(tmp_path / "cache", [server.url + "/m"], retry=FAST).fetch(pin)
    msg = str(err.value)
    assert "evil-1.0.tar.gz" in msg and pin.sha256 in msg and hashlib.sha256(bad).hexdigest() in msg
    assert server.hits["/m/evil-1.0.tar.gz"] == 1  # a mismatch is never retried
    assert server.hits["/upstream/evil.tar.gz"] == 0  # ... nor papered over by another source
    assert _cache_files(tmp_path / "cache") == []


def test_truncated_transfer_is_never_used(server, tmp_path):
    data = os.urandom(100_000)
    pin = _pin("short", data, "unused")
    server.files["/m/short-1.0.tar.gz"] = data
    server.faults["/m/short-1.0.tar.gz"] = ["truncate"] * 10
    with pytest.raises(SourceError, match="truncated transfer"):
        Sources(tmp_path / "cache", [server.url + "/m"], retry=FAST).fetch(pin)
    assert server.hits["/m/short-1.0.tar.gz"] == FAST.attempts
    assert _cache_files(tmp_path / "cache") == []
    # one short read, then the full file: the retry gets the verified bytes
    server.faults["/m/short-1.0.tar.gz"] = ["truncate"]
    got = Sources(tmp_path / "cache", [server.url + "/m"], retry=FAST).fetch(pin)
    assert sha256_file(got.path) == pin.sha256


def test_cache_hit_needs_no_network(server, tmp_path):
    data = b"cache me" * 5000
    pin = _pin("cached", data, server.url + "/up/cached.tar.gz")
    server.files["/up/cached.tar.gz"] = data
    first = Sources(tmp_path / "cache", [], retry=FAST).fetch(pin)
    server.stop()
    second = Sources(tmp_path / "cache", [server.url + "/gone"], retry=RetryPolicy(attempts=1)).fetch(pin)
    assert second.path == first.path and second.url_used.startswith("cache:")


def test_corrupt_cache_entry_is_replaced(server, tmp_path):
    data = b"fresh" * 1000
    pin = _pin("rot", data, server.url + "/up/rot.tar.gz")
    server.files["/up/rot.tar.gz"] = data
    entry = tmp_path / "cache" / pin.sha256 / pin.filename
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"bit rot")
    got = Sources(tmp_path / "cache", [], retry=FAST).fetch(pin)
    assert got.url_used == pin.url and got.path.read_bytes() == data


def test_http_mirror_serves_an_alternate(server, tmp_path):
    primary, alt = b"primary" * 100, b"alternate" * 100
    pin = _pin("alt", primary, "unused", [Alternate("alt-snapshot.tar.gz", hashlib.sha256(alt).hexdigest(),
                                                    "alt-snap-abc123/")])
    server.files["/m/alt-snapshot.tar.gz"] = alt
    got = Sources(tmp_path / "cache", [server.url + "/m"], retry=FAST).fetch(pin)
    assert (got.filename, got.tree_root, got.is_primary) == ("alt-snapshot.tar.gz", "alt-snap-abc123/", False)
    assert server.hits["/m/alt-1.0.tar.gz"] == 1  # the primary name was asked for first


def test_real_mirror_alternates_are_accepted(tmp_path):
    from recipes.libs import ALL, LIBUV, LLHTTP, MIMALLOC, WOLFSSL

    sources = Sources(tmp_path / "cache", [str(SHARED_SOURCES)], retry=RetryPolicy(attempts=1, timeout=2))
    got = {lib.name: sources.fetch(lib.pin) for lib in ALL}
    assert got["llhttp"].filename == "httptools-0.9.0.tar.gz"
    assert got["llhttp"].tree_root == "httptools-0.9.0/vendor/llhttp/"
    assert got["libuv"].tree_root == "libuv-libuv-48dbd85/" and not got["libuv"].is_primary
    assert got["mimalloc"].tree_root == "cmeel_mimalloc-3.4.3/mimalloc/"
    assert got["wolfssl"].is_primary and got["wolfssl"].sha256 == WOLFSSL.pin.sha256
    for lib in (LIBUV, LLHTTP, MIMALLOC):
        assert got[lib.name].sha256 in {a.sha256 for a in lib.pin.alternates}
    for fetched in got.values():
        assert sha256_file(fetched.path) == fetched.sha256


def test_import_dir_accepts_pinned_files_and_refuses_unknown(tmp_path):
    from recipes.libs import ALL

    pins = [lib.pin for lib in ALL]
    folder = tmp_path / "drop"
    folder.mkdir()
    for name in ("cJSON-1.7.19.tar.gz", "httptools-0.9.0.tar.gz"):
        (folder / name).write_bytes((SHARED_SOURCES / name).read_bytes())
    (folder / "httptools-0.9.1.tar.gz").write_bytes(b"not what was pinned")
    sources = Sources(tmp_path / "cache", [])
    result = sources.import_dir(folder, pins)
    assert sorted(result.imported) == [("cJSON-1.7.19.tar.gz", "cjson 1.7.19"),
                                       ("httptools-0.9.0.tar.gz", "llhttp 9.4.3")]
    assert [f for f, _ in result.refused] == ["httptools-0.9.1.tar.gz"]
    assert "matches no pinned archive" in result.refused[0][1]
    assert sources.import_dir(folder, pins).already and not sources.import_dir(folder, pins).imported
    status = {r["library"]: r for r in sources.status(pins)}
    assert status["cjson"]["cached"] and status["llhttp"]["alternate"] and not status["wolfssl"]["cached"]
    # a cache hit after import needs neither mirror nor network
    assert sources.fetch(next(p for p in pins if p.library == "cjson")).url_used.startswith("cache:")


def test_sources_cli_import_and_list(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"), IMAGEFACTORY_SOURCE_MIRRORS="")
    run = lambda *a: subprocess.run([sys.executable, "-m", "imagefactory", "sources", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    imported = run("import", str(SHARED_SOURCES), "--report", str(tmp_path / "r.json"))
    assert imported.returncode == 0, imported.stderr
    import json

    from recipes.libs import ALL

    data = json.loads((tmp_path / "r.json").read_text())["import"]
    # what the shared folder holds changes as libraries are added: expect what the pins name, refuse the rest
    pinned = {n for lib in ALL for n in (lib.pin.filename, *(a.filename for a in lib.pin.alternates))}
    present = sorted(p.name for p in SHARED_SOURCES.iterdir() if p.is_file())
    assert len(data["imported"]) == len([n for n in present if n in pinned]) >= len(ALL)
    assert sorted(f for f, _ in data["refused"]) == [n for n in present if n not in pinned]
    assert {"README.md", "SHA256SUMS"} <= {f for f, _ in data["refused"]}
    listed = run("list")
    assert listed.returncode == 0 and "cjson" in listed.stdout
    fetched = run("fetch", "cjson", "llhttp")
    assert fetched.returncode == 0, fetched.stderr
    assert "cache:" in fetched.stdout
    assert run("fetch", "nosuchlib").returncode == 2
    from recipes.libs import WOLFSENTRY

    digest = run("digest", str(SHARED_SOURCES / "wolfsentry-1.6.2.tar.gz"), "wolfsentry-1.6.2/")
    assert digest.returncode == 0 and digest.stdout.strip() == WOLFSENTRY.pin.tree_sha256
    wrong = run("digest", str(SHARED_SOURCES / "wolfsentry-1.6.2.tar.gz"), "wolfsentry-1.6.1/")
    assert wrong.returncode == 1 and "nothing below" in wrong.stderr


# --- tree digests: pins whose upstream bytes are unknown ---------------------------------------
def _tar(path: Path, files: dict[str, bytes | tuple], compression: str = "gz", mtime: int = 0,
         order=None, extra_dirs=()) -> Path:
    """A tar archive of ``files`` (name → bytes, or ("x", bytes) executable, or ("l", target) symlink)."""
    import io
    import tarfile

    with tarfile.open(path, f"w:{compression}") as tar:
        for d in extra_dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for name in order or files:
            value = files[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.uid = mtime, f"user{mtime}", mtime
            if isinstance(value, tuple) and value[0] == "l":
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
                continue
            data = value[1] if isinstance(value, tuple) else value
            info.size, info.mode = len(data), 0o755 if isinstance(value, tuple) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


TREE = {"lib-1.0/Makefile": b"all:\n", "lib-1.0/src/a.c": b"int a;\n", "lib-1.0/configure": ("x", b"#!/bin/sh\n"),
        "lib-1.0/link.h": ("l", "src/a.h"), "lib-1.0/src/a.h": b"extern int a;\n"}


def test_tree_digest_ignores_compression_order_and_metadata(tmp_path):
    from imagefactory.sources import tree_digest

    base = tree_digest(_tar(tmp_path / "a.tar.gz", TREE), "lib-1.0/")
    same = _tar(tmp_path / "b.tar.xz", TREE, "xz", mtime=1234567890, order=sorted(TREE, reverse=True),
                extra_dirs=("lib-1.0/", "lib-1.0/empty/"))
    assert tree_digest(same, "lib-1.0") == base  # other compression, times, owners, order, empty dirs
    assert (tmp_path / "a.tar.gz").read_bytes() != same.read_bytes()
    changed = {
        "a byte": {**TREE, "lib-1.0/src/a.c": b"int b;\n"},
        "the exec bit": {**TREE, "lib-1.0/configure": b"#!/bin/sh\n"},
        "a symlink target": {**TREE, "lib-1.0/link.h": ("l", "src/b.h")},
        "a path": {**{k.replace("a.c", "b.c"): v for k, v in TREE.items()}},
        "one more file": {**TREE, "lib-1.0/NEWS": b""},
    }
    digests = {what: tree_digest(_tar(tmp_path / f"{i}.tar.gz", files), "lib-1.0/")
               for i, (what, files) in enumerate(changed.items())}
    assert base not in digests.values() and len(set(digests.values())) == len(digests), digests
    # files outside the root do not count; nothing below the root, a non-tar, unsafe paths are errors
    assert tree_digest(_tar(tmp_path / "o.tar.gz", {**TREE, "other/x": b"x"}), "lib-1.0/") == base
    with pytest.raises(SourceError, match="nothing below"):
        tree_digest(tmp_path / "a.tar.gz", "lib-2.0/")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(SourceError, match="not a readable tar"):
        tree_digest(tmp_path / "junk.tar.gz", "lib-1.0/")
    with pytest.raises(SourceError, match="unsafe path"):
        tree_digest(_tar(tmp_path / "u.tar.gz", {"lib-1.0/../../etc/x": b""}), "lib-1.0/")


def _tree_pin(name: str, tree_sha: str, url: str, alternates=()) -> SourcePin:
    return SourcePin(library=f"testlib-{name}", version="1.0", license="MIT", url=url, sha256=None,
                     tree_sha256=tree_sha, filename=f"{name}-1.0.tar.gz", tree_root="lib-1.0/",
                     purl=f"pkg:generic/{name}@1.0", alternates=tuple(alternates))


def test_tree_pinned_upstream_archive_is_verified_by_its_tree(server, tmp_path):
    from imagefactory.sources import tree_digest

    local = _tar(tmp_path / "local.tar.gz", TREE)
    upstream = _tar(tmp_path / "upstream.tar.xz", TREE, "xz", mtime=99)  # other bytes, same tree
    digest = tree_digest(local, "lib-1.0/")
    pin = _tree_pin("tree", digest, server.url + "/archive/v1.0.tar.gz",
                    [Alternate("tree-1.0.tar.gz", sha256_file(local), "lib-1.0/")])
    server.files["/archive/v1.0.tar.gz"] = upstream.read_bytes()
    got = Sources(tmp_path / "cache", [server.url + "/empty"], retry=FAST).fetch(pin)
    assert got.tree_verified and got.is_primary and got.url_used == pin.url
    assert got.sha256 == sha256_file(upstream) and got.tree_root == "lib-1.0/"
    assert got.path == tmp_path / "cache" / f"tree-{digest}" / "tree-1.0.tar.gz"
    assert json.loads(got.path.with_name("tree-1.0.tar.gz.verified").read_text())["sha256"] == got.sha256
    # a cache hit re-checks the bytes against the verified digest, with no network
    server.files.clear()
    again = Sources(tmp_path / "cache", [], retry=FAST).fetch(pin)
    assert again.url_used.startswith("cache:") and again.tree_verified and again.sha256 == got.sha256
    got.path.write_bytes(got.path.read_bytes()[:-1])  # bit rot: dropped, and upstream is gone now
    with pytest.raises(SourceError, match="no source archive found"):
        Sources(tmp_path / "cache", [], retry=FAST).fetch(pin)
    assert not got.path.exists()
    # the local copy (same file name as upstream's) is accepted by its sha256, as an alternate
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tree-1.0.tar.gz").write_bytes(local.read_bytes())
    alt = Sources(tmp_path / "cache2", [str(mirror)], retry=FAST).fetch(pin)
    assert not alt.tree_verified and not alt.is_primary and alt.sha256 == sha256_file(local)


def test_tree_mismatch_is_a_hard_error_and_not_cached(server, tmp_path):
    from imagefactory.sources import tree_digest

    digest = tree_digest(_tar(tmp_path / "good.tar.gz", TREE), "lib-1.0/")
    evil = _tar(tmp_path / "evil.tar.gz", {**TREE, "lib-1.0/src/a.c": b"int backdoor;\n"})
    pin = _tree_pin("treebad", digest, server.url + "/archive/v1.0.tar.gz")
    server.files["/archive/v1.0.tar.gz"] = evil.read_bytes()
    with pytest.raises(SourceError) as err:
        Sources(tmp_path / "cache", [], retry=FAST).fetch(pin)
    msg = str(err.value)
    assert "its tree does not match" in msg and digest in msg and tree_digest(evil, "lib-1.0/") in msg
    assert server.hits["/archive/v1.0.tar.gz"] == 1
    assert _cache_files(tmp_path / "cache") == []
    with pytest.raises(ValueError, match="has no sha256"):
        SourcePin(library="x", version="1", license="MIT", url="u", sha256=None, filename="x.tar.gz",
                  tree_root="x/", purl="pkg:generic/x@1")


def test_real_wolf_pins_match_their_trees_and_import_by_tree(tmp_path):
    """The pinned tree digests are those of the mirror's `git archive` copies; an upstream-style
    re-pack under another name (what `curl -LO .../v1.6.2.tar.gz` saves) imports by its tree."""
    import tarfile

    from imagefactory.sources import tree_digest
    from recipes.libs import WOLFCLU, WOLFSENTRY

    for lib in (WOLFSENTRY, WOLFCLU):
        (alt,) = lib.pin.alternates
        assert tree_digest(SHARED_SOURCES / alt.filename, alt.tree_root) == lib.pin.tree_sha256
    drop = tmp_path / "drop"
    drop.mkdir()
    with tarfile.open(SHARED_SOURCES / "wolfsentry-1.6.2.tar.gz") as src, \
            tarfile.open(drop / "v1.6.2.tar.xz", "w:xz", preset=0) as out:
        for m in src:
            m.mtime, m.uname = 0, "someone"
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
    sources = Sources(tmp_path / "cache", [])
    result = sources.import_dir(drop, [WOLFSENTRY.pin, WOLFCLU.pin])
    assert result.imported == [("v1.6.2.tar.xz", "wolfsentry 1.6.2")], result
    got = sources.fetch(WOLFSENTRY.pin)
    assert got.tree_verified and got.url_used.startswith("cache:") and got.filename == "wolfsentry-1.6.2.tar.gz"
    assert sources.import_dir(drop, [WOLFSENTRY.pin]).already
    status = {r["library"]: r for r in sources.status([WOLFSENTRY.pin, WOLFCLU.pin])}
    assert status["wolfsentry"]["cached"] and not status["wolfclu"]["cached"]
