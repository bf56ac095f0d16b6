"""Apply a plan: follow the cache walk's decisions with working containers, commits and tags.

The executor is the only caller of the buildah wrapper during a build. It does not decide
what is cached: :func:`imagefactory.walk.walk` does, for `plan` and `build` alike; the executor
runs what the walk says must run and sends back the IDs it commits. A no-op rebuild costs one
listing of the store: every key is found among the cache tags and no container is started.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import preflight
from .buildah import Buildah, BuildahError, Cancelled, Container, ImageRecord, Mount, tail_of
from .config import Settings
from .locks import StoreLocks
from .plan import FinalCommit, Layer, Node, Plan
from .prepare import HOST_CA_ENV, HOST_CA_TARGET
from .retry import RetryPolicy
from .secrets import Secrets
from .steps import HOST_ACTIONS, ConfigCall, CopyCall, HostCall, RunCall
from .walk import SCRATCH, Decision, FirstFound, Found, NoCache, Provider, cache_ref, walk



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
    source: str = "build"  # where a hit came from: local | registry (build for steps that ran)


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
    arch: str = ""  # the architecture it is built for (OCI name)
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
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_root = Path(settings.log_dir) / f"{stamp}-{os.getpid()}"
        self._index: dict[str, str] = {}
        self._records: dict[str, ImageRecord] = {}
        self._image_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._host_ca: str | None = None
        self._reaped = False
        self.remote: Provider | None = None  # a registry cache, tried after the local store
        self._finished: dict[str, threading.Event] = {}
        self._slots = Slots(max(1, settings.jobs))
        self._priority: dict[str, int] = {}
        # called with (key, image ID) after every commit: `--cache-to` pushes the entry from here
        self.committed: Callable[[str, str], None] | None = None
        self._platform = None
        self._notes: list[str] = []
        self._interrupted = 0  # signal number, set by the handler (see _interrupts_as_flag)
        self.secrets = Secrets(settings.secrets)
        self.locks = StoreLocks(settings.state_path())

    # -- public ---------------------------------------------------------------
    def execute(self, plan: Plan) -> BuildReport:
        started = time.monotonic()
        preflight.check(plan, self.secrets)
        self._platform = plan.platform
        self._host_ca = plan.facts.host_ca if plan.facts else None
        purpose = "build " + " ".join(n.name for n in plan.nodes)
        with self.locks.store(purpose, exclusive=False, note=self._note), _interrupts_as_flag(self):
            self._load_index()
            self.reporter.start(plan)
            results = {n.name: ImageResult(n.name, n.recipe.target_name(), n.ref,
                                           size_budget_mb=n.recipe.size_budget(plan.platform.name, n.target_arch),
                                           arch=n.target_arch)
                       for n in plan.nodes}
            self._run_graph(plan, results)
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
        """Schedule steps, not images: an image starts as soon as its parent exists, and a layer that
        copies from a stage waits for just that stage. ``--jobs`` bounds the containers running at
        once (a waiting image holds no slot), so `build`'s package install overlaps its library stage."""
        pending = list(plan.nodes)
        done: set[str] = set()
        failed: BuildFailed | Exception | None = None
        running: dict[Future, Node] = {}
        self._finished = {n.name: threading.Event() for n in plan.nodes}
        self._slots = Slots(max(1, self.settings.jobs))
        self._priority = waiting_images(plan)
        with ThreadPoolExecutor(max_workers=max(1, len(plan.nodes))) as pool:
            try:
                while pending or running:
                    if self._interrupted:
                        raise KeyboardInterrupt
                    if failed is None:
                        for node in [n for n in pending if _parent_name(n) is None or _parent_name(n) in done]:
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
                        elif isinstance(exc, _StageMissing):
                            results[node.name].status = "skipped"
                        else:
                            results[node.name].status = "failed"
                            results[node.name].error = str(exc)
                            failed = failed or exc
                            if isinstance(exc, BuildFailed):
                                self.reporter.failed(exc)
                        self._finished[node.name].set()
                    if failed is not None:  # nothing new starts; images waiting for these stages give up
                        for node in pending:
                            self._finished[node.name].set()
            except KeyboardInterrupt:
                self.buildah.cancel()
                for fut in running:
                    fut.cancel()
                for event in self._finished.values():
                    event.set()
                wait(list(running))
                raise
        for node in pending:
            results[node.name].status = "skipped"
        if failed is not None:
            raise failed

    def _cancelled(self) -> bool:
        return bool(self._interrupted) or self.buildah.cancelled

    def _stage_image(self, name: str) -> str:
        """Wait until the stage ``name`` is built (holding no job slot); its image ID."""
        event = self._finished[name]
        while not event.wait(0.5):
            if self._interrupted or self.buildah.cancelled:
                raise KeyboardInterrupt
        with self._lock:
            image_id = self._image_ids.get(name)
        if image_id is None:
            raise _StageMissing(name)
        return image_id

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
        stage_ids: dict[str, str] = {}  # filled as layers that copy from stages come up (the walk reads it)
        self.reporter.image_started(node, node.total_steps)
        steps = walk(node, parent_id or SCRATCH, stage_ids, self._provider())
        last: Found | None = None  # the newest hit, pulled from a registry only if something builds on it
        for_children = None
        reply: str | None = None
        layer_no = 0
        try:
            while True:
                if layer_no < len(node.layers):
                    for stage in node.layers[layer_no].stages:
                        if stage not in stage_ids:
                            stage_ids[stage] = self._stage_image(stage)
                    layer_no += 1
                decision = steps.send(reply)
                if decision.hit:
                    self._record_hit(node, decision, result)
                    last, reply = decision.found, None
                    continue
                base = self._local(last, node) if last else decision.base
                last = None
                with self._slots.held(self._priority.get(node.name, 0), self._cancelled):
                    reply = self._run(node, decision, base, stage_ids, result)
        except StopIteration as done:
            for_children = done.value
        ref = node.ref
        if last is not None and last.where != "local" and node.recipe not in plan.targets:
            final_id = last.image_id  # not a target: pulled only if a child or a CopyFrom needs it (_ensure_local)
        else:
            final_id = self._local(last, node) if last else reply
            if self._index.get(ref) != final_id:
                self.buildah.tag(final_id, ref)
                with self._lock:
                    self._index[ref] = final_id
        with self._lock:
            self._image_ids[node.name] = for_children or final_id
        result.image_id = final_id
        result.seconds = time.monotonic() - started
        result.status = "built" if result.misses else "cached"
        self.reporter.image_done(result)

    def _provider(self) -> Provider:
        if self.settings.no_cache:
            return NoCache()
        local = _LiveIndex(self)
        return FirstFound(local, self.remote) if self.remote else local

    def _local(self, found: Found, node: Node) -> str:
        """The found image in the local store: a registry hit is pulled now, because something needs it."""
        if found.where == "local":
            return found.image_id
        fetch = getattr(self.remote, "fetch", None)
        if fetch is None:  # pragma: no cover - a provider that finds remote images must fetch them
            raise RuntimeError(f"{found.ref} was found in {found.where} but cannot be fetched")
        image_id = fetch(found, self.buildah, self.log_root / node.name / "pull.log")
        with self._lock:
            self._index[found.ref] = image_id
        return image_id

    def _ensure_local(self, image_id: str, node: Node) -> str:
        """``image_id`` in the local store: an image a registry cache found but nobody pulled yet
        (a parent's or a stage's final image) is pulled when something builds on or copies from it."""
        with self._lock:
            local = image_id in self._records or image_id in self._index.values()
        fetch = getattr(self.remote, "fetch_image", None)
        if local or fetch is None:
            return image_id
        pulled = fetch(image_id, self.buildah)
        with self._lock:
            self._records.setdefault(pulled, ImageRecord(pulled, [], 0))
        return pulled

    def _record_hit(self, node: Node, decision: Decision, result: ImageResult) -> None:
        total = node.total_steps
        if decision.is_final or decision.is_flatten:
            kind, status = ("final", "final-hit") if decision.is_final else ("flatten", "hit")
            rec = StepRecord(decision.unit.index, kind, decision.unit.rendered.summary, decision.key, status,
                             source=decision.source)
            result.steps.append(rec)
            result.hits += 1
            self.reporter.step(node, rec, total, running=False)
            return
        for p in decision.unit.steps:
            rec = StepRecord(p.index, p.rendered.kind, p.rendered.summary, decision.key, "hit", source=decision.source)
            result.steps.append(rec)
            result.hits += 1
            self.reporter.step(node, rec, total, running=False)
        if decision.unit.final:
            fc = decision.unit.final
            rec = StepRecord(fc.index, "final", fc.rendered.summary, decision.key, "final-hit", source=decision.source)
            result.steps.append(rec)
            result.hits += 1
            self.reporter.step(node, rec, total, running=False)

    def _run(self, node: Node, decision: Decision, base: str, stage_ids: dict[str, str],
             result: ImageResult) -> str:
        """Build one layer or final commit on ``base``; returns the committed image ID."""
        total = node.total_steps
        image = None if base == SCRATCH else self._ensure_local(base, node)
        for stage in getattr(decision.unit, "stages", ()):
            stage_ids[stage] = self._ensure_local(stage_ids[stage], node)
        t0 = time.monotonic()
        if decision.is_flatten:
            rec = StepRecord(0, "flatten", decision.unit.rendered.summary, decision.key, "run")
            self.reporter.step(node, rec, total, running=True)
            self._note(f"{node.name}: {decision.unit.rendered.summary}")
            with self._container(image, node) as ctr:
                new_id = self._commit(ctr, node, 0, decision.key, squash=True, image_format=node.image_format)
            rec.seconds = time.monotonic() - t0
            result.misses += 1
            result.steps.append(rec)
            self.reporter.step(node, rec, total, running=False)
            return new_id
        if decision.is_final:
            fc: FinalCommit = decision.unit
            rec = StepRecord(fc.index, "final", fc.rendered.summary, decision.key, "final")
            self.reporter.step(node, rec, total, running=True)
            with self._container(image, node) as ctr:
                for call in fc.calls:
                    self._call(node, fc.index, "config", call, ctr, None, stage_ids)
                ctr.config(list(fc.label_args))
                new_id = self._commit(ctr, node, fc.index, decision.key, squash=fc.squash,
                                      image_format=node.image_format, final=True)
            rec.seconds = time.monotonic() - t0
            result.misses += 1
            result.steps.append(rec)
            self.reporter.step(node, rec, total, running=False)
            return new_id
        layer: Layer = decision.unit
        with self._container(image, node) as ctr:
            if image is None and node.arch:  # from scratch: the config says what the image will hold
                ctr.config(platform_args(node.arch))
            for p in layer.steps:
                rec = StepRecord(p.index, p.rendered.kind, p.rendered.summary, decision.key, "run")
                self.reporter.step(node, rec, total, running=True)
                s0 = time.monotonic()
                log = self.log_root / node.name / f"{p.index:02d}-{p.rendered.kind}.log"
                for call in p.rendered.calls:
                    self._call(node, p.index, p.rendered.summary, call, ctr, log, stage_ids)
                rec.seconds = time.monotonic() - s0
                result.steps.append(rec)
                result.misses += 1
                self.reporter.step(node, rec, total, running=False)
            fc = layer.final
            if fc:  # the image's final config + labels, in the same container
                rec = StepRecord(fc.index, "final", fc.rendered.summary, decision.key, "final")
                for call in fc.calls:
                    self._call(node, fc.index, "config", call, ctr, None, stage_ids)
                ctr.config(list(fc.label_args))
                result.steps.append(rec)
                result.misses += 1
            new_id = self._commit(ctr, node, layer.steps[-1].index, decision.key, squash=False,
                                  image_format=node.image_format, final=bool(fc))
        if len(layer.steps) == 1 and not fc:
            result.steps[-1].seconds = time.monotonic() - t0
        return new_id

    def _call(self, node: Node, index: int, summary: str, call, ctr: Container, log: Path | None,
              stage_ids: dict[str, str]) -> None:
        try:
            if isinstance(call, RunCall):
                env = dict(call.env)
                mounts = list(call.mounts)
                if self._host_ca:
                    mounts.append(Mount(target=HOST_CA_TARGET, source=self._host_ca))
                    env.update({k: HOST_CA_TARGET for k in HOST_CA_ENV})
                with self.secrets.mounts(call.secrets) as secret_mounts:
                    ctr.run(list(call.argv), env=env, user=call.user, workdir=call.workdir,
                            mounts=mounts + secret_mounts, network=call.network, log=log,
                            redactions=self.secrets.redactions())
            elif isinstance(call, CopyCall):
                from_image = stage_ids[call.from_stage] if call.from_stage else None
                ctr.copy(list(call.sources), call.dest, chown=call.chown, chmod=call.chmod,
                         from_image=from_image, log=log)
            elif isinstance(call, ConfigCall):
                ctr.config(list(call.args))
            elif isinstance(call, HostCall):
                log = log or self.log_root / node.name / f"{index:02d}-host.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                try:
                    HOST_ACTIONS[call.action](call, ctr, log, self.settings)
                except Exception as exc:  # a host tool the action ran itself (subprocess, sh) failed
                    code = getattr(exc, "exit_code", None) or getattr(exc, "returncode", None)
                    if code is None and not isinstance(exc, OSError):
                        raise
                    raise BuildahError([call.description], code or 127, tail_of(log) or str(exc), log) from None
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
        if self.committed is not None:
            self.committed(key, new_id)
        return new_id

    # -- cache index ------------------------------------------------------------
    def _load_index(self) -> None:
        records = self.buildah.images()
        with self._lock:
            for rec in records:
                self._records[rec.id] = rec
                for name in rec.names:
                    self._index[name] = rec.id

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
                return self.buildah.pull(parent, log=log, arch=node.arch or None)
            except BuildahError as exc:
                raise BuildFailed(node.name, 0, f"pull {parent}", " ".join(exc.command), exc.stderr_tail,
                                  log) from None
        with self._lock:
            return self._image_ids[node.parent_name or parent.name]

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


