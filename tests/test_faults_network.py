"""Network faults: a flaky HTTP mirror, a flaky registry in front of a real one, an unreachable apt mirror.

Transient failures (5xx, resets, stalls, truncation) are retried with backoff and then given up
on with a message naming what was tried; non-transient ones (404, authentication, a hash
mismatch) fail at once. Nothing half-downloaded is ever kept.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from faultserver import FaultServer
from registry import local_registry

from conftest import REPO, wait_for_text_in_logs
from imagefactory.buildah import Buildah, BuildahError, StorageOptions
from imagefactory.sources import RetryPolicy, SourceError, SourcePin, Sources

pytestmark = pytest.mark.faults

FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, timeout=0.5)
DATA = b"archive bytes " * 5000


@pytest.fixture
def mirror():
    s = FaultServer(stall_seconds=2.0)
    s.files["/lib-1.0.tar.gz"] = DATA
    yield s
    s.stop()


def _pin(url: str) -> SourcePin:
    return SourcePin(library="flaky", version="1.0", license="MIT", url=url, sha256=hashlib.sha256(DATA).hexdigest(),
                     filename="lib-1.0.tar.gz", tree_root="lib-1.0/", purl="pkg:generic/flaky@1.0")


def _sources(tmp_path: Path, mirror: FaultServer) -> Sources:
    return Sources(tmp_path / "cache", [mirror.url], retry=FAST)


def _cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


@pytest.mark.parametrize("faults", [["503"], ["503", "500"], ["reset"], ["stall"], ["stall-body"],
                                    ["truncate"], ["reset", "truncate"]])
def test_transient_mirror_faults_are_retried_then_succeed(tmp_path, mirror, faults):
    mirror.faults["/lib-1.0.tar.gz"] = list(faults)
    started = time.monotonic()
    got = _sources(tmp_path, mirror).fetch(_pin("https://upstream.invalid/lib-1.0.tar.gz"))
    assert got.path.read_bytes() == DATA
    assert mirror.hits["/lib-1.0.tar.gz"] == len(faults) + 1
    assert _cache_files(tmp_path) == ["lib-1.0.tar.gz"]  # no .partial-* left from the failed tries
    assert time.monotonic() - started < 2.0 * len(faults) + 3  # stalls are cut off by the timeout


def test_persistent_5xx_gives_up_after_the_attempts_and_names_every_url(tmp_path, mirror):
    mirror.faults["/lib-1.0.tar.gz"] = ["503"] * 10
    mirror.faults["/upstream/lib-1.0.tar.gz"] = ["502"] * 10
    with pytest.raises(SourceError) as err:
        _sources(tmp_path, mirror).fetch(_pin(mirror.url + "/upstream/lib-1.0.tar.gz"))
    text = str(err.value)
    assert mirror.hits["/lib-1.0.tar.gz"] == FAST.attempts
    assert mirror.hits["/upstream/lib-1.0.tar.gz"] == FAST.attempts
    assert "HTTP 503, after 3 attempts" in text and "HTTP 502, after 3 attempts" in text
    assert "flaky 1.0" in text and "source_mirrors" in text
    assert _cache_files(tmp_path) == []


@pytest.mark.parametrize("status, words", [("404", "HTTP 404"), ("401", "authentication refused, not retried"),
                                           ("403", "authentication refused, not retried")])
def test_non_transient_http_errors_are_not_retried(tmp_path, mirror, status, words):
    mirror.faults["/lib-1.0.tar.gz"] = [status] * 10
    with pytest.raises(SourceError) as err:
        _sources(tmp_path, mirror).fetch(_pin(mirror.url + "/lib-1.0.tar.gz"))
    assert mirror.hits["/lib-1.0.tar.gz"] == 2  # once as the mirror, once as upstream: no retries
    assert words in str(err.value)


def test_hash_mismatch_fails_at_once_and_keeps_nothing(tmp_path, mirror):
    mirror.files["/lib-1.0.tar.gz"] = DATA[:-1] + b"X"
    with pytest.raises(SourceError, match="sha256 mismatch"):
        _sources(tmp_path, mirror).fetch(_pin("https://upstream.invalid/lib-1.0.tar.gz"))
    assert mirror.hits["/lib-1.0.tar.gz"] == 1
    assert _cache_files(tmp_path) == []


def test_download_killed_midway_leaves_nothing_the_next_fetch_keeps(tmp_path, mirror):
    """kill -9 of a process in the middle of a download: the next fetch removes its partial file."""
    mirror.stall_seconds = 60
    mirror.faults["/lib-1.0.tar.gz"] = ["stall-body"]
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        from imagefactory.sources import Sources, RetryPolicy, SourcePin
        pin = SourcePin(library="flaky", version="1.0", license="MIT", url="https://upstream.invalid/x",
                        sha256={hashlib.sha256(DATA).hexdigest()!r}, filename="lib-1.0.tar.gz",
                        tree_root="lib-1.0/", purl="pkg:generic/flaky@1.0")
        Sources({str(tmp_path / 'cache')!r}, [{mirror.url!r}], retry=RetryPolicy(attempts=1, timeout=120)).fetch(pin)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 20
    while time.time() < deadline and not list((tmp_path / "cache").glob(".partial-*")):
        time.sleep(0.05)
    time.sleep(0.3)
    partial = list((tmp_path / "cache").glob(".partial-*"))
    assert partial and partial[0].stat().st_size > 0, "the download should be midway"
    proc.kill()
    proc.wait()
    assert list((tmp_path / "cache").glob(".partial-*")) == partial  # kill -9 ran no cleanup
    got = _sources(tmp_path, mirror).fetch(_pin("https://upstream.invalid/lib-1.0.tar.gz"))
    assert got.path.read_bytes() == DATA
    assert _cache_files(tmp_path) == ["lib-1.0.tar.gz"]


# --- registries: pulls and pushes through real buildah ------------------------------------------
@pytest.fixture
def flaky_registry(tmp_path, store):
    """A real registry holding one small image, behind a proxy that injects faults."""
    with local_registry(tmp_path / "registry") as reg:
        bd = ["buildah", *store.args()]
        ctr = subprocess.run([*bd, "from", "scratch"], capture_output=True, text=True, check=True).stdout.strip()
        (tmp_path / "hello.txt").write_text("hello\n")
        subprocess.run([*bd, "copy", ctr, str(tmp_path / "hello.txt"), "/hello.txt"], check=True, capture_output=True)
        subprocess.run([*bd, "commit", "--quiet", ctr, "localhost/flaky-src:latest"], check=True, capture_output=True)
        subprocess.run([*bd, "rm", ctr], capture_output=True)
        subprocess.run([*bd, "push", "--tls-verify=false", "localhost/flaky-src:latest",
                        f"docker://{reg.host}/flaky/hello:1"], check=True, capture_output=True)
        subprocess.run([*bd, "rmi", "localhost/flaky-src:latest"], check=True, capture_output=True)
        proxy = FaultServer(upstream=reg.url, stall_seconds=1.0)
        try:
            yield store, proxy
        finally:
            proxy.stop()


def _buildah(store, attempts: int = 3) -> Buildah:
    return Buildah(StorageOptions(str(store.root), str(store.runroot)),
                   retry=RetryPolicy(attempts=attempts, initial=0.05, maximum=0.2))


@pytest.mark.buildah
def test_pull_retries_5xx_then_succeeds(flaky_registry):
    store, proxy = flaky_registry
    proxy.every = ["503"]
    with pytest.raises(BuildahError, match="gave up after 1 attempts"):  # without retries one 503 is fatal
        _buildah(store, attempts=1).pull(f"{proxy.host}/flaky/hello:1", tls_verify=False)
    proxy.every = ["503", "503"]
    image_id = _buildah(store, attempts=3).pull(f"{proxy.host}/flaky/hello:1", tls_verify=False)
    assert proxy.every == []  # both 503s were served, then the pull went through
    pulled = [r for r in store.buildah().images() if any(n.endswith("flaky/hello:1") for n in r.names)]
    assert [r.id for r in pulled] == [image_id.removeprefix("sha256:")]


@pytest.mark.buildah
def test_pull_gives_up_on_persistent_5xx_with_the_attempt_count(flaky_registry):
    store, proxy = flaky_registry
    proxy.every = ["503"] * 100
    with pytest.raises(BuildahError) as err:
        _buildah(store, attempts=3).pull(f"{proxy.host}/flaky/hello:1", tls_verify=False)
    assert "gave up after 3 attempts" in err.value.stderr_tail and "503" in err.value.stderr_tail


@pytest.mark.buildah
def test_pull_of_a_missing_image_or_with_bad_credentials_fails_at_once(flaky_registry):
    store, proxy = flaky_registry
    with pytest.raises(BuildahError) as err:
        _buildah(store, attempts=5).pull(f"{proxy.host}/flaky/nothing:1", tls_verify=False)
    assert "not retried" in err.value.stderr_tail
    manifests = sum(n for p, n in proxy.hits.items() if "/manifests/" in p)
    assert manifests <= 2  # one attempt (buildah may ask by tag and by digest), not five
    proxy.hits.clear()
    proxy.every = ["401"] * 100
    t0 = time.monotonic()
    with pytest.raises(BuildahError) as err:
        _buildah(store, attempts=5).pull(f"{proxy.host}/flaky/hello:1", tls_verify=False)
    assert "not retried" in err.value.stderr_tail and time.monotonic() - t0 < 5


@pytest.mark.buildah
def test_push_retries_through_resets(flaky_registry, tmp_path):
    store, proxy = flaky_registry
    bd = _buildah(store)
    bd.pull(f"{proxy.host}/flaky/hello:1", tls_verify=False)
    proxy.every = ["reset", "503"]
    digest = bd.push(f"{proxy.host}/flaky/hello:1", f"docker://{proxy.host}/flaky/copy:1", tls_verify=False)
    assert digest.startswith("sha256:")


# --- apt against an unreachable mirror, inside a real Debian image -------------------------------
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.buildah
@pytest.mark.xdist_group("e2e")
def test_install_against_an_unreachable_apt_mirror_fails_clearly(e2e_store, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = tmp_path / "apt_down.py"
    recipe.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run, Install
        class AptDown(Recipe):
            '''a Debian image whose mirror is down'''
            name = "fault-apt-down"
            base = "slim"
            def steps(self):
                yield Run("printf 'Types: deb\\\\nURIs: http://127.0.0.1:{port}/debian\\\\nSuites: trixie\\\\n"
                          "Components: main\\\\n' > /etc/apt/sources.list.d/debian.sources; rm -f /etc/apt/sources.list")
                yield Install("hello")
    """))
    report = tmp_path / "report.json"
    # a hang guard, not a timing claim: apt gives up on a refused port at once (3 retries)
    proc = e2e_store.cli("build", "fault-apt-down", "--report", str(report), check=False, timeout=1800,
                         env=e2e_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1, err[-3000:]
    assert "fault-apt-down: step 2 failed" in err and "apt-get update" in err
    assert f"127.0.0.1:{port}" in err  # the tail shows apt's own message
    assert "package mirror" in err and "debian_mirror" in err  # and what to do about it
    assert json.loads(report.read_text())["failed"]["image"] == "fault-apt-down"
    assert e2e_store.containers() == []


def _needs_base(folder: Path, name: str) -> Path:
    """A recipe on the full Debian base, so building it starts with the bootstrap."""
    recipe = folder / "needs_base.py"
    recipe.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run
        class NeedsBase(Recipe):
            '''anything on the full Debian base'''
            name = "{name}"
            base = "full"
            def steps(self):
                yield Run("true")
    """))
    return recipe


@pytest.mark.buildah
def test_bootstrap_from_an_unreachable_mirror_retries_then_fails_clearly(store, tmp_path):
    """The base's bootstrap is network-bound too: retried on mirror errors, then a message with the fix."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = _needs_base(tmp_path, "fault-needs-base")
    env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), IMAGEFACTORY_DEBIAN_MIRROR=f"http://127.0.0.1:{port}/debian",
                    IMAGEFACTORY_NETWORK_RETRIES="2", IMAGEFACTORY_NETWORK_RETRY_DELAY="0")
    report = tmp_path / "report.json"
    proc = store.cli("build", "fault-needs-base", "--report", str(report), check=False, env=env)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1, err[-3000:]
    assert "imagefactory-base-debian-full: step 1 failed" in err and f"127.0.0.1:{port}" in err
    assert "package mirror could not be reached" in err and "debian_mirror" in err
    log = Path(json.loads(report.read_text())["failed"]["log"]).read_text()
    assert log.count(f"127.0.0.1:{port}/debian/dists") >= 2  # tried twice (network_retries=2)
    assert store.containers() == []


@pytest.mark.buildah
def test_sigterm_during_the_bootstrap_stops_it_at_once(store, tmp_path):
    """mmdebstrap runs through the wrapper's process plumbing: cancelling the build cancels it too."""
    import signal

    recipe = _needs_base(tmp_path, "fault-bootstrap-cancel")
    env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe))
    proc = subprocess.Popen([sys.executable, "-m", "imagefactory", "build", "fault-bootstrap-cancel", *store.args()],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the bootstrap must be downloading when the signal comes, or the test proves nothing
    wait_for_text_in_logs(store.home / "cache" / "imagefactory" / "logs", "I: running apt-get update", proc,
                          timeout=120, pattern="*bootstrap*.log")
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - t0 < 10, "the bootstrap ran on after the build was cancelled"
    assert store.containers() == []
    assert [c for c in _cmdlines() if str(store.root) in c and "bootstrap" in c] == []


def _cmdlines() -> list[str]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out
