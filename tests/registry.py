"""A throwaway OCI registry for tests: Debian's ``docker-registry`` on a free 127.0.0.1 port.

    with local_registry(tmp_path) as reg:
        reg.host            # "127.0.0.1:PORT" (plain HTTP; cosign/buildah treat loopback as insecure)
        reg.url             # "http://127.0.0.1:PORT"

The registry keeps its blobs in a folder under the given directory and is stopped (and waited for)
however the block ends. Tests that use it must fail, not skip, when the binary is missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARY = "docker-registry"

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: {delete}
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Registry:
    host: str
    root: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary() -> str:
    found = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path("/usr/bin", BINARY).exists() else None)
    if not found:
        pytest.fail(f"{BINARY} is not installed: run ci/setup (apt-get install docker-registry)")
    return found


@contextmanager
def local_registry(workdir: Path, timeout: float = 20.0, *, delete: bool = True) -> Iterator[Registry]:
    """Start a registry storing into ``workdir/registry``; yield once ``/v2/`` answers; stop it after.
    ``delete=False``: a registry that refuses manifest deletes (HTTP 405), as many hosted ones do."""
    binary = _binary()
    workdir = Path(workdir)
    root = workdir / "registry-data"
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        config = workdir / "registry.yml"
        config.write_text(CONFIG.format(root=root, port=port, delete=str(delete).lower()))
        log = workdir / "registry.log"
        logf = open(log, "ab")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            if _wait_ready(proc, f"http://127.0.0.1:{port}/v2/", timeout):
                try:
                    yield Registry(f"127.0.0.1:{port}", root, log)
                finally:
                    _stop(proc)
                return
            _stop(proc)
        finally:
            logf.close()
        if attempt == 2:
            raise AssertionError(f"docker-registry did not answer on 127.0.0.1:{port}:\n{log.read_text()[-3000:]}")


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # exited: port taken, bad config
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def registry(tmp_path) -> Iterator[Registry]:
    with local_registry(tmp_path) as reg:
        yield reg
