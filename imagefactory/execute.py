"""Run a plan: cache lookups, working containers, commits, tags, parallel images, cleanup.

The executor is the only caller of the buildah wrapper during a build. A no-op
rebuild costs one listing of the store plus hashing the inputs: every step's key
is found among the cache tags and no container is started.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sh

from .buildah import Buildah, BuildahError, Cancelled, Container, ImageRecord, Mount, tail_of
from . import preflight
from .config import Settings
from .locks import StoreLocks
from .retry import RetryPolicy
from .plan import (FileDigests, Node, Plan, cache_ref, final_commits, git_facts, group_steps, image_format_of,
                   render_steps, step_key)
from .secrets import Secrets
from .steps import ConfigCall, CopyCall, HostCall, Rendered, RunCall, Step

HOST_CA_TARGET = "/run/imagefactory/host-ca.crt"
HOST_CA_ENV = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
               "GIT_SSL_CAINFO")


class BuildFailed(RuntimeError):
    """A step failed. Carries the image, step, command and log tail for the user."""

    def __init__(self, image: str, step_no: int, step: str, command: str, tail: str, log: Path | None,
                 hint: str | None = None):
        self.image, self.step_no, self.step, self.command, self.tail, self.log, self.hint = (
            image, step_no, step, command, tail, log, hint)
        super().__init__(f"{image}: step {step_no} ({step}) failed" + (f": {hint}" if hint else ""))


@dataclass
class StepRecord:
    index: int
    kind: str
    summary: str
    key: str
    status: str  # hit | run | final-hit | final
    seconds: float = 0.0


@dataclass
class ImageResult:
    name: str
    target: str
    ref: str
    image_id: str = ""
    size: int = 0
    seconds: float = 0.0
    hits: int = 0
    misses: int = 0
    status: str = "pending"  # built | cached | failed | skipped
    size_budget_mb: float | None = None
    steps: list[StepRecord] = field(default_factory=list)
    error: str | None = None

    @property
    def over_budget(self) -> bool:
        return bool(self.size_budget_mb) and self.size > self.size_budget_mb * 1_000_000

    def to_dict(self) -> dict:
        d = asdict(self)
        d["over_budget"] = self.over_budget
        return d


@dataclass
class BuildReport:
    results: list[ImageResult]
    seconds: float
    containers_started: int
    commits: int
    log_dir: str
    notes: list[str] = field(default_factory=list)  # waits, leftovers removed: what a CI log should show

    @property
    def ok(self) -> bool:
        return all(r.status in ("built", "cached") for r in self.results)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "containers_started": self.containers_started,
                "commits": self.commits, "log_dir": self.log_dir, "notes": list(self.notes),
                "images": [r.to_dict() for r in self.results]}


class NullReporter:
    """Reporter interface; the rich UI implements the same methods."""

    def start(self, plan: Plan) -> None: ...
    def image_started(self, node: Node, total_steps: int) -> None: ...
    def step(self, node: Node, record: StepRecord, total: int, running: bool) -> None: ...
    def image_done(self, result: ImageResult) -> None: ...
    def failed(self, error: BuildFailed) -> None: ...
    def note(self, message: str) -> None: ...
    def finish(self, report: BuildReport) -> None: ...


class Executor:
    def __init__(self, settings: Settings, buildah: Buildah | None = None, reporter: NullReporter | None = None):
        self.settings = settings
        self.buildah = buildah or Buildah(settings.storage, retry=RetryPolicy.from_settings(settings))
        self.reporter = reporter or NullReporter()
        self.digests = FileDigests(settings.state_path() / "file-digests.json")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_root = Path(settings.log_dir) / f"{stamp}-{os.getpid()}"
        self._index: dict[str, str] = {}
        self._records: dict[str, ImageRecord] = {}
        self._image_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._revision: str | None = None
        self._source: str | None = None
        self._reaped = False
        self._platform = None
        self._notes: list[str] = []
        self._interrupted = 0  # signal number, set by the handler (see _interrupts_as_flag)
        self.secrets = Secrets(settings.secrets)
        self.locks = StoreLocks(settings.state_path())

    # -- public ---------------------------------------------------------------
    def execute(self, plan: Plan) -> BuildReport:
        started = time.monotonic()
        preflight.check(plan, self.digests, self.secrets)
        self._platform = plan.platform
        purpose = "build " + " ".join(n.name for n in plan.nodes)
        with self.locks.store(purpose, exclusive=False, note=self._note), _interrupts_as_flag(self):
            self._load_index()
            self._revision, self._source = git_facts(plan)
            self.reporter.start(plan)
            results = {n.name: ImageResult(n.name, n.recipe.target_name(), n.recipe.image_ref(),
                                           size_budget_mb=n.recipe.size_budget(plan.platform.name)) for n in plan.nodes}
            try:
                self._run_graph(plan, results)
            finally:
                self.digests.save()
            if self._interrupted:
                raise KeyboardInterrupt
            self._fill_sizes(results)
        report = BuildReport(list(results.values()), time.monotonic() - started,
                             self.buildah.counters.containers_started, self.buildah.counters.commits,
                             str(self.log_root), list(self._notes))
        self._save_report(report)
        self.reporter.finish(report)
        return report

    # -- scheduling -----------------------------------------------------------
    def _run_graph(self, plan: Plan, results: dict[str, ImageResult]) -> None:
        pending = list(plan.nodes)
        done: set[str] = set()
        failed: BuildFailed | Exception | None = None
        running: dict[Future, Node] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.settings.jobs)) as pool:
            try:
                while pending or running:
                    if self._interrupted:
                        raise KeyboardInterrupt
                    if failed is None:
                        for node in [n for n in pending if all(d.name in done for d in n.deps)]:
                            if len(running) >= max(1, self.settings.jobs):
                                break
                            pending.remove(node)
                            running[pool.submit(self._build_node, plan, node, results[node.name])] = node
                    if not running:
                        break
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED, timeout=0.5)
                    if self._interrupted:
                        raise KeyboardInterrupt
                    for fut in finished:
                        node = running.pop(fut)
                        exc = fut.exception()
                        if exc is None:
                            done.add(node.name)
                        else:
                            results[node.name].status = "failed"
                            results[node.name].error = str(exc)
                            failed = failed or exc
                            if isinstance(exc, BuildFailed):
                                self.reporter.failed(exc)
            except KeyboardInterrupt:
                self.buildah.cancel()
                for fut in running:
                    fut.cancel()
                wait(list(running))
                raise
        for node in pending:
            results[node.name].status = "skipped"
        if failed is not None:
            raise failed

    # -- one image ------------------------------------------------------------
    def _build_node(self, plan: Plan, node: Node, result: ImageResult) -> None:
        """Build one image while holding its lock: a concurrent run building the same image is
        waited for, and its commits are then found in the (re-read) cache."""
        with self.locks.image(node.name, f"build {node.name}", note=self._note,
                              stop=lambda: self.buildah.cancelled or bool(self._interrupted)) as waited:
            if waited:
                self._load_index()
            self._build_node_locked(plan, node, result)

    def _build_node_locked(self, plan: Plan, node: Node, result: ImageResult) -> None:
        started = time.monotonic()
        parent_id = self._parent_image_id(node)
        with self._lock:
            ids = dict(self._image_ids)
        rendered = render_steps(node, plan, ids, self.digests)
        groups, trailing = group_steps(rendered)
        image_format = image_format_of(plan, node)
        total = len(rendered) + (1 if node.leaf else 2) - len(trailing)
        self.reporter.image_started(node, total)
        current = parent_id
        chain = parent_id or "scratch"
        index = 0
        gi = 0
        # cache walk: no buildah calls at all while everything hits
        for gi, group in enumerate(groups):
            key = _group_key(chain, group)
            hit = None if self.settings.no_cache else self._lookup(key)
            if hit is None:
                break
            for step, r in group:
                index += 1
                rec = StepRecord(index, r.kind, r.summary, key, "hit")
                result.steps.append(rec)
                result.hits += 1
                self.reporter.step(node, rec, total, running=False)
            current = chain = hit
        else:
            gi = len(groups)
        for group in groups[gi:]:
            key = _group_key(chain, group)
            t0 = time.monotonic()
            with self._container(current, node) as ctr:
                for step, r in group:
                    index += 1
                    rec = StepRecord(index, r.kind, r.summary, key, "run")
                    self.reporter.step(node, rec, total, running=True)
                    s0 = time.monotonic()
                    self._apply(node, index, step, r, ctr)
                    rec.seconds = time.monotonic() - s0
                    result.steps.append(rec)
                    result.misses += 1
                    self.reporter.step(node, rec, total, running=False)
                new_id = self._commit(ctr, node, index, key, squash=False, image_format=image_format)
            result.steps[-1].seconds = time.monotonic() - t0 if len(group) == 1 else result.steps[-1].seconds
            current = chain = new_id
        # finish: trailing config + labels (see plan.final_commits for why there may be two commits)
        base_for_children = None
        for fc in final_commits(node, plan, trailing, self._revision, self._source, image_format):
            key = step_key(chain, fc.rendered)
            hit = None if self.settings.no_cache else self._lookup(key)
            index += 1
            rec = StepRecord(index, "final", fc.rendered.summary, key, "final-hit" if hit else "final")
            if hit:
                new_id = hit
                result.hits += 1
            else:
                self.reporter.step(node, rec, total, running=True)
                s0 = time.monotonic()
                with self._container(current, node) as ctr:
                    for call in fc.calls:
                        self._call(node, index, "config", call, ctr, None)
                    ctr.config(fc.label_args)
                    new_id = self._commit(ctr, node, index, key, squash=fc.squash, image_format=image_format,
                                          final=True)
                rec.seconds = time.monotonic() - s0
                result.misses += 1
            result.steps.append(rec)
            self.reporter.step(node, rec, total, running=False)
            current = chain = new_id
            if fc.feeds_children:
                base_for_children = new_id
        final_id = current
        ref = node.recipe.image_ref()
        if self._index.get(ref) != final_id:
            self.buildah.tag(final_id, ref)
            with self._lock:
                self._index[ref] = final_id
        with self._lock:
            self._image_ids[node.name] = base_for_children or final_id
        result.image_id = final_id
        result.seconds = time.monotonic() - started
        result.status = "built" if result.misses else "cached"
        self.reporter.image_done(result)

    def _apply(self, node: Node, index: int, step: Step, rendered: Rendered, ctr: Container) -> None:
        log = self.log_root / node.name / f"{index:02d}-{rendered.kind}.log"
        for call in rendered.calls:
            self._call(node, index, rendered.summary, call, ctr, log)

    def _call(self, node: Node, index: int, summary: str, call, ctr: Container, log: Path | None) -> None:
        try:
            if isinstance(call, RunCall):
                env = dict(call.env)
                mounts = list(call.mounts)
                if self._host_ca():
                    mounts.append(Mount(target=HOST_CA_TARGET, source=self._host_ca()))
                    env.update({k: HOST_CA_TARGET for k in HOST_CA_ENV})
                with self.secrets.mounts(call.secrets) as secret_mounts:
                    ctr.run(list(call.argv), env=env, user=call.user, workdir=call.workdir,
                            mounts=mounts + secret_mounts, network=call.network, log=log,
                            redactions=self.secrets.redactions())
            elif isinstance(call, CopyCall):
                ctr.copy(list(call.sources), call.dest, chown=call.chown, chmod=call.chmod,
                         from_image=call.from_image, log=log)
            elif isinstance(call, ConfigCall):
                ctr.config(list(call.args))
            elif isinstance(call, HostCall):
                log = log or self.log_root / node.name / f"{index:02d}-host.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                try:
                    call.action(ctr, log)
                except sh.ErrorReturnCode as exc:
                    raise BuildahError([call.description], exc.exit_code, tail_of(log), log) from None
            else:  # pragma: no cover
                raise TypeError(call)
        except BuildahError as exc:
            shown = " ".join(exc.command) if not isinstance(call, RunCall) else " ".join(call.argv)
            tail = exc.stderr_tail or tail_of(log or Path("/"))
            hint = self._diagnose(tail)
            raise BuildFailed(node.name, index, summary, shown, tail, exc.log_path or log, hint) from None

    def _diagnose(self, tail: str) -> str | None:
        """Say what probably went wrong when the log alone does not: a full store disk, a mirror down."""
        full = store_disk_full(self.settings)
        if full:
            return full
        return self._platform.diagnose(tail, self.settings) if self._platform else None

    def _host_ca(self) -> str | None:
        path = self.settings.host_ca_bundle
        return path if self.settings.trust_host_ca and path and Path(path).is_file() else None

    @contextmanager
    def _container(self, image: str | None, node: Node):
        self._remove_leftovers_once()
        with self.buildah.working_container(image, name_hint=node.name) as ctr:
            yield ctr

    def _note(self, message: str) -> None:
        with self._lock:
            self._notes.append(message)
        self.reporter.note(message)

    def _remove_leftovers_once(self) -> None:
        """Before this run starts its first container: remove what killed runs left behind.

        Deferred to the first cache miss so a no-op rebuild stays at one buildah call.
        Leftovers are never reused: cache entries are tags, set only after a complete commit.
        """
        with self._lock:
            if self._reaped:
                return
            self._reaped = True
            containers, temps = self.buildah.remove_leftovers(self._records.values())
        if containers or temps:
            self._note(f"removed {len(containers)} working container(s) and {len(temps)} unfinished "
                       "commit(s) left by an interrupted build")

    def _commit(self, ctr: Container, node: Node, index: int, key: str, *, squash: bool,
                image_format: str, final: bool = False) -> str:
        """Commit to a temporary name, then tag the cache entry: a cache tag never names half an image."""
        sde = self.settings.source_date_epoch
        timestamp = sde if sde is not None else (None if final else 0)
        try:
            new_id = self.buildah.commit_then_tag(ctr.name, [cache_ref(key)], squash=squash, timestamp=timestamp,
                                                  image_format=image_format)
        except BuildahError as exc:
            raise BuildFailed(node.name, index, "commit", " ".join(exc.command), exc.stderr_tail,
                              exc.log_path, self._diagnose(exc.stderr_tail)) from None
        with self._lock:
            self._index[cache_ref(key)] = new_id
        return new_id

    # -- cache index ------------------------------------------------------------
    def _load_index(self) -> None:
        records = self.buildah.images()
        with self._lock:
            for rec in records:
                self._records[rec.id] = rec
                for name in rec.names:
                    self._index[name] = rec.id

    def _lookup(self, key: str) -> str | None:
        with self._lock:
            return self._index.get(cache_ref(key))

    def _parent_image_id(self, node: Node) -> str | None:
        parent = node.parent
        if parent is None:
            return None
        if isinstance(parent, str):
            for ref in (parent, f"docker.io/library/{parent}", f"localhost/{parent}"):
                if ref in self._index:
                    return self._index[ref]
            log = self.log_root / node.name / "00-pull.log"
            try:
                return self.buildah.pull(parent, log=log)
            except BuildahError as exc:
                raise BuildFailed(node.name, 0, f"pull {parent}", " ".join(exc.command), exc.stderr_tail,
                                  log) from None
        with self._lock:
            return self._image_ids[parent.name]

    def _fill_sizes(self, results: dict[str, ImageResult]) -> None:
        if any(r.status == "built" for r in results.values()):
            self._records = {rec.id: rec for rec in self.buildah.images()}
        for r in results.values():
            if r.image_id and r.image_id in self._records:
                r.size = self._records[r.image_id].size

    def _save_report(self, report: BuildReport) -> None:
        path = self.settings.state_path() / "last-build.json"
        images_path = self.settings.state_path() / "images.json"
        _write_atomically(path, json.dumps(report.to_dict(), indent=2))
        with open(images_path.with_suffix(".lock"), "a") as lock:  # concurrent builds update it too
            fcntl.flock(lock, fcntl.LOCK_EX)
            known = {}
            if images_path.is_file():
                try:
                    known = json.loads(images_path.read_text())
                except ValueError:
                    known = {}
            for r in report.results:
                if r.image_id:
                    known[r.name] = {"target": r.target, "ref": r.ref, "image_id": r.image_id, "size": r.size,
                                     "built_at": time.time() if r.status == "built" else
                                     known.get(r.name, {}).get("built_at", time.time())}
            _write_atomically(images_path, json.dumps(known, indent=2))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def store_disk_full(settings: Settings, min_free: int = 100_000_000) -> str | None:
    """A message if the filesystem holding the store (or the scratch space) is (nearly) full.

    Tools in a step report a full disk in their own words ("I/O error", "write error"), and
    buildah sometimes only panics; checking the free space at the failure is unambiguous.
    """
    for label, path in (("store", settings.root or "/var/lib/containers/storage"),
                        ("scratch space", settings.storage.tmp_root)):
        probe = Path(path) if path else None
        while probe is not None and not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe is None:
            continue
        st = os.statvfs(probe)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        if free < min_free or (total and free / total < 0.01):
            return (f"the {label}'s disk is full ({free // 1_000_000} MB free of {total // 1_000_000} MB at "
                    f"{path}): free space (`imagefactory cache prune`, `imagefactory clean`) or point --root "
                    "at a bigger disk, then rebuild; the store itself is intact")
    return None


def _group_key(chain: str, group: list[tuple[Step, Rendered]]) -> str:
    key = chain
    for _, r in group:
        key = step_key(key, r)
    return key


@contextmanager
def _interrupts_as_flag(executor: Executor):
    """SIGINT and SIGTERM only set a flag; the scheduling loop turns it into KeyboardInterrupt.

    A handler that raises lands wherever the main thread happens to be, e.g. halfway through
    acquiring the futures' locks in ``concurrent.futures.wait``, and the cleanup that follows
    then deadlocks. The loop checks the flag every half second, cancels buildah and removes
    the working containers; SIGTERM (a cancelled CI job) behaves like Ctrl-C, and repeated
    signals (``buildah unshare`` forwarding one, plus the parent-death signal) change nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        executor._interrupted = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["BuildFailed", "BuildReport", "Cancelled", "Executor", "ImageResult", "NullReporter", "StepRecord"]
