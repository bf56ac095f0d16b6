"""The one place that spawns buildah.

Every other module talks to images and containers through :class:`Buildah` and
:class:`Container`. That keeps storage options (``--root``/``--runroot``/driver),
isolation, logging and cancellation in one spot, and gives the rest of the code a
seam to swap (a fake or another engine) without touching recipes or the planner.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._process import die_with_parent, pid_alive
from .retry import RetryPolicy
from .storage import StorageOptions

CONTAINER_PREFIX = "imagefactory-"
TEMP_IMAGE_REPO = "localhost/imagefactory-tmp"
PUSH_LIST_REPO = "localhost/imagefactory-push-list"  # one-entry indexes made to push a cache entry
TAIL_LINES = 40
# Working containers and temporary commits carry the owning process's PID in their
# name ("imagefactory-<hint>-p<pid>-<hex>"), so a later run can tell the leftovers of a
# killed build from the containers of a build that is still running.
_OWNER = re.compile(r"-p(\d+)-[0-9a-f]{8}$")


class BuildahError(RuntimeError):
    """A buildah call failed; carries what a user needs to reproduce and fix it."""

    def __init__(self, command: list[str], exit_code: int, stderr_tail: str, log_path: Path | None = None):
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.log_path = log_path
        where = f" (log: {log_path})" if log_path else ""
        super().__init__(
            f"buildah exited {exit_code}: {' '.join(command)}{where}\n{stderr_tail}".rstrip()
        )


class Cancelled(RuntimeError):
    """The build was interrupted (Ctrl-C / SIGTERM); raised instead of a buildah error."""


@dataclass(frozen=True)
class Mount:
    """A bind or cache mount for a single RUN, never committed into the image."""

    target: str
    source: str | None = None
    type: str = "bind"
    readonly: bool = True

    def arg(self) -> str:
        parts = [f"type={self.type}"]
        if self.source:
            parts.append(f"source={self.source}")
        parts.append(f"target={self.target}")
        if self.readonly and self.type == "bind":
            parts.append("ro")
        return ",".join(parts)


@dataclass
class ImageRecord:
    id: str
    names: list[str]
    size: int
    created: str = ""


@dataclass
class _Counters:
    """How many containers/commits this wrapper made: lets tests prove a no-op build starts none."""

    containers_started: int = 0
    commits: int = 0
    runs: int = 0
    calls: list[list[str]] = field(default_factory=list)


# buildah's own retry loop gives up on HTTP 5xx; cut it to one try so RetryPolicy is the one in force.
_BUILDAH_RETRY_ARGS = ("--retry", "1", "--retry-delay", "500ms")


def http_status(*codes: str) -> str:
    """A regex for HTTP status codes as words: never part of a port (``127.0.0.1:40412``), digest or time."""
    return r"(?<![\w.:])(?:" + "|".join(codes) + r")(?![\w:])"


_PERMANENT = re.compile(r"unauthori[sz]ed|authentication required|denied|manifest unknown|name unknown|"
                        r"not found|" + http_status("404") + r"|x509|certificate|invalid reference", re.I)
_TRANSIENT = re.compile(r"connection refused|connection reset|broken pipe|i/o timeout|timed? ?out|\bEOF\b|"
                        r"status code from registry 5\d\d|" + http_status("50[0234]", "429") + r"|too many requests|"
                        r"temporary failure|network is unreachable|no such host|TLS handshake", re.I)


def is_transient(error: BuildahError) -> bool:
    """Worth another try: network errors, timeouts, HTTP 5xx/429. Never auth, 404 or TLS errors."""
    return transient_text(error.stderr_tail)


def transient_text(text: str) -> bool:
    """The same judgement on any registry tool's error text (skopeo speaks the same library)."""
    return not _PERMANENT.search(text) and bool(_TRANSIENT.search(text))


def _registry_args(tls_verify: bool, authfile: str | None) -> list[str]:
    return [f"--tls-verify={'true' if tls_verify else 'false'}", *(["--authfile", authfile] if authfile else [])]


