"""Fetching pinned archives against a real local HTTP server with injected faults, and the real mirror files."""

from __future__ import annotations

import hashlib
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
    assert sources.fetch(pins[3]).url_used.startswith("cache:")


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
