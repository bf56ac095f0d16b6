"""The one phase before building that does I/O: fetch and verify sources, check patches,
digest input files, read host facts (Debian mirror, git revision, the host CA bundle).

Each step's :meth:`~imagefactory.steps.Step.prepare` returns the step with its inputs resolved;
rendering afterwards touches no network, no host tools and no buildah. Problems of all images
are collected and reported together, each naming its recipe and step.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .recipe import Recipe, RecipeError
from .steps import Step, StepError


# The host's CA bundle is bind-mounted here into RUN steps (never committed) when `trust_host_ca` is on.
HOST_CA_TARGET = "/run/imagefactory/host-ca.crt"
HOST_CA_ENV = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
               "GIT_SSL_CAINFO")


class PrepareError(RecipeError):
    """Inputs of the plan cannot be resolved: a missing file, an unverifiable source, a bad patch."""


# --- file digests: bytes, not mtimes; memoised by stat so unchanged files are not re-read ------------
class FileDigests:
    def __init__(self, memo_path: Path | None = None):
        self.memo_path = memo_path
        self._memo: dict[str, list] = {}
        self._lock = threading.Lock()
        self._dirty = False
        if memo_path and memo_path.is_file():
            try:
                self._memo = json.loads(memo_path.read_text())
            except (OSError, ValueError):
                self._memo = {}

    def file(self, path: Path) -> str:
        st = path.stat()
        sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode]
        key = str(path)
        with self._lock:
            hit = self._memo.get(key)
            if hit and hit[0] == sig:
                return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._memo[key] = [sig, digest]
            self._dirty = True
        return digest

    def tree(self, path: Path) -> str:
        """Digest of a file or folder: relative names, the executable bit, symlink targets and bytes."""
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(path)
        if path.is_file():
            mode = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
            return hashlib.sha256(f"{mode}:{self.file(path)}".encode()).hexdigest()
        h = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("node_modules", "__pycache__", ".git"))
            for name in sorted(files):
                p = Path(root, name)
                rel = p.relative_to(path).as_posix()
                if p.is_symlink():
                    h.update(f"L {rel} {os.readlink(p)}\n".encode())
                else:
                    mode = "x" if p.stat().st_mode & stat.S_IXUSR else "-"
                    h.update(f"F {rel} {mode} {self.file(p)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        if self.memo_path and self._dirty:
            tmp = self.memo_path.with_name(f".{self.memo_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._memo))
            tmp.replace(self.memo_path)
            self._dirty = False


@dataclass
class StepInputs:
    """The :class:`~imagefactory.steps.PrepareContext` one recipe's steps are prepared with."""

    settings: Settings
    recipe: type[Recipe]
    digests: FileDigests

    def resolve_file(self, rel: str) -> Path:
        path = Path(rel)
        if not path.is_absolute():
            path = self.recipe.recipe_dir() / rel
        if not path.exists():
            raise StepError(f"recipe {self.recipe.name!r}: file {rel!r} not found (looked at {path}); "
                            "paths in Copy() are relative to the recipe's own folder")
        return path

    def digest(self, path: Path) -> str:
        return self.digests.tree(path)

    def file_digest(self, path: Path) -> str:
        return self.digests.file(path)


@dataclass(frozen=True)
class HostFacts:
    """What the build reads from the host besides step inputs; part of the plan value."""

    revision: str | None  # git HEAD of the recipes' checkout (org.opencontainers.image.revision)
    source: str | None  # its origin URL, or the `source` setting
    host_ca: str | None  # CA bundle bind-mounted into RUN steps (None: not trusted or not present)
    started: float  # when the plan was prepared: the `created` label unless SOURCE_DATE_EPOCH pins it


def prepare_steps(recipe: type[Recipe], steps: list[Step], settings: Settings, digests: FileDigests,
                  problems: list[str]) -> list[Step]:
    """Each step prepared; a problem is recorded (naming recipe and step) and the step left as it was."""
    ctx = StepInputs(settings, recipe, digests)
    out: list[Step] = []
    for i, step in enumerate(steps, 1):
        try:
            out.append(step.prepare(ctx))
        except (StepError, RecipeError) as exc:
            problems.append(_named(str(exc), recipe, i, step))
            out.append(step)
        except FileNotFoundError as exc:
            problems.append(f"recipe {recipe.name!r}, step {i} ({step.kind}): missing file {exc}")
            out.append(step)
    return out


def _named(message: str, recipe: type[Recipe], index: int, step: Step) -> str:
    prefix = f"recipe {recipe.name!r}"
    if message.startswith(prefix):
        return message
    return f"{prefix}, step {index} ({step.kind}): {message}"


def host_facts(settings: Settings, recipe_dir: Path) -> HostFacts:
    revision, source = git_facts(recipe_dir)
    path = settings.host_ca_bundle
    host_ca = path if settings.trust_host_ca and path and Path(path).is_file() else None
    return HostFacts(revision, settings.value("source", source), host_ca, time.time())


def git_facts(folder: Path) -> tuple[str | None, str | None]:
    """revision and source of the git checkout holding ``folder``, if any.

    Every build, no-op included, asks: plain subprocess calls (about 4 ms each) rather than sh's
    (about 30 ms each, for its reader threads)."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(folder), *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):  # no git, or a hung one
            return None
        return (proc.stdout.strip() or None) if proc.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    return revision, git("remote", "get-url", "origin") if revision else None


Progress = Callable[[str], None]

__all__ = ["FileDigests", "HostFacts", "PrepareError", "StepInputs", "git_facts", "host_facts", "prepare_steps"]
