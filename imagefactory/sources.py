"""Pinned source archives: fetched from a content-addressed cache, mirrors or upstream, every byte verified.

A :class:`SourcePin` names one release: its upstream archive (URL, file name, sha256, the
folder inside it that holds the tree) plus *alternate* archives that carry the same release
tree as a different byte stream (a distribution's snapshot, a vendoring sdist). Each
alternate has its own sha256 and tree root, so an archive is accepted only if its bytes are
exactly one of the pinned ones.

Fetch order for :func:`fetch`:

1. the cache ``<source_cache>/<sha256>/<filename>`` (re-hashed on every hit);
2. each entry of ``settings.source_mirrors`` in order: a local folder (or ``file://`` URL)
   or an ``http(s)://`` prefix, asking for the primary file name, then each alternate's;
3. the upstream URL.

Downloads go to a temporary file inside the cache folder, are hashed while streaming, and
are moved into place with one atomic rename only after the hash matched.

A pin may also carry ``tree_sha256``, the :func:`tree_digest` of the release tree (the files
below ``tree_root``). It does not depend on compression or tar metadata, so it verifies an
archive whose byte digest is not known (an upstream ``git archive`` tarball regenerated with
other gzip bytes): bytes that match no pinned sha256 are accepted only if their tree matches.
Such an archive is cached under ``<source_cache>/tree-<tree_sha256>/<filename>`` next to a
``<filename>.verified`` sidecar (JSON: sha256 of the verified bytes, re-checked on every hit,
and the tree root it was verified at). Network errors,
HTTP 5xx and truncated transfers are retried with exponential backoff (tenacity); 404 moves
on to the next candidate; a hash mismatch is a hard :class:`SourceError` naming the file and
both digests, and the bytes are thrown away.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._process import pid_alive
from .retry import RetryPolicy

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

CHUNK = 1 << 16
USER_AGENT = "imagefactory-sources/1"


class SourceError(RuntimeError):
    """A source archive is missing everywhere, or its bytes do not match the pin."""


class _Transient(Exception):
    """A failure worth retrying: connection errors, timeouts, HTTP 5xx, short reads."""


class _NotFound(Exception):
    """This candidate does not exist here (404, missing file); try the next one."""


@dataclass(frozen=True)
class Alternate:
    """Another byte stream holding the same release tree (e.g. a distro snapshot)."""

    filename: str
    sha256: str
    tree_root: str


@dataclass(frozen=True)
class Candidate:
    """One acceptable archive of a pin: the primary or an alternate.

    ``sha256`` is None for a primary whose bytes are not known (pinned by its tree only).
    """

    filename: str
    sha256: str | None
    tree_root: str
    primary: bool


@dataclass(frozen=True)
class SourcePin:
    library: str
    version: str
    license: str  # SPDX expression
    url: str  # upstream download URL of the primary archive
    sha256: str | None  # None only with tree_sha256: the upstream bytes are not known
    filename: str
    tree_root: str
    purl: str
    alternates: tuple[Alternate, ...] = ()
    homepage: str | None = None
    tree_sha256: str | None = None  # tree_digest() of the release tree; verifies any archive of it

    def __post_init__(self) -> None:
        if not self.sha256 and not self.tree_sha256:
            raise ValueError(f"source pin {self.library} {self.version} has no sha256: every archive must be "
                             f"pinned by its digest; add sha256=\"$(sha256sum {self.filename or 'ARCHIVE'})\" "
                             f"or tree_sha256=\"$(imagefactory sources digest ARCHIVE --root TOP/)\"")
        for sha in (self.sha256, self.tree_sha256, *(a.sha256 for a in self.alternates)):
            if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
                raise ValueError(f"{self.library} {self.version}: {sha!r} is not a lowercase sha256 hex digest")
        _PINS[(self.library, self.version)] = self

    @property
    def name(self) -> str:
        return self.library

    def candidates(self) -> list[Candidate]:
        return [Candidate(self.filename, self.sha256, self.tree_root, True),
                *(Candidate(a.filename, a.sha256, a.tree_root, False) for a in self.alternates)]

    def by_sha256(self, sha: str) -> Candidate | None:
        return next((c for c in self.candidates() if c.sha256 == sha), None)

    def tree_roots(self) -> list[str]:
        """Where the release tree may sit inside an archive of this pin (primary's first)."""
        return list(dict.fromkeys(c.tree_root for c in self.candidates()))


_PINS: dict[tuple[str, str], SourcePin] = {}


def known_pins() -> list[SourcePin]:
    """Every pin defined so far (pins register themselves); loads the shipped recipes first."""
    from .recipe import RecipeError
    from .loader import load_recipes

    with contextlib.suppress(ImportError, RecipeError):
        load_recipes()
    return sorted(_PINS.values(), key=lambda p: (p.library, p.version))


@dataclass(frozen=True)
class FetchedArchive:
    pin: SourcePin
    path: Path
    filename: str
    sha256: str
    tree_root: str
    url_used: str  # where the bytes came from ("cache:" + original source when from the cache)
    tree_verified: bool = False  # accepted by its tree digest (bytes not pinned)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def is_primary(self) -> bool:
        """The upstream artifact: its pinned bytes, or other bytes of the pinned tree under its name."""
        return self.tree_verified or self.sha256 == self.pin.sha256


@dataclass
class ImportResult:
    imported: list[tuple[str, str]] = field(default_factory=list)  # (file, "library version")
    already: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def to_dict(self) -> dict:
        return {k: [list(x) for x in getattr(self, k)] for k in ("imported", "already", "refused")}


class Sources:
    """The fetcher: one cache folder, a list of mirrors, a retry policy."""

    def __init__(self, cache: str | Path, mirrors: Iterable[str] = (), retry: RetryPolicy | None = None,
                 digest: Callable[[Path], str] | None = None, log: Callable[[str], None] | None = None):
        self.cache = Path(cache).expanduser()
        self.mirrors = [m for m in mirrors if m]
        self.retry = retry or RetryPolicy()
        self._digest = digest or sha256_file
        self.log = log or (lambda msg: None)

    @classmethod
    def from_settings(cls, settings: Settings, **kw) -> Sources:
        kw.setdefault("retry", RetryPolicy.from_settings(settings))
        return cls(settings.source_cache, settings.source_mirrors, **kw)

    # -- cache -----------------------------------------------------------------
    def cache_path(self, c: Candidate) -> Path:
        return self.cache / c.sha256 / c.filename

    def tree_cache_path(self, pin: SourcePin) -> Path:
        """Where an archive accepted by its tree digest is kept (the primary's file name)."""
        return self.cache / f"tree-{pin.tree_sha256}" / pin.filename

    def cached(self, pin: SourcePin) -> FetchedArchive | None:
        """The first pinned archive already in the cache whose bytes still match; no network."""
        for c in pin.candidates():
            if c.sha256 is None:
                continue
            path = self.cache_path(c)
            if not path.is_file():
                continue
            actual = self._digest(path)
            if actual == c.sha256:
                return FetchedArchive(pin, path, c.filename, c.sha256, c.tree_root, f"cache:{c.filename}")
            self.log(f"cache entry {path} is corrupt (sha256 {actual}); removing it")
            path.unlink(missing_ok=True)
        if pin.tree_sha256:
            path = self.tree_cache_path(pin)
            record = _read_sidecar(path)
            if path.is_file() and record:
                actual = self._digest(path)
                if actual == record["sha256"]:
                    return FetchedArchive(pin, path, pin.filename, actual, record["tree_root"],
                                          f"cache:{pin.filename}", tree_verified=True)
                self.log(f"cache entry {path} is corrupt (sha256 {actual}, verified as {record['sha256']}); "
                         "removing it")
            if path.is_file() or record:
                path.unlink(missing_ok=True)
                _sidecar(path).unlink(missing_ok=True)
        return None

    # -- fetch -----------------------------------------------------------------
    def fetch(self, pin: SourcePin) -> FetchedArchive:
        hit = self.cached(pin)
        if hit:
            return hit
        clear_partial(self.cache)
        tried: list[str] = []
        for mirror in self.mirrors:
            for c in pin.candidates():
                url = _join(mirror, c.filename)
                got = self._try(pin, c, url, tried)
                if got:
                    return got
        got = self._try(pin, pin.candidates()[0], pin.url, tried)
        if got:
            return got
        raise SourceError(f"{pin.library} {pin.version}: no source archive found; tried "
                          + "; ".join(tried)
                          + ". Add a mirror (`source_mirrors`) or seed the cache with `imagefactory sources import DIR`.")

    def _try(self, pin: SourcePin, c: Candidate, url: str, tried: list[str]) -> FetchedArchive | None:
        try:
            got = self._download(url, pin, c)
        except _NotFound as exc:
            tried.append(f"{url} ({exc})")
            return None
        except _Transient as exc:
            tried.append(f"{url} ({exc}, after {self.retry.attempts} attempts)")
            return None
        how = " (verified by its tree digest)" if got.tree_verified else ""
        self.log(f"{pin.library} {pin.version}: {got.filename} from {url}{how}")
        return got

    def _download(self, url: str, pin: SourcePin, c: Candidate) -> FetchedArchive:
        local = _local_path(url)
        if local is not None:
            if not local.is_file():
                raise _NotFound("no such file")
            return self._store(lambda out: _copy_stream(local.open("rb"), out, None), pin, c, url)
        retrying = self.retry.retrying(lambda exc: isinstance(exc, _Transient))
        return retrying(self._store, lambda out: self._http_get(url, out), pin, c, url)

    def _http_get(self, url: str, out) -> None:
        import http.client  # the HTTP client only when a download needs it, not at every start-up
        import urllib.error
        import urllib.request

        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=self.retry.timeout) as resp:
                expected = resp.headers.get("Content-Length")
                _copy_stream(resp, out, int(expected) if expected and expected.isdigit() else None)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Transient(f"HTTP {exc.code}") from None
            if exc.code in (401, 403):
                raise _NotFound(f"HTTP {exc.code}: authentication refused, not retried") from None
            raise _NotFound(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            raise _Transient(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None

    def _store(self, produce: Callable, pin: SourcePin, c: Candidate, url: str) -> FetchedArchive:
        """Write to a temp file in the cache, hash while writing, rename into place only on a match.

        Accepted: bytes with the sha256 of any of the pin's archives, or, if the pin has a
        ``tree_sha256``, bytes whose unpacked tree matches it. Anything else is a hard error.
        """
        self.cache.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".partial-{c.filename}.p{os.getpid()}.", dir=self.cache)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                out = _HashingWriter(raw)
                produce(out)
                raw.flush()
                os.fsync(raw.fileno())
            actual = out.hexdigest()
            os.chmod(tmp, 0o644)
            known = pin.by_sha256(actual)
            if known is not None:
                dest = self.cache_path(known)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
                return FetchedArchive(pin, dest, known.filename, actual, known.tree_root, url)
            if not pin.tree_sha256:
                raise SourceError(f"sha256 mismatch for {c.filename} from {url}: expected {c.sha256}, "
                                  f"got {actual}; the file was not cached")
            root, found = match_tree(tmp, pin)
            if root is None:
                raise SourceError(f"{pin.library} {pin.version}: {c.filename} from {url} matches no pinned archive "
                                  f"(sha256 {actual}) and its tree does not match the pin: expected tree digest "
                                  f"{pin.tree_sha256}, got {found}; the file was not cached")
            dest = self.tree_cache_path(pin)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _sidecar(dest).write_text(json.dumps({"sha256": actual, "tree_root": root, "from": url}) + "\n")
            os.replace(tmp, dest)
            return FetchedArchive(pin, dest, pin.filename, actual, root, url, tree_verified=True)
        finally:
            tmp.unlink(missing_ok=True)

    # -- import / status ---------------------------------------------------------
    def import_dir(self, folder: str | Path, pins: Iterable[SourcePin] | None = None) -> ImportResult:
        """Seed the cache from a folder: a file is accepted only if its sha256 is a known pin's,
        or its unpacked tree matches a pin's ``tree_sha256`` (whatever the file is called)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"{folder} is not a folder")
        pins = list(pins if pins is not None else known_pins())
        known: dict[str, tuple[SourcePin, Candidate]] = {}
        for pin in pins:
            for c in pin.candidates():
                if c.sha256:
                    known[c.sha256] = (pin, c)
        by_tree = [pin for pin in pins if pin.tree_sha256]
        result = ImportResult()
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            sha = sha256_file(path)
            match = known.get(sha)
            if match is None:
                pin = next((p for p in by_tree if match_tree(path, p)[0] is not None), None)
                if pin is None:
                    why = "matches no pinned archive" + (" nor any pinned tree" if by_tree else "")
                    result.refused.append((path.name, f"sha256 {sha} {why}"))
                    continue
                match = (pin, pin.candidates()[0])
            pin, c = match
            what = f"{pin.library} {pin.version}"
            if c.sha256 is None:
                record = _read_sidecar(self.tree_cache_path(pin))
                cached = bool(record) and record["sha256"] == sha and self.tree_cache_path(pin).is_file()
            else:
                cached = self.cache_path(c).is_file() and self._digest(self.cache_path(c)) == sha
            if cached:
                result.already.append((path.name, what))
                continue
            self._store(lambda out, p=path: _copy_stream(p.open("rb"), out, None), pin, c, str(path))
            result.imported.append((path.name, what))
        return result

    def status(self, pins: Iterable[SourcePin] | None = None) -> list[dict]:
        rows = []
        for pin in pins if pins is not None else known_pins():
            hit = self.cached(pin)
            rows.append({"library": pin.library, "version": pin.version, "license": pin.license,
                         "cached": hit is not None, "archive": hit.filename if hit else None,
                         "sha256": hit.sha256 if hit else pin.sha256, "tree_sha256": pin.tree_sha256,
                         "alternate": bool(hit and not hit.is_primary), "path": str(hit.path) if hit else None,
                         "upstream_url": pin.url})
        return rows


class _HashingWriter:
    def __init__(self, raw):
        self.raw = raw
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.h.update(data)
        self.size += len(data)
        self.raw.write(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _copy_stream(src, out: _HashingWriter, expected: int | None) -> None:
    import http.client

    with src:
        got = 0
        read = getattr(src, "read1", src.read)  # what has arrived, not a blocking full chunk
        while True:
            try:
                chunk = read(CHUNK)
            except http.client.IncompleteRead as exc:
                raise _Transient(f"truncated transfer ({got + len(exc.partial)} of {expected} bytes)") from None
            if not chunk:
                break
            got += len(chunk)
            out.write(chunk)
    if expected is not None and got != expected:
        raise _Transient(f"truncated transfer ({got} of {expected} bytes)")


def _join(mirror: str, filename: str) -> str:
    if mirror.startswith(("http://", "https://", "file://")):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
    return str(Path(mirror).expanduser() / filename)


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if url.startswith(("http://", "https://")):
        return None
    return Path(url)


TREE_DIGEST_VERSION = "imagefactory-tree-v1"


def tree_digest(archive: str | Path, root: str) -> str:
    """A digest of the release tree inside a tar archive, independent of compression and tar metadata.

    ``imagefactory-tree-v1``, over every entry below ``root`` (a folder inside the archive,
    e.g. ``wolfsentry-1.6.2/``; the root itself and anything outside it are ignored):

    * one line per regular file or symlink: ``<kind> <sha256> <path>\\n`` where ``path`` is
      relative to ``root`` with ``/`` separators; ``kind`` is ``x`` for a file with any
      execute bit set, ``f`` for any other file (the sha256 is of its bytes), ``l`` for a
      symlink (the sha256 is of its target string, UTF-8); a hard link counts as the file
      it links to;
    * directories are not recorded (git, and so ``git archive``, has no empty folders);
      owners, times, other mode bits, tar headers and the compression are ignored;
    * lines sorted by the UTF-8 bytes of ``path``; the digest is the sha256 (hex) of
      ``imagefactory-tree-v1\\n`` followed by the lines.

    Refused (:class:`SourceError`): absolute or ``..`` paths, paths with a newline, devices
    and FIFOs, an archive with nothing below ``root``, or a file that is not a tar archive.
    Like Go's module hash (``h1:``) or Nix's NAR hash, the same tree gives the same digest
    whether it comes as ``.tar.gz`` from GitHub, as ``.tar.xz`` or re-packed by ``git archive``.
    """
    import tarfile

    root = root.strip("/") + "/"
    entries: dict[str, str] = {}
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{archive}: not a readable tar archive ({exc})") from None
    with tar:
        try:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if not name.startswith(root):
                    continue
                rel = name[len(root):].rstrip("/")
                if not rel:
                    continue
                if name.startswith("/") or ".." in rel.split("/") or "\n" in rel:
                    raise SourceError(f"{archive}: unsafe path {m.name!r}")
                if m.isdir():
                    continue
                if m.issym():
                    entries[rel] = f"l {hashlib.sha256(m.linkname.encode()).hexdigest()} {rel}\n"
                elif m.isfile() or m.islnk():
                    f = tar.extractfile(m)
                    if f is None:
                        raise SourceError(f"{archive}: cannot read {m.name!r}")
                    h = hashlib.sha256()
                    for chunk in iter(lambda f=f: f.read(CHUNK), b""):
                        h.update(chunk)
                    kind = "x" if m.mode & 0o111 else "f"
                    entries[rel] = f"{kind} {h.hexdigest()} {rel}\n"
                else:
                    raise SourceError(f"{archive}: {m.name!r} is neither a file, a folder nor a symlink")
        except (tarfile.TarError, OSError, EOFError, KeyError) as exc:
            raise SourceError(f"{archive}: broken tar archive ({exc})") from None
    if not entries:
        raise SourceError(f"{archive}: nothing below {root!r} (wrong tree root?)")
    h = hashlib.sha256(f"{TREE_DIGEST_VERSION}\n".encode())
    for rel in sorted(entries, key=lambda r: r.encode()):
        h.update(entries[rel].encode())
    return h.hexdigest()


def match_tree(archive: Path, pin: SourcePin) -> tuple[str | None, str]:
    """(the tree root at which ``archive`` holds the pin's tree, or None; what was found, for errors)."""
    found = []
    for root in pin.tree_roots():
        try:
            digest = tree_digest(archive, root)
        except SourceError as exc:
            found.append(f"{root}: {str(exc).removeprefix(str(archive) + ': ')}")
            continue
        if digest == pin.tree_sha256:
            return root, digest
        found.append(f"{digest} at {root}")
    return None, "; ".join(found)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_sidecar(path: Path) -> dict | None:
    try:
        record = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"sha256", "tree_root"} <= record.keys() else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- module-level API with settings -------------------------------------------------
def fetch(pin: SourcePin, settings: Settings, **kw) -> FetchedArchive:
    """Cache, then mirrors, then upstream; see the module docstring."""
    return Sources.from_settings(settings, **kw).fetch(pin)


def import_dir(folder: str | Path, settings: Settings, pins: Iterable[SourcePin] | None = None) -> ImportResult:
    return Sources.from_settings(settings).import_dir(folder, pins)


def list_status(settings: Settings, pins: Iterable[SourcePin] | None = None) -> list[dict]:
    return Sources.from_settings(settings).status(pins)


def clear_partial(cache: str | Path) -> int:
    """Remove temp files that killed downloads left behind (their PID is gone); returns how many."""
    import re

    n = 0
    for p in Path(cache).glob(".partial-*") if Path(cache).is_dir() else []:
        m = re.search(r"\.p(\d+)\.[^.]*$", p.name)
        if m and pid_alive(int(m.group(1))):
            continue  # a download in progress in another process
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


__all__ = ["Alternate", "FetchedArchive", "ImportResult", "RetryPolicy", "SourceError", "SourcePin", "Sources",
           "fetch", "import_dir", "known_pins", "list_status", "match_tree", "sha256_file", "tree_digest"]