class Slots:
    """``--jobs`` containers at once. A freed slot goes to the waiting step of the image the most
    other images wait for (the critical path: wolfSSL before libuv), not to whoever asked first."""

    def __init__(self, size: int):
        self._free = size
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # heap of (-priority, arrival)
        self._arrivals = itertools.count()

    @contextmanager
    def held(self, priority: int = 0, cancelled: Callable[[], bool] = lambda: False):
        ticket = (-priority, next(self._arrivals))
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            try:
                while not (self._free > 0 and self._waiting[0] == ticket):
                    if cancelled():
                        raise KeyboardInterrupt
                    self._cond.wait(0.5)
            finally:
                self._waiting.remove(ticket)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
            self._free -= 1
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()


def waiting_images(plan: Plan) -> dict[str, int]:
    """Each image's priority for a free slot: the longest chain of images that wait for it (wolfSentry's
    stage → wolfSSL's → wolfCLU's → build), then how many images wait for it at all."""
    children: dict[str, set[str]] = {n.name: set() for n in plan.nodes}
    for n in plan.nodes:
        for dep in n.dep_names:
            children.setdefault(dep, set()).add(n.name)
    height: dict[str, int] = {}
    below: dict[str, set[str]] = {}
    for n in reversed(plan.nodes):  # topological order reversed: children first
        kids = children.get(n.name, set())
        height[n.name] = 1 + max((height[c] for c in kids), default=-1)
        below[n.name] = set(kids).union(*(below[c] for c in kids)) if kids else set()
    return {name: height[name] * 1000 + len(below[name]) for name in height}


def platform_args(arch: str) -> list[str]:
    """``buildah config`` arguments naming an architecture (``buildah from scratch`` says: this machine's)."""
    from .arches import get_arch

    a = get_arch(arch)
    return ["--os", "linux", "--arch", a.name, *(["--variant", a.variant] if a.variant else [])]


class _StageMissing(RuntimeError):
    """A stage this image copies from was not built (it failed, or the build stopped)."""


def _parent_name(node: Node) -> str | None:
    return (node.parent_name or node.parent.name) if isinstance(node.parent, type) else None


class _LiveIndex:
    """The executor's view of its store: the listing read at start plus what this run committed."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def find(self, key: str) -> Found | None:
        ref = cache_ref(key)
        with self.executor._lock:
            image_id = self.executor._index.get(ref)
        return Found(image_id, "local", ref) if image_id else None


__all__ = ["BuildFailed", "BuildReport", "Cancelled", "Executor", "ImageResult", "NullReporter", "StepRecord"]
