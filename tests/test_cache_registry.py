"""The registry step cache client against real buildah, skopeo and Debian's docker-registry on
127.0.0.1: entries survive the round trip with their image ID, lookups are one manifest request,
mislabelled entries are misses, a registry that is down or slow never hangs a build, prune deletes
through the registry API and says when the registry refuses."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from imagefactory.cache_registry import RegistryCache, RegistryCacheError, repository
from imagefactory.retry import RetryPolicy

try:
    from conftest import make_busybox_base, new_store, require_tool
    from faultserver import FaultServer
    from registry import free_port, local_registry
except ImportError:  # tests/ made a package
    from tests.conftest import make_busybox_base, new_store, require_tool
    from tests.faultserver import FaultServer
    from tests.registry import free_port, local_registry

KEY_A = "a" * 63 + "1"
KEY_B = "b" * 63 + "2"
FAST = RetryPolicy(attempts=2, initial=0.1, maximum=0.2)


def test_cache_references_must_be_repositories():
    assert repository("docker://127.0.0.1:5000/team/cache") == "127.0.0.1:5000/team/cache"
    assert repository("registry.example.com/imagefactory-cache") == "registry.example.com/imagefactory-cache"
    for bad, hint in [("registry.example.com/cache:latest", "drop the tag"), ("cache", "name the registry host"),
                      ("reg.example/c@sha256:" + "0" * 64, "drop the tag or digest"), ("reg.example/UPPER", "")]:
        with pytest.raises(RegistryCacheError, match="is not a repository") as err:
            RegistryCache([bad])
        assert hint in str(err.value) and bad in str(err.value)


def _commit_entry(store, text: str) -> str:
    """A committed step-cache image with a file of its own (like one step of a build)."""
    bd = ["buildah", *store.args()]
    ctr = subprocess.run([*bd, "from", "--pull-never", "localhost/imagefactory-test-busybox:latest"],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run([*bd, "run", "--isolation", "chroot", ctr, "--", "sh", "-c", f"echo {text} > /entry"],
                       check=True, capture_output=True)
        out = subprocess.run([*bd, "commit", "--quiet", "--timestamp", "0", ctr], capture_output=True, text=True,
                             check=True).stdout
    finally:
        subprocess.run([*bd, "rm", ctr], capture_output=True)
    return out.strip().removeprefix("sha256:")


@pytest.fixture(scope="module")
def source():
    """A store holding the busybox base plus one committed entry, and a registry that has it pushed."""
    require_tool("skopeo")
    store = new_store("regcache")
    try:
        make_busybox_base(store)
        entry_id = _commit_entry(store, "one")
        yield store, entry_id
    finally:
        store.destroy()


@pytest.fixture
def empty_store():
    s = new_store("regcache-empty")
    yield s
    s.destroy()


def _cache(reg, **kw) -> RegistryCache:
    warnings: list[str] = []
    kw.setdefault("retry", FAST)
    cache = RegistryCache([f"{reg.host}/team/cache"], f"{reg.host}/team/cache", tls_verify=False,
                          warn=warnings.append, **kw)
    cache.warnings = warnings  # type: ignore[attr-defined]
    return cache


@pytest.mark.buildah
def test_round_trip_keeps_the_image_id_and_lookup_is_one_manifest_request(source, empty_store, tmp_path):
    store, entry_id = source
    with local_registry(tmp_path) as reg:
        proxy = FaultServer(upstream=reg.url)
        try:
            pusher = _cache(reg)
            assert pusher.lookup(KEY_A) is None  # nothing there yet: a plain miss, no warning
            assert pusher.warnings == []
            digest = pusher.push(KEY_A, entry_id, store.buildah())
            assert digest and digest.startswith("sha256:")
            assert not [i for i in store.buildah().images() if any("push-list" in n for n in i.names)], \
                "the temporary index must not stay in the store"
            # a fresh runner: an empty store looking through a counting proxy
            fresh = RegistryCache([f"{proxy.host}/team/cache"], tls_verify=False, retry=FAST)
            proxy.hits.clear()
            entry = fresh.lookup(KEY_A)
            assert entry is not None and entry.image_id == entry_id and entry.digest == digest
            assert sum(proxy.hits.values()) <= 2 and not any("/blobs/" in p for p in proxy.hits), proxy.hits
            assert [p for p in proxy.hits if "/manifests/" in p] == [f"/v2/team/cache/manifests/{KEY_A}"]
            assert empty_store.buildah().images() == [], "a lookup never pulls"
            pulled = fresh.pull(entry, empty_store.buildah(), "localhost/imagefactory-cache:" + KEY_A[:40])
            assert pulled == entry_id
            assert empty_store.buildah().image_index()["localhost/imagefactory-cache:" + KEY_A[:40]] == entry_id
            # the pulled image is the same image: its file is there
            out = subprocess.run(["buildah", *empty_store.args(), "inspect", "--format", "{{.FromImageID}}",
                                  "localhost/imagefactory-cache:" + KEY_A[:40]], capture_output=True, text=True)
            assert out.stdout.strip() == entry_id
        finally:
            proxy.stop()


@pytest.mark.buildah
def test_mislabelled_entry_is_a_miss_with_a_warning(source, tmp_path):
    store, entry_id = source
    with local_registry(tmp_path) as reg:
        cache = _cache(reg)
        assert cache.push(KEY_A, entry_id, store.buildah())
        # the same index re-tagged under another key: its label no longer matches the tag
        subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                        f"docker://{reg.host}/team/cache:{KEY_A}", f"docker://{reg.host}/team/cache:{KEY_B}"],
                       check=True, capture_output=True)
        # and a plain image (no index, no label) under a third key
        plain = "c" * 64
        store.buildah().push(entry_id, f"docker://{reg.host}/team/cache:{plain}", tls_verify=False)
        assert cache.lookup(KEY_B) is None
        assert cache.lookup(plain) is None
        assert len(cache.warnings) == 2
        assert f"{reg.host}/team/cache:{KEY_B[:16]}" in cache.warnings[0] and "labelled with key" in cache.warnings[0]
        assert "carries no imagefactory cache key label" in cache.warnings[1]
        assert cache.lookup(KEY_A) is not None
        strict = _cache(reg, required=True)
        with pytest.raises(RegistryCacheError, match="cache-required"):
            strict.lookup(KEY_B)


def test_registry_down_falls_back_quickly_and_warns_once():
    repo = f"127.0.0.1:{free_port()}/team/cache"
    warnings: list[str] = []
    cache = RegistryCache([repo], tls_verify=False, retry=FAST, warn=warnings.append, timeout=5)
    started = time.monotonic()
    assert cache.lookup(KEY_A) is None
    assert cache.lookup(KEY_B) is None  # the registry is not asked again this run
    assert time.monotonic() - started < 20
    assert len(warnings) == 1, warnings
    assert repo in warnings[0] and "unreachable after 2 attempts" in warnings[0] and "steps are built" in warnings[0]
    strict = RegistryCache([repo], tls_verify=False, retry=FAST, required=True, timeout=5)
    with pytest.raises(RegistryCacheError, match=f"cache registry {repo}.*cache-required"):
        strict.lookup(KEY_A)


def test_slow_registry_is_bounded_by_the_timeout():
    """A registry that accepts connections and never answers: the lookup gives up, it does not hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        warnings: list[str] = []
        repo = f"127.0.0.1:{listener.getsockname()[1]}/team/cache"
        cache = RegistryCache([repo], tls_verify=False, retry=FAST, warn=warnings.append, timeout=2)
        started = time.monotonic()
        assert cache.lookup(KEY_A) is None
        assert time.monotonic() - started < 2 * (2 + 5) + 2
        assert len(warnings) == 1 and repo in warnings[0]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.buildah
