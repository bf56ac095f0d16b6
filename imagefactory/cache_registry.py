"""The step cache shared through an OCI registry (``--cache-from REPO`` / ``--cache-to REPO``).

A cache entry is a step-cache image pushed to ``REPO:KEY`` (the full 64-hex step key as tag) as a
one-entry OCI index. The index entry carries the key and the image ID in annotations: metadata that
rides along without touching the image's config, so the image ID (the config digest) is the same
in every store that pulls it, and the keys of later steps and child images chain exactly as they
do locally.

* :meth:`RegistryCache.lookup` is one manifest request per repository (``skopeo inspect --raw``),
  never a pull; an entry whose key annotation is not the tag it was found under is a miss plus a
  warning.
* :meth:`RegistryCache.pull` pulls one entry by digest through :class:`~imagefactory.buildah.Buildah`
  and checks the image ID; :meth:`RegistryCache.push` / :meth:`push_async` push committed entries.
* :meth:`RegistryCache.prune` deletes entries no current recipe reaches (registry API deletes).

Every registry request goes through skopeo or buildah (auth files, token exchange, redirects, TLS),
retried with :class:`~imagefactory.retry.RetryPolicy` and bounded by a timeout. A registry that is
down, slow or refuses the credentials is a warning and a rebuild, or an error with ``required``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._process import die_with_parent
from .buildah import BuildahError, http_status, transient_text
from .retry import RetryPolicy

from .walk import Found, cache_ref

if TYPE_CHECKING:  # pragma: no cover
    from .buildah import Buildah
    from .config import Settings

KEY_ANNOTATION = "io.imagefactory.cache.key"
IMAGE_ID_ANNOTATION = "io.imagefactory.cache.image-id"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REPOSITORY = re.compile(r"(?P<host>[A-Za-z0-9.-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)"
                         r"/(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)")
_MISSING = re.compile(r"manifest unknown|name unknown|not found|" + http_status("404"), re.I)
_AUTH = re.compile(r"unauthori[sz]ed|authentication required|denied|" + http_status("401", "403"), re.I)
_TLS = re.compile(r"x509|certificate|tls:", re.I)
_PLAIN_HTTP = re.compile(r"server gave HTTP response to HTTPS client", re.I)
_DELETE_REFUSED = re.compile(http_status("405") + r"|method not allowed|unsupported|delet\w* (is )?disabled", re.I)

log = logging.getLogger(__name__)


class RegistryCacheError(RuntimeError):
    """A cache registry failed in a way the user must fix (or that ``--cache-required`` forbids)."""


class NotInRegistry(Exception):  # noqa: N818 - an answer, not a failure
    """The registry answered: no such tag."""


class RegistryUnavailable(Exception):
    """Worth another try: connection refused or reset, timeout, HTTP 5xx/429."""


@dataclass(frozen=True)
class RemoteEntry:
    """A cache entry found in a registry: where it is and which image it holds."""

    key: str
    repo: str
    digest: str  # the index digest: what `pull` fetches, immutable
    image_id: str  # config digest == the image ID buildah gives it after the pull

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.key}"

    @property
    def digest_ref(self) -> str:
        return f"{self.repo}@{self.digest}"


@dataclass
class PruneResult:
    repo: str
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    refused: str | None = None  # why the registry does not delete, when it does not

    def to_dict(self) -> dict:
        return {"repo": self.repo, "deleted": self.deleted, "kept": len(self.kept), "failed": self.failed,
                "refused": self.refused}


def repository(text: str, what: str = "cache repository") -> str:
    """``HOST[:PORT]/PATH`` with no tag or digest (a ``docker://`` prefix is allowed); else a clear error."""
    repo = text.strip().removeprefix("docker://").rstrip("/")
    m = _REPOSITORY.fullmatch(repo)
    if not m:
        hint = ""
        if "@" in repo or re.search(r":[^/]*$", repo.split("/", 1)[-1] if "/" in repo else ""):
            hint = " (drop the tag or digest: entries are tagged by their key)"
        elif "/" not in repo:
            hint = " (name the registry host too, e.g. registry.example.com/team/imagefactory-cache)"
        raise RegistryCacheError(f"{what} {text!r} is not a repository{hint}; expected HOST[:PORT]/PATH")
    return repo


class Skopeo:
    """Registry API calls through skopeo, bounded by a timeout, with credentials from the auth file."""

    def __init__(self, *, authfile: str | None, tls_verify: bool, timeout: float, binary: str = "skopeo"):
        self.authfile = authfile
        self.tls_verify = tls_verify
        self.timeout = timeout
        self.binary = binary

    def __call__(self, command: str, *args: str) -> bytes:
        """``skopeo COMMAND`` (inspect, list-tags, delete) against one registry."""
        return self.run(command, f"--tls-verify={'true' if self.tls_verify else 'false'}",
                        *(["--authfile", self.authfile] if self.authfile else []), *args)

    def copy(self, source: str, destination: str) -> bytes:
        """Copy between registries keeping the manifest bytes, so the digest stays the same."""
        tls = "true" if self.tls_verify else "false"
        return self.run("copy", "--all", "--preserve-digests", "--retry-times", "2", f"--src-tls-verify={tls}",
                        f"--dest-tls-verify={tls}", *(["--authfile", self.authfile] if self.authfile else []),
                        source, destination)

    def run(self, command: str, *args: str) -> bytes:
        argv = [self.binary, "--command-timeout", f"{int(self.timeout)}s", command, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=self.timeout + 5, stdin=subprocess.DEVNULL,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise RegistryUnavailable(f"no answer within {self.timeout:.0f}s") from None
        except FileNotFoundError:
            raise RegistryCacheError("skopeo is not installed: run ci/setup (apt-get install skopeo)") from None
        if proc.returncode == 0:
            return proc.stdout
        text = proc.stderr.decode("utf-8", "replace").strip()
        last = text.splitlines()[-1] if text else f"skopeo exited {proc.returncode}"
        last = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", last)
        if _MISSING.search(text) and not _AUTH.search(text):
            raise NotInRegistry(last)
        if "context deadline exceeded" in text or transient_text(text):
            raise RegistryUnavailable(last)
        raise RegistryCacheError(last)


class RegistryCache:
    """Look up, pull, push and prune step-cache entries in registry repositories."""

    def __init__(self, from_repos: Iterable[str], to_repo: str | None = None, *, authfile: str | None = None,
                 tls_verify: bool = True, required: bool = False, retry: RetryPolicy | None = None,
                 warn: Callable[[str], None] | None = None, timeout: float = 20.0, skopeo: str = "skopeo"):
        self.from_repos = [repository(r, "--cache-from") for r in from_repos]
        self.to_repo = repository(to_repo, "--cache-to") if to_repo else None
        self.authfile = authfile
        self.tls_verify = tls_verify
        self.required = required
        self.retry = retry or RetryPolicy(attempts=3, initial=1.0, maximum=5.0)
        self.warn = warn or log.warning
        self.skopeo = Skopeo(authfile=authfile, tls_verify=tls_verify, timeout=timeout, binary=skopeo)
        self._down: dict[str, str] = {}  # repo -> why: skipped for the rest of the run (no second timeout)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pushes: list[Future] = []
        self.stats = {"lookups": 0, "hits": 0, "pulls": 0, "pushes": 0, "push_failures": 0}

    @classmethod
    def from_settings(cls, settings: Settings, warn: Callable[[str], None] | None = None) -> RegistryCache | None:
        """The cache the settings ask for, or None when neither --cache-from nor --cache-to is set."""
        if not settings.cache_from and not settings.cache_to:
            return None
        policy = RetryPolicy.from_settings(settings)
        return cls(settings.cache_from, settings.cache_to, authfile=settings.authfile,
                   tls_verify=settings.tls_verify, required=settings.cache_required,
                   retry=RetryPolicy(attempts=min(policy.attempts, 3), initial=min(policy.initial, 2.0),
                                     maximum=10.0, timeout=policy.timeout), warn=warn)

    # -- lookups ----------------------------------------------------------------
    def lookup(self, key: str) -> RemoteEntry | None:
        """The first repository holding a trustworthy entry for ``key``: one manifest request each."""
        with self._lock:
            self.stats["lookups"] += 1
        for repo in self.from_repos:
            if repo in self._down:
                continue
            try:
                raw = self._request(repo, "inspect", "--raw", f"docker://{repo}:{key}")
            except NotInRegistry:
                continue
            except (RegistryUnavailable, RegistryCacheError) as exc:
                self._registry_failed(repo, exc)
                continue
            entry = self._entry(repo, key, raw)
            if entry is not None:
                with self._lock:
                    self.stats["hits"] += 1
                return entry
        return None

    def _entry(self, repo: str, key: str, raw: bytes) -> RemoteEntry | None:
        try:
            data = json.loads(raw)
            manifests = data.get("manifests") if data.get("mediaType") in INDEX_TYPES else None
            notes = manifests[0].get("annotations") or {} if manifests and len(manifests) == 1 else {}
        except (ValueError, AttributeError, TypeError):
            notes = {}
        found_key, image_id = notes.get(KEY_ANNOTATION), str(notes.get(IMAGE_ID_ANNOTATION, ""))
        if found_key != key or not _HEX64.fullmatch(image_id):
            why = (f"is labelled with key {found_key[:16]}…" if found_key and found_key != key
                   else "carries no imagefactory cache key label")
            self._problem(f"cache entry {repo}:{key[:16]}… {why}; ignored, the step is built instead "
                          f"(remove it with `imagefactory cache prune --registry {repo} --keep TARGETS`)")
            return None
        return RemoteEntry(key, repo, "sha256:" + hashlib.sha256(raw).hexdigest(), image_id)

    # -- pull / push --------------------------------------------------------------
    def pull(self, entry: RemoteEntry, buildah: Buildah, local_ref: str) -> str:
        """Pull ``entry`` by digest, check its image ID, tag it ``local_ref``; the ID is returned.
        Raises :class:`RegistryCacheError` (the caller builds the step instead unless required)."""
        try:
            image_id = buildah.pull(entry.digest_ref, tls_verify=self.tls_verify, authfile=self.authfile)
        except BuildahError as exc:
            raise RegistryCacheError(f"could not pull cache entry {entry.ref}: {_last_line(exc.stderr_tail)}"
                                     f"{_fix(entry.repo, exc.stderr_tail)}") from None
        if image_id != entry.image_id:
            try:
                buildah.rmi(image_id)
            except BuildahError:
                pass
            raise RegistryCacheError(f"cache entry {entry.ref} holds image {image_id[:12]}, but its label says "
                                     f"{entry.image_id[:12]}: not used (prune it and rebuild)")
        buildah.tag(image_id, local_ref)
        with self._lock:
            self.stats["pulls"] += 1
        return image_id

    def push(self, key: str, image_id: str, buildah: Buildah) -> str | None:
        """Push one committed entry to ``--cache-to``; the index digest, or None after a warning."""
        if not self.to_repo:
            return None
        destination = f"{self.to_repo}:{key}"
        try:
            digest = buildah.push_annotated(image_id, destination,
                                            {KEY_ANNOTATION: key, IMAGE_ID_ANNOTATION: image_id},
                                            tls_verify=self.tls_verify, authfile=self.authfile)
        except BuildahError as exc:
            with self._lock:
                self.stats["push_failures"] += 1
            why = self._diagnose(self.to_repo, key) or _last_line(exc.stderr_tail)
            self._problem(f"could not push cache entry {destination}: {why}{_fix(self.to_repo, why)}; "
                          "the build result stands")
            return None
        with self._lock:
            self.stats["pushes"] += 1
        return digest

    def push_async(self, key: str, image_id: str, buildah: Buildah) -> Future:
        """:meth:`push` in a background thread so the build goes on; :meth:`wait` collects them."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-push")
            future = self._pool.submit(self.push, key, image_id, buildah)
            self._pushes.append(future)
        return future

    def wait(self) -> list[str | None]:
        """Wait for every background push; re-raises the first error (only with ``required``)."""
        with self._lock:
            pushes, self._pushes = self._pushes, []
        results = [f.result() for f in pushes]
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return results

    # -- prune ------------------------------------------------------------------
    def prune(self, keep_keys: Iterable[str], repo: str | None = None) -> PruneResult:
        """Delete the entries of ``repo`` (default: --cache-to) whose key is not in ``keep_keys``.
        Tags that are not cache keys are left alone."""
        target = repository(repo, "--registry") if repo else self.to_repo
        if not target:
            raise RegistryCacheError("cache prune needs a repository: pass --registry HOST[:PORT]/PATH")
        keep = set(keep_keys)
        result = PruneResult(target)
        try:
            tags = json.loads(self._request(target, "list-tags", f"docker://{target}")).get("Tags") or []
        except NotInRegistry:
            return result
        except (RegistryUnavailable, RegistryCacheError) as exc:
            raise RegistryCacheError(f"cache registry {target}: {exc}{_fix(target, str(exc))}") from None
        for tag in sorted(tags):
            if not _HEX64.fullmatch(tag) or tag in keep:
                result.kept.append(tag)
                continue
            try:
                self._delete(target, tag)
                result.deleted.append(tag)
            except RegistryCacheError as exc:
                if _DELETE_REFUSED.search(str(exc)):
                    result.refused = (f"registry {target} refuses deletes ({exc}); enable them (Distribution "
                                      "registry: storage.delete.enabled: true) or use the registry's own "
                                      "retention policy")
                    break
                result.failed.append(f"{tag}: {exc}")
            except (NotInRegistry, RegistryUnavailable) as exc:
                result.failed.append(f"{tag}: {exc}")
        return result

    def _delete(self, repo: str, tag: str) -> None:
        """Delete the entry's index by digest. The image manifest inside is left to the registry's
        garbage collection: deleting it by digest would also drop any other tag that shares it."""
        raw = self._request(repo, "inspect", "--raw", f"docker://{repo}:{tag}")
        self._request(repo, "delete", f"docker://{repo}@sha256:{hashlib.sha256(raw).hexdigest()}")

    # -- plumbing -----------------------------------------------------------------
    def _request(self, repo: str, command: str, *args: str) -> bytes:
        return self.retry.retrying(lambda e: isinstance(e, RegistryUnavailable))(self.skopeo, command, *args)

    def _diagnose(self, repo: str, key: str) -> str | None:
        """Why a registry failed, asked directly (buildah's push error text can be empty)."""
        try:
            self.skopeo("inspect", "--raw", f"docker://{repo}:{key}")
        except NotInRegistry:
            return None
        except RegistryUnavailable as exc:
            return f"unreachable ({exc})"
        except RegistryCacheError as exc:
            return str(exc)
        return None

    def _registry_failed(self, repo: str, exc: Exception) -> None:
        reason = str(exc)
        if isinstance(exc, RegistryUnavailable):
            reason = f"unreachable after {self.retry.attempts} attempts ({reason})"
        with self._lock:
            first = repo not in self._down
            self._down[repo] = reason
        if first:
            self._problem(f"cache registry {repo}: {reason}{_fix(repo, reason)}; "
                          "its entries are not used this run (steps are built instead)")

    def _problem(self, message: str) -> None:
        if self.required:
            raise RegistryCacheError(message + " [--cache-required]")
        self.warn(message)


class RegistryProvider:
    """The registry cache as a :class:`~imagefactory.walk.Provider` for the one cache walk.

    ``find`` is a lookup (one manifest request, no pull), so `plan` can show where each step would
    come from. The executor pulls only what it needs: ``fetch`` for the last hit a later miss builds
    on or for a target's final image, ``fetch_image`` for an image a child or a ``CopyFrom`` needs
    that was found here but not pulled. Pulled entries are tagged as local cache entries.
    """

    where = "registry"

    def __init__(self, cache: RegistryCache):
        self.cache = cache
        self._entries: dict[str, RemoteEntry] = {}  # image ID -> the entry it was found as
        self._lock = threading.Lock()

    def find(self, key: str) -> Found | None:
        if not self.cache.from_repos:
            return None
        entry = self.cache.lookup(key)
        if entry is None:
            return None
        with self._lock:
            self._entries.setdefault(entry.image_id, entry)
        return Found(entry.image_id, self.where, entry.ref)

    def fetch(self, found: Found, buildah: Buildah, log=None) -> str:
        return self.fetch_image(found.image_id, buildah)

    def fetch_image(self, image_id: str, buildah: Buildah) -> str:
        """Pull the entry holding ``image_id``; returns the ID (checked against the entry's label)."""
        with self._lock:
            entry = self._entries.get(image_id)
        if entry is None:
            raise RegistryCacheError(f"image {image_id[:12]} is neither in the store nor a registry cache entry "
                                     "found in this run")
        return self.cache.pull(entry, buildah, cache_ref(entry.key))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def _fix(repo: str, text: str) -> str:
    host = repo.split("/", 1)[0]
    if _PLAIN_HTTP.search(text):
        return f" — {host} speaks plain HTTP: pass --tls-verify=false (test registries only)"
    if _TLS.search(text):
        return f" — TLS verification failed for {host}: install its CA, or pass --tls-verify=false for a test registry"
    if _AUTH.search(text):
        return (f" — {host} refused the credentials: log in with `buildah login {host}` "
                "(or pass --authfile / set REGISTRY_AUTH_FILE)")
    if transient_text(text) or "no answer" in text:
        return f" — check that {host} is up and reachable"
    return ""



__all__ = ["RegistryProvider", "Skopeo", "NotInRegistry", "RegistryUnavailable", "RegistryCache", "RegistryCacheError", "RemoteEntry", "PruneResult", "repository", "KEY_ANNOTATION",
           "IMAGE_ID_ANNOTATION"]