class Buildah:
    """Typed calls to the buildah CLI, all honouring one :class:`StorageOptions`."""

    def __init__(self, storage: StorageOptions | None = None, binary: str = "buildah",
                 retry: RetryPolicy | None = None):
        self.storage = (storage or StorageOptions()).resolved()
        self.binary = binary
        self.retry = retry or RetryPolicy()
        self.counters = _Counters()
        self._running: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    # -- process plumbing ---------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        """The full command line for ``buildah ARGS`` (used by `plan` to show calls)."""
        return [self.binary, *self.storage.global_args(), *args]

    def _call(self, *args: str, log: Path | None = None, env: dict | None = None, cleanup: bool = False,
              redactions: tuple[str, ...] = ()) -> str:
        return self._spawn(self.argv(*args), log=log, env=env, cleanup=cleanup, redactions=redactions)

    def host(self, argv: list[str], *, log: Path, env: dict[str, str]) -> None:
        """Run a host tool that works on a mounted container (debootstrap, mmdebstrap) with the same
        plumbing as buildah itself: logged, cancelled with the build, killed if imagefactory dies."""
        self._spawn(list(argv), log=log, env=env)

    def _spawn(self, argv: list[str], *, log: Path | None = None, env: dict | None = None, cleanup: bool = False,
               redactions: tuple[str, ...] = ()) -> str:
        """Run one command in its own session (so cancel() can kill its whole group), killed if we die.

        With a log, stdout and stderr go to the file (through the redaction filter when secrets are
        in play); without one, stdout is returned and stderr's tail goes into the error.
        """
        if self._cancelled.is_set() and not cleanup:
            raise Cancelled("build cancelled")
        with self._lock:
            self.counters.calls.append(argv)
        logf = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            logf = open(log, "ab", buffering=0)
            logf.write(("$ " + " ".join(argv) + "\n").encode())
        try:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if logf is None or redactions else logf,
                    stderr=subprocess.STDOUT if logf is not None else subprocess.PIPE,
                    env=env or self._env(), start_new_session=True, preexec_fn=die_with_parent)
            except FileNotFoundError:
                raise BuildahError(argv, 127, f"{argv[0]}: command not found (run ci/setup)", log) from None
            with self._lock:  # cancel() snapshots under this lock: it sees this process, or we see its flag
                self._running[id(proc)] = proc
                late = self._cancelled.is_set() and not cleanup
            if late:
                _kill_group(proc.pid)
            out = err = b""
            try:
                if logf is None:
                    out, err = proc.communicate()
                elif redactions:  # scrub secret values before a byte reaches the log file
                    for line in proc.stdout:
                        logf.write(redact(line.decode("utf-8", "replace"), redactions).encode())
                    proc.wait()
                else:
                    proc.wait()
            except BaseException:  # Ctrl-C or an error while waiting: leave nothing running
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        _kill_group(proc.pid, signal.SIGKILL)
                        proc.wait()
                raise
            finally:
                with self._lock:
                    self._running.pop(id(proc), None)
            if proc.returncode == 0:
                return "" if logf is not None else out.decode("utf-8", "replace")
            if self._cancelled.is_set() and not cleanup:
                raise Cancelled("build cancelled")
            if logf is not None:
                tail = tail_of(log)
            else:
                tail = "\n".join(err.decode("utf-8", "replace").splitlines()[-TAIL_LINES:])
            code = proc.returncode if proc.returncode > 0 else 128 - proc.returncode  # killed: 128+signal
            raise BuildahError(argv, code, redact(tail, redactions), log)
        finally:
            if logf:
                logf.close()

    def _env(self) -> dict[str, str]:
        env = _clean_env()
        if self.storage.tmp_root:
            env["TMPDIR"] = str(self.scratch_dir())
        return env

    def scratch_dir(self) -> Path:
        """This process's scratch folder (buildah's TMPDIR, iid/digest files)."""
        if not self.storage.tmp_root:
            return Path(_scratch_dir())
        path = Path(self.storage.tmp_root) / f"p{os.getpid()}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cancel(self) -> None:
        """Stop every running buildah process (whole process group) so callers can clean up."""
        self._cancelled.set()
        with self._lock:
            running = list(self._running.values())
        for proc in running:
            _kill_group(proc.pid)

    def reset_cancel(self) -> None:
        self._cancelled.clear()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # -- images ---------------------------------------------------------------
    def images(self) -> list[ImageRecord]:
        out = self._call("images", "--json", "--no-trunc")
        records = []
        for item in json.loads(out or "[]") or []:
            records.append(
                ImageRecord(
                    id=item["id"].removeprefix("sha256:"),
                    names=list(item.get("names") or []),
                    size=parse_size(str(item.get("size") or "0")),
                    created=str(item.get("createdatraw") or ""),
                )
            )
        return records

    def image_index(self) -> dict[str, str]:
        """name → image ID for every tagged image: one listing serves a whole plan."""
        index: dict[str, str] = {}
        for rec in self.images():
            for name in rec.names:
                index[name] = rec.id
        return index

    def inspect(self, ref: str, kind: str = "image") -> dict:
        return json.loads(self._call("inspect", "--type", kind, ref))

    def exists(self, ref: str) -> bool:
        try:
            self._call("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
            return True
        except BuildahError:
            return False

    def tag(self, image: str, *names: str) -> None:
        self._call("tag", image, *names)

    def rmi(self, *images: str, force: bool = False) -> None:
        if images:
            self._call("rmi", *(["--force"] if force else []), *images)

    def untag(self, name: str) -> None:
        """Drop one name; the image stays if other names or children keep it."""
        self._call("rmi", name)

    def pull(self, ref: str, log: Path | None = None, *, tls_verify: bool = True,
             authfile: str | None = None, arch: str | None = None) -> str:
        """Pull and return the image ID (for an index: the ID of ``arch``'s entry, else this machine's)."""
        out = []
        arch_args = ["--arch", arch] if arch else []
        self._with_retries(f"pull {ref}", lambda: out.append(self._call(
            "pull", "--quiet", *_BUILDAH_RETRY_ARGS, *_registry_args(tls_verify, authfile), *arch_args, ref,
            log=log)))
        printed = out[-1].split() if out and out[-1] else []
        return printed[-1].removeprefix("sha256:") if printed else self.inspect(ref)["FromImageID"]

    def push(self, image: str, destination: str, *, tls_verify: bool = True, log: Path | None = None,
             authfile: str | None = None) -> str:
        """Push and return the manifest digest the registry now serves."""
        digest_file = self.scratch_dir() / f"digest-{uuid.uuid4().hex}"
        try:
            self._with_retries(f"push {destination}", lambda: self._call(
                "push", *_BUILDAH_RETRY_ARGS, *_registry_args(tls_verify, authfile),
                "--digestfile", str(digest_file), image, destination, log=log,
            ))
            return digest_file.read_text().strip()
        finally:
            digest_file.unlink(missing_ok=True)

    def push_annotated(self, image: str, destination: str, annotations: dict[str, str], *,
                       tls_verify: bool = True, authfile: str | None = None, log: Path | None = None) -> str:
        """Push ``image`` as a one-entry OCI index whose entry carries ``annotations``; return the
        index digest. The image itself (its config, so its ID) is pushed unchanged: annotations on
        the index are the one place metadata can ride along without changing the image ID."""
        listed = owned_name(PUSH_LIST_REPO + ":list")
        self._call("manifest", "create", listed)
        digest_file = self.scratch_dir() / f"digest-{uuid.uuid4().hex}"
        try:
            notes = [a for k, v in annotations.items() for a in ("--annotation", f"{k}={v}")]
            self._call("manifest", "add", *notes, listed, image)
            own_log = log or self.scratch_dir() / f"push-{uuid.uuid4().hex}.log"
            argv = ["manifest", "push", "--all", *_registry_args(tls_verify, authfile), "--digestfile",
                    str(digest_file), listed, f"docker://{destination}"]

            def attempt() -> None:
                self._call(*argv, log=own_log)
                # buildah 1.28 exits 0 when an image of the list fails to copy: no digest means no push
                if not digest_file.is_file() or not digest_file.read_text().strip():
                    raise BuildahError(self.argv(*argv), 0, "buildah exited 0 but pushed nothing (buildah 1.28 "
                                       "hides the registry's error)\n" + tail_of(own_log), log)

            try:
                self._with_retries(f"push {destination}", attempt)
            finally:
                if log is None:
                    own_log.unlink(missing_ok=True)
            return digest_file.read_text().strip()
        finally:
            digest_file.unlink(missing_ok=True)
            try:  # `manifest rm`, never `rmi`: rmi of a list name can untag the image inside it
                self._call("manifest", "rm", listed, cleanup=True)
            except BuildahError:
                pass

    def manifest_list(self, name: str, images: list[str]) -> str:
        """(Re)create the local manifest list ``name`` holding ``images`` (one per architecture, each
        entry's platform read from its config); returns the list's ID."""
        if self.exists(name):
            self._call("manifest", "rm", name)  # never `rmi`: it can untag the images inside
        list_id = self._call("manifest", "create", name).strip().split()[-1]
        for image in images:
            self._call("manifest", "add", name, f"containers-storage:{image}")
        return list_id

    def manifest_inspect(self, name: str) -> dict:
        return json.loads(self._call("manifest", "inspect", name))

    def push_manifest_list(self, name: str, destination: str, *, tls_verify: bool = True,
                           authfile: str | None = None, log: Path | None = None) -> str:
        """Push a local manifest list with every image in it; the digest of the index the registry serves."""
        digest_file = self.scratch_dir() / f"digest-{uuid.uuid4().hex}"
        argv = ["manifest", "push", "--all", *_registry_args(tls_verify, authfile), "--digestfile",
                str(digest_file), name, f"docker://{destination}"]
        try:
            def attempt() -> None:
                self._call(*argv, log=log)
                if not digest_file.is_file() or not digest_file.read_text().strip():
                    raise BuildahError(self.argv(*argv), 0, "buildah exited 0 but pushed nothing (buildah 1.28 "
                                       "hides the registry's error)", log)

            self._with_retries(f"push {destination}", attempt)
            return digest_file.read_text().strip()
        finally:
            digest_file.unlink(missing_ok=True)

    def export_layout(self, image: str, folder: Path, name: str) -> dict:
        """Copy an image into an OCI layout folder, layers uncompressed (so a layer blob's digest is its
        diff ID) and shared between the images copied there; returns the image's OCI manifest."""
        self._call("push", "--quiet", "--disable-compression", image, f"oci:{folder}:{name}")
        index = json.loads((folder / "index.json").read_text())
        entry = next(m for m in reversed(index["manifests"])
                     if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == name)
        return json.loads(oci_blob(folder, entry["digest"]).read_text())

    def _with_retries(self, what: str, attempt) -> None:
        """Retry transient registry failures with backoff; fail at once on the rest (see is_transient)."""
        tries = 0

        def counted():
            nonlocal tries
            tries += 1
            return attempt()

        try:
            self.retry.retrying(lambda e: isinstance(e, BuildahError) and is_transient(e))(counted)
        except BuildahError as exc:
            why = (f"gave up after {tries} attempts" if is_transient(exc)
                   else "not retried: the registry refused the request (authentication, missing image or TLS)")
            raise BuildahError(exc.command, exc.exit_code, f"{what}: {why}\n{exc.stderr_tail}", exc.log_path) from None

    # -- containers -----------------------------------------------------------
    def from_image(self, image: str, *, name_hint: str = "work") -> Container:
        name = owned_name(CONTAINER_PREFIX + _safe(name_hint))
        self._call("from", "--quiet", "--pull=never", "--name", name, image)
        with self._lock:
            self.counters.containers_started += 1
        return Container(self, name)

    def from_scratch(self, *, name_hint: str = "scratch") -> Container:
        name = owned_name(CONTAINER_PREFIX + _safe(name_hint))
        self._call("from", "--quiet", "--name", name, "scratch")
        with self._lock:
            self.counters.containers_started += 1
        return Container(self, name)

    @contextmanager
    def working_container(self, image: str | None, *, name_hint: str = "work") -> Iterator[Container]:
        """A container that is removed however the block ends (error, Ctrl-C, success)."""
        ctr = self.from_image(image, name_hint=name_hint) if image else self.from_scratch(name_hint=name_hint)
        layer = self._container_layer(ctr.name)
        try:
            yield ctr
        except BaseException:
            try:
                self.remove_container(ctr.name, layer=layer)
            except BuildahError as exc:  # keep the error that matters; the next run removes it (its owner is gone)
                last = (exc.stderr_tail.strip().splitlines() or [str(exc)])[-1]
                logging.getLogger(__name__).warning("could not remove container %s: %s", ctr.name, last)
            raise
        self.remove_container(ctr.name, layer=layer)

    def containers(self) -> list[dict]:
        out = self._call("containers", "--json", "--all")
        return json.loads(out or "[]") or []

    def leftovers(self, images: Iterable[ImageRecord] | None = None) -> tuple[list[str], list[str]]:
        """Working containers and temporary commits of imagefactory runs that are no longer alive.

        Only names this wrapper gives out are considered, and only when the PID in the
        name is not a running process: a concurrent build's containers are left alone.
        """
        containers = [name for ctr in self.containers()
                      if (name := ctr.get("containername") or ctr.get("ContainerName") or "").startswith(
                          CONTAINER_PREFIX) and not owner_alive(name)]
        records = self.images() if images is None else images
        temps = [n for r in records for n in r.names if n.startswith(TEMP_IMAGE_REPO + ":") and not owner_alive(n)]
        return containers, temps

    def remove_leftovers(self, images: Iterable[ImageRecord] | None = None) -> tuple[list[str], list[str]]:
        containers, temps = self.leftovers(images)
        if self.storage.tmp_root and Path(self.storage.tmp_root).is_dir():
            for folder in Path(self.storage.tmp_root).glob("p*"):
                if folder.name[1:].isdigit() and not pid_alive(int(folder.name[1:])):
                    shutil.rmtree(folder, ignore_errors=True)
        for name in containers:
            self.remove_container(name)
        for name in temps:
            try:
                self.untag(name)
            except BuildahError as exc:
                if "image not known" not in exc.stderr_tail:
                    raise
        return containers, temps

    def remove_container(self, name: str, *, layer: str | None = None) -> None:
        """Remove even after a cancel: cleanup must never be skipped.

        ``layer`` is the container's writable layer as it was when the container was made: buildah
        1.28 can lose the container record when a `run` fails on a full disk (a panic in its
        clean-up) and leave that layer behind, holding everything the step wrote.
        """
        try:
            self._call("umount", name, cleanup=True)
        except BuildahError:
            pass
        for attempt in range(3):
            try:
                self._call("rm", name, cleanup=True)
                return
            except BuildahError as exc:
                tail = exc.stderr_tail.lower()
                if "does not exist" in tail or "no such" in tail or "not known" in tail:
                    if layer:
                        self._free_orphan_layer(layer, name)
                    return
                if attempt == 2 or not self._store_full(exc):
                    raise
                # c/storage rewrites its layer list before it deletes a layer: on a full disk make room
                # by emptying the container's own writable layer (it is being deleted anyway), then retry
                found = self._container_layer(name)
                if found:
                    self._empty_layer(found)

    def _store_full(self, exc: BuildahError) -> bool:
        if "no space left on device" in exc.stderr_tail.lower():
            return True
        root = self.storage.root
        try:
            return bool(root) and shutil.disk_usage(root).free < 4_000_000
        except OSError:
            return False

    # c/storage's own records, read (never written) to clean up after buildah on a full disk
    def _graphroot(self) -> Path:
        from . import rootless

        if self.storage.root:
            return Path(self.storage.root)
        return rootless.default_graphroot() if rootless.is_rootless() else Path("/var/lib/containers/storage")

    def _records(self, kind: str) -> list[dict]:
        """``containers`` or ``layers``: the entries of the store's JSON file (empty if unreadable)."""
        for driver in ([self.storage.driver] if self.storage.driver else ["overlay", "vfs"]):
            try:
                return json.loads((self._graphroot() / f"{driver}-{kind}" / f"{kind}.json").read_text())
            except (OSError, ValueError):
                continue
        return []

    def _container_layer(self, name: str) -> str | None:
        return next((e.get("layer") for e in self._records("containers") if name in (e.get("names") or [])), None)

    def _free_orphan_layer(self, layer: str, name: str) -> None:
        """The container is gone but its layer is still there and nothing uses it: empty it."""
        if not any(e.get("id") == layer for e in self._records("layers")):
            return
        if any(e.get("layer") == layer for e in self._records("containers")):
            return
        if self._empty_layer(layer):
            logging.getLogger(__name__).warning(
                "buildah lost container %s but kept its layer %s: emptied it to free the space "
                "(an empty layer record stays in the store)", name, layer[:12])

    def _empty_layer(self, layer: str) -> bool:
        """Delete a writable layer's files (the container is being deleted anyway). Its files belong to
        subordinate IDs when rootless, so that goes through `buildah unshare`."""
        from . import rootless

        root = self._graphroot()
        writable = next((d for d in (root / "overlay" / layer / "diff", root / "vfs" / "dir" / layer) if d.is_dir()),
                        None)
        if writable is None:
            return False
        if rootless.needs_userns():
            try:
                self._call("unshare", "find", str(writable), "-mindepth", "1", "-delete", cleanup=True)
            except BuildahError:
                return False
        else:
            empty_folder(writable)
        return True

    def run(self, ctr: str, argv: list[str], *, env: dict[str, str] | None = None, user: str | None = None,
            workdir: str | None = None, mounts: Iterable[Mount] = (), network: str | None = None,
            log: Path | None = None, redactions: tuple[str, ...] = ()) -> None:
        self._call(*self.run_args(ctr, argv, env=env, user=user, workdir=workdir, mounts=mounts,
                                  network=network), log=log, redactions=redactions)
        with self._lock:
            self.counters.runs += 1

    def run_args(self, ctr: str, argv: list[str], *, env: dict[str, str] | None = None, user: str | None = None,
                 workdir: str | None = None, mounts: Iterable[Mount] = (), network: str | None = None
                 ) -> list[str]:
        args = ["run", "--isolation", self.storage.isolation]
        for key, value in sorted((env or {}).items()):
            args += ["--env", f"{key}={value}"]
        if user:
            args += ["--user", user]
        if workdir:
            args += ["--workingdir", workdir]
        if network:
            args += ["--network", network]
        for mount in mounts:
            args += ["--mount", mount.arg()]
        return [*args, ctr, "--", *argv]

    def copy(self, ctr: str, sources: list[str], dest: str, *, chown: str | None = None,
             chmod: str | None = None, from_image: str | None = None, log: Path | None = None) -> None:
        self._call(*self.copy_args(ctr, sources, dest, chown=chown, chmod=chmod, from_image=from_image),
                   log=log)

    @staticmethod
    def copy_args(ctr: str, sources: list[str], dest: str, *, chown: str | None = None,
                  chmod: str | None = None, from_image: str | None = None) -> list[str]:
        args = ["copy", "--quiet"]
        if chown:
            args += ["--chown", chown]
        if chmod:
            args += ["--chmod", chmod]
        if from_image:
            args += ["--from", from_image]
        return [*args, ctr, *sources, dest]

    def config(self, ctr: str, args: list[str]) -> None:
        if args:
            self._call("config", *args, ctr)

    def mount(self, ctr: str) -> Path:
        from . import rootless

        if rootless.needs_userns():
            raise BuildahError(self.argv("mount", ctr), 125,
                               "an ordinary user can mount images only inside buildah's user namespace: run "
                               "this program as `buildah unshare -- python ...` (the imagefactory CLI re-runs "
                               "itself there), see docs/rootless.md")
        return Path(self._call("mount", ctr).strip())

    def umount(self, ctr: str) -> None:
        self._call("umount", ctr)

    @contextmanager
    def mounted_image(self, image: str) -> Iterator[Path]:
        """Read an image's files without running anything in it (verify, SBOM)."""
        with self.working_container(image, name_hint="inspect") as ctr:
            yield ctr.mount()

    def commit(self, ctr: str, name: str | None = None, *, squash: bool = False,
               timestamp: int | None = None, image_format: str = "oci", log: Path | None = None) -> str:
        """Commit and return the image ID. Without ``name`` the image gets a temporary owned
        name (see :meth:`commit_then_tag`), never an untraceable dangling image."""
        iid = self.scratch_dir() / f"iid-{uuid.uuid4().hex}"
        args = ["commit", "--quiet", "--format", image_format, "--iidfile", str(iid)]
        if squash:
            args.append("--squash")
        if timestamp is not None:
            args += ["--timestamp", str(timestamp)]
        args.append(ctr)
        if name:
            args.append(name)
        try:
            self._call(*args, log=log)
            with self._lock:
                self.counters.commits += 1
            return iid.read_text().strip().removeprefix("sha256:")
        finally:
            iid.unlink(missing_ok=True)

    def commit_then_tag(self, ctr: str, names: list[str], **kw) -> str:
        """Commit under a temporary name, then tag: a name in ``names`` only ever points at a
        complete image. A run killed in between leaves only the temporary name, which the
        next run removes (:meth:`remove_leftovers`)."""
        temp = owned_name(TEMP_IMAGE_REPO + ":" + _safe(ctr.removeprefix(CONTAINER_PREFIX))[:60])
        image_id = self.commit(ctr, temp, **kw)
        if kw.get("image_format") == "docker" and kw.get("timestamp") is not None:
            image_id = self.without_container_id(image_id)
        if names:
            self.tag(image_id, *names)
        self.untag(temp)
        return image_id

    def without_container_id(self, image: str) -> str:
        """The image without the ``container`` field of its Docker config; returns its ID.

        buildah before 1.30 writes the working container's random ID into Docker-format configs even
        with ``--timestamp`` (later versions leave it out), so no two builds of an image with a
        HEALTHCHECK had the same ID. Only the config changes: a ``dir:`` copy holding the manifest and
        the new config is pulled back, and the store reuses the layers it has by digest.
        """
        import hashlib
        import tempfile

        info = self.inspect(image)
        config = json.loads(info.get("Config") or "{}")
        if "container" not in config:
            return image
        config.pop("container")
        raw = json.dumps(config, separators=(",", ":")).encode()
        digest = hashlib.sha256(raw).hexdigest()
        manifest = json.loads(info["Manifest"])
        manifest["config"].update(digest=f"sha256:{digest}", size=len(raw))
        folder = Path(tempfile.mkdtemp(prefix="config-", dir=self.scratch_dir()))
        try:
            (folder / "manifest.json").write_text(json.dumps(manifest))
            (folder / digest).write_bytes(raw)
            (folder / "version").write_text("Directory Transport Version: 1.1\n")
            self._call("pull", "--quiet", f"dir:{folder}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return digest

    def version(self) -> str:
        return self._call("version", "--json")


class Container:
    """A working container; thin sugar over :class:`Buildah` calls that name it."""

    def __init__(self, buildah: Buildah, name: str):
        self.buildah = buildah
        self.name = name

    def run(self, argv: list[str], **kw) -> None:
        self.buildah.run(self.name, argv, **kw)

    def copy(self, sources: list[str], dest: str, **kw) -> None:
        self.buildah.copy(self.name, sources, dest, **kw)

    def config(self, args: list[str]) -> None:
        self.buildah.config(self.name, args)

    def mount(self) -> Path:
        return self.buildah.mount(self.name)

    def umount(self) -> None:
        self.buildah.umount(self.name)

    def commit(self, name: str | None = None, **kw) -> str:
        return self.buildah.commit(self.name, name, **kw)

    def inspect(self) -> dict:
        return self.buildah.inspect(self.name, kind="container")


def oci_blob(layout: Path, digest: str) -> Path:
    """Where an OCI layout folder keeps the blob ``sha256:…``."""
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest


def tail_of(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}


def parse_size(text: str) -> int:
    """buildah prints sizes as decimal human strings ("1.99 MB"); turn them back into bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKMGT]?B)\s*", text)
    if not m:
        return int(float(text)) if text.replace(".", "", 1).isdigit() else 0
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _clean_env() -> dict[str, str]:
    """buildah itself needs PATH/HOME/TMPDIR; steps get only what the recipe sets."""
    keep = ("PATH", "HOME", "TMPDIR", "LANG", "XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "USER",
            "REGISTRY_AUTH_FILE")
    env = {k: v for k, v in os.environ.items()
           if k in keep or k.startswith(("BUILDAH_", "CONTAINERS_", "_CONTAINERS_"))}  # _CONTAINERS_*: userns state
    from .rootless import runtime_dir_ok

    if not runtime_dir_ok():
        env.pop("XDG_RUNTIME_DIR", None)  # buildah refuses a runtime dir the user does not own
    return env


def _kill_group(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


REDACTED = "[secret]"


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every secret value in ``values`` replaced (step logs, failure tails)."""
    for value in values:
        if value:
            text = text.replace(value, REDACTED)
    return text


def empty_folder(folder: Path) -> None:
    """Delete everything inside ``folder``, keeping the folder (a mount point, a layer)."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def owned_name(prefix: str) -> str:
    """A container or temporary image name that records this process as its owner."""
    return f"{prefix}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"


def owner_alive(name: str) -> bool:
    """Is the process that created ``name`` still running? Names without an owner count as dead."""
    m = _OWNER.search(name)
    return bool(m) and pid_alive(int(m.group(1)))


def _scratch_dir() -> str:
    return os.environ.get("TMPDIR", "/tmp")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40]