@pytest.mark.parametrize("port", ["40412", "34041"])
def test_a_port_with_404_in_it_is_not_a_missing_entry(tmp_path, port):
    """skopeo's timeout text names the port; ``:40412`` once read as HTTP 404 (a silent miss, no warning)."""
    skopeo = tmp_path / "skopeo"
    skopeo.write_text("#!/bin/sh\necho 'time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"pinging container registry "
                      f"127.0.0.1:{port}: Get \\\"http://127.0.0.1:{port}/v2/\\\": context deadline exceeded\"' >&2\nexit 1\n")
    skopeo.chmod(0o755)
    warnings: list[str] = []
    repo = f"127.0.0.1:{port}/team/cache"
    cache = RegistryCache([repo], tls_verify=False, retry=FAST, warn=warnings.append, timeout=2, skopeo=str(skopeo))
    assert cache.lookup(KEY_A) is None
    assert len(warnings) == 1 and "unreachable" in warnings[0] and repo in warnings[0]


def test_transient_registry_errors_are_retried(source, tmp_path):
    store, entry_id = source
    with local_registry(tmp_path) as reg:
        assert _cache(reg).push(KEY_A, entry_id, store.buildah())
        proxy = FaultServer(upstream=reg.url)
        try:
            proxy.faults[f"/v2/team/cache/manifests/{KEY_A}"] = ["503"]
            warnings: list[str] = []
            cache = RegistryCache([f"{proxy.host}/team/cache"], tls_verify=False, retry=FAST, warn=warnings.append)
            assert cache.lookup(KEY_A) is not None
            assert warnings == []
        finally:
            proxy.stop()


@pytest.mark.buildah
def test_failed_push_is_a_warning_or_with_required_an_error(source):
    store, entry_id = source
    repo = f"127.0.0.1:{free_port()}/team/cache"
    warnings: list[str] = []
    store_bd = store.buildah()
    store_bd.retry = FAST
    cache = RegistryCache([], repo, tls_verify=False, retry=FAST, warn=warnings.append)
    assert cache.push_async(KEY_A, entry_id, store_bd).result(timeout=120) is None
    assert cache.wait() == [None]
    assert len(warnings) == 1 and f"could not push cache entry {repo}:{KEY_A}" in warnings[0]
    assert "the build result stands" in warnings[0] and cache.stats["push_failures"] == 1, warnings
    assert "check that 127.0.0.1" in warnings[0], warnings
    strict = RegistryCache([], repo, tls_verify=False, retry=FAST, required=True)
    strict.push_async(KEY_A, entry_id, store_bd)
    with pytest.raises(RegistryCacheError, match="cache-required"):
        strict.wait()


@pytest.mark.buildah
def test_prune_deletes_unreachable_entries_and_reports_refusal(source, tmp_path):
    store, entry_id = source
    with local_registry(tmp_path / "open") as reg:
        cache = _cache(reg)
        for key in (KEY_A, KEY_B):
            assert cache.push(key, entry_id, store.buildah())
        store.buildah().push(entry_id, f"docker://{reg.host}/team/cache:latest", tls_verify=False)
        result = cache.prune([KEY_A])
        assert result.deleted == [KEY_B] and result.refused is None and result.failed == []
        tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{reg.host}/team/cache"],
                              capture_output=True, text=True, check=True).stdout
        assert KEY_A in tags and KEY_B not in tags and "latest" in tags, "only cache-key tags are pruned"
        assert cache.lookup(KEY_B) is None and cache.warnings == []
    with local_registry(tmp_path / "closed", delete=False) as reg:
        cache = _cache(reg)
        assert cache.push(KEY_B, entry_id, store.buildah())
        result = cache.prune([], repo=f"{reg.host}/team/cache")
        assert result.deleted == [] and result.refused
        assert f"registry {reg.host}/team/cache refuses deletes" in result.refused
        assert "storage.delete.enabled" in result.refused



def test_cli_config_and_environment_set_the_registry_cache(tmp_path, monkeypatch):
    from imagefactory import cli, config

    monkeypatch.chdir(tmp_path)
    args = cli.parser().parse_args(["build", "ci", "--cache-from", "reg.example/a", "--cache-from", "reg.example/b",
                                    "--cache-to", "reg.example/a", "--cache-required", "--tls-verify=false",
                                    "--authfile", "auth.json"])
    s = cli.settings_from(args)
    assert s.cache_from == ["reg.example/a", "reg.example/b"] and s.cache_to == "reg.example/a"
    assert s.cache_required is True and s.tls_verify is False and s.authfile == str(tmp_path / "auth.json")
    cache = RegistryCache.from_settings(s)
    assert cache.from_repos == ["reg.example/a", "reg.example/b"] and cache.required
    (tmp_path / "imagefactory.yaml").write_text("cache_from: [reg.example/team/cache]\ncache_to: reg.example/team/cache\n")
    s = config.load(env={"IMAGEFACTORY_CACHE_REQUIRED": "yes", "IMAGEFACTORY_TLS_VERIFY": "false"})
    assert (s.cache_from, s.cache_to, s.cache_required, s.tls_verify) == (
        ["reg.example/team/cache"], "reg.example/team/cache", True, False)
    s = config.load(env={"IMAGEFACTORY_CACHE_FROM": "r.example/x r.example/y"})
    assert s.cache_from == ["r.example/x", "r.example/y"]
    assert RegistryCache.from_settings(config.load(str(tmp_path / "imagefactory.yaml"), env={})) is not None
    (tmp_path / "imagefactory.yaml").unlink()
    assert RegistryCache.from_settings(config.load(env={})) is None


def test_cli_names_a_bad_cache_reference_in_one_line(tmp_path):
    import os
    import sys

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "imagefactory", "build", "ci", "--cache-from",
                           "registry.example.com/cache:latest", "--root", str(tmp_path / "root"),
                           "--runroot", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "--cache-from 'registry.example.com/cache:latest' is not a repository" in lines[0]
    assert "drop the tag" in lines[0]
