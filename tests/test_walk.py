"""The engine's seams: one walk for `plan` and `build`, one render per step, pure rendering, no import cycles."""

from __future__ import annotations

import ast
import socket
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import REPO, SHARED_SOURCES, TINY_BASE
from imagefactory import config
from imagefactory.describe import describe_plan
from imagefactory.execute import Executor
from imagefactory.plan import build_plan, prepare, render, resolve_graph
from imagefactory.prepare import FileDigests
from imagefactory.recipe import Recipe
from imagefactory.steps import CopyFrom, Run
from imagefactory.walk import StoreIndex, walk

PACKAGE = REPO / "imagefactory"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --- import graph ----------------------------------------------------------------
def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the imagefactory modules it imports anywhere (function bodies and TYPE_CHECKING too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_imagefactory_modules():
    graph = import_graph()
    assert "imagefactory.plan" in graph["imagefactory.execute"], "the graph must see real imports"
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_executor_uses_the_walk_not_plan_internals():
    imported = {alias.name for node in ast.walk(ast.parse((PACKAGE / "execute.py").read_text()))
                if isinstance(node, ast.ImportFrom) and node.module == "plan" for alias in node.names}
    assert imported <= {"FinalCommit", "Layer", "Node", "Plan"}, imported


# --- rendering is pure ----------------------------------------------------------------
def _settings(tmp_path: Path, **kw):
    base = {"source_cache": str(tmp_path / "sources"), "source_mirrors": [str(SHARED_SOURCES)],
            "state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "logs")}
    base.update(kw)
    return config.load(env={}, overrides=base)


def test_render_and_walk_need_no_network_no_host_tools_no_buildah(tmp_path, monkeypatch):
    """After prepare (fetch + verify sources, patch checks, digests), planning the shipped family works
    with PATH emptied (no patch, git, buildah, mmdebstrap) and sockets refused."""
    from imagefactory.loader import load_recipes

    load_recipes()
    settings = _settings(tmp_path)
    prepared = prepare(resolve_graph(["dev", "ci", "s4"], settings), FileDigests())

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    def no_network(*a, **kw):
        raise AssertionError("rendering opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    plan = render(prepared)
    kinds = Counter(p.rendered.kind for n in plan.nodes for p in n.planned)
    assert kinds["library"] >= 10 and kinds["bootstrap"] == 1, kinds
    cjson = [p.rendered for n in plan.nodes for p in n.planned if p.rendered.kind == "library"
             and "cjson" in p.rendered.summary]
    assert cjson and all("patch -p1" in r.calls[0].argv[-1] for r in cjson)
    index = StoreIndex({})
    for node in plan.nodes:
        decisions = list(walk(node, "scratch", {}, index))
        assert decisions and decisions[0].action in ("run", "final")  # nothing cached: the first unit runs


def test_render_refuses_an_unprepared_plan(tmp_path):
    from imagefactory.plan import PlanError

    class Unprepared(Recipe):
        """u"""
        name = _unique("unprepared")
        parent = TINY_BASE

        def steps(self):
            yield Run("true")

    with pytest.raises(PlanError, match="prepare"):
        render(resolve_graph([Unprepared], _settings(tmp_path)))


# --- one steps() and one render per recipe per build ------------------------------------
CALLS: Counter = Counter()


@dataclass
class CountedRun(Run):
    """A Run that counts how often it is rendered."""

    def render(self, ctx):
        CALLS[f"render:{self.script}"] += 1
        return super().render(ctx)


def counted_family():
    class Stage(Recipe):
        """stage"""

        name = _unique("count-stage")
        parent = TINY_BASE
        hidden = True

        def steps(self):
            CALLS[f"steps:{self.name}"] += 1
            yield CountedRun("echo stage > /stage.txt")

    class Top(Recipe):
        """top"""

        name = _unique("count-top")
        parent = TINY_BASE
        stages: ClassVar[dict] = {"stage": Stage}

        def steps(self):
            CALLS[f"steps:{self.name}"] += 1
            yield CountedRun("echo top > /top.txt")
            yield CopyFrom("stage", "/stage.txt", "/stage.txt")

    return Stage, Top


@pytest.mark.buildah
def test_each_recipes_steps_and_each_render_happen_once_per_build(tiny_store):
    from imagefactory.commands.build import run_build

    CALLS.clear()
    Stage, Top = counted_family()
    report, code = run_build([Top.name], tiny_store.settings())
    assert code == 0 and report["ok"], report
    assert Counter({f"steps:{Stage.name}": 1, f"steps:{Top.name}": 1,
                             "render:echo stage > /stage.txt": 1, "render:echo top > /top.txt": 1}) == CALLS, CALLS
    CALLS.clear()
    report, code = run_build([Top.name], tiny_store.settings())  # a no-op rebuild: the same, once each
    assert code == 0 and all(img["status"] == "cached" for img in report["images"])
    assert set(CALLS.values()) == {1} and len(CALLS) == 4, CALLS


# --- plan and build agree -------------------------------------------------------------------
def family(data_file: Path):
    class Base(Recipe):
        """walk family base"""

        name = _unique("walk-base")
        parent = TINY_BASE

        def steps(self):
            yield Run("echo base > /base.txt")
            yield Run("mkdir -p /data")

    class Stage(Recipe):
        """walk family stage"""

        name = _unique("walk-stage")
        parent = TINY_BASE
        hidden = True

        def steps(self):
            from imagefactory.steps import Copy

            yield Copy(str(data_file), "/data.txt")
            yield Run("wc -c /data.txt > /size.txt")

    class Leaf(Base):
        """walk family leaf"""

        name = _unique("walk-leaf")
        stages: ClassVar[dict] = {"stage": Stage}

        def steps(self):
            yield CopyFrom("stage", "/size.txt", "/data/size.txt")
            yield Run("cat /data/size.txt")

    return Base, Stage, Leaf


def _planned(store, target) -> list[tuple[str, str, int, str | None]]:
    data = describe_plan([target], store.settings())
    return [(img["image"], s["kind"], s["index"], s["status"], s["key"]) for img in data for s in img["steps"]
            if s["kind"] != "config"]


def _built(report) -> list[tuple[str, str, int, str | None]]:
    out = []
    for img in report.results:
        for s in img.steps:
            out.append((img.name, s.kind, s.index, "hit" if s.status in ("hit", "final-hit") else "miss", s.key))
    return out


@pytest.mark.buildah
def test_plan_and_build_reach_the_same_decision_for_every_step(tiny_store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("one\n")
    Base, Stage, Leaf = family(data)
    settings = tiny_store.settings()

    def build():
        return Executor(settings, tiny_store.buildah()).execute(build_plan([Leaf], settings))

    def compare(planned, built):
        by_step = {(img, kind, index): (status, key) for img, kind, index, status, key in built}
        assert len(planned) == len(by_step), (planned, built)
        for img, kind, index, status, key in planned:
            b_status, b_key = by_step[(img, kind, index)]
            assert status == b_status, (img, kind, index, status, b_status)
            if key is not None:  # plan knows a key until the first step that must run
                assert key == b_key, (img, kind, index)

    before = _planned(tiny_store, Leaf.name)
    assert {s[3] for s in before} == {"miss"}
    compare(before, _built(build()))
    # all cached: plan says hit with the same keys the build used
    after = _planned(tiny_store, Leaf.name)
    assert {s[3] for s in after} == {"hit"} and all(s[4] for s in after)
    compare(after, _built(build()))
    # a file change: the stage's copy misses, and so does every later step of the stage and the leaf's copy
    data.write_text("two two\n")
    changed = _planned(tiny_store, Leaf.name)
    status = {(img, kind, index): st for img, kind, index, st, _ in changed}
    assert status[(Base.name, "run", 1)] == "hit" and status[(Stage.name, "copy", 1)] == "miss"
    assert status[(Leaf.name, "copy-from", 1)] == "miss"
    compare(changed, _built(build()))


# --- step-level scheduling ------------------------------------------------------------------
def overlap_family():
    class SlowStage(Recipe):
        """a stage that takes a while"""

        name = _unique("slow-stage")
        parent = TINY_BASE
        hidden = True

        def steps(self):
            yield Run("sleep 4; cat /proc/uptime > /stage-done")

    class User(Recipe):
        """copies from the slow stage after a step of its own"""

        name = _unique("stage-user")
        parent = TINY_BASE
        stages: ClassVar[dict] = {"slow": SlowStage}

        def steps(self):
            yield Run("cat /proc/uptime > /own-start")
            yield CopyFrom("slow", "/stage-done", "/stage-done")

    return SlowStage, User


def _uptime(store, image: str, path: str) -> float:
    import subprocess

    bd = ["buildah", *store.args()]
    ctr = subprocess.run([*bd, "from", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        mnt = subprocess.run([*bd, "mount", ctr], capture_output=True, text=True, check=True).stdout.strip()
        return float((Path(mnt) / path.lstrip("/")).read_text().split()[0])
    finally:
        subprocess.run([*bd, "rm", ctr], capture_output=True)


@pytest.mark.buildah
def test_an_image_starts_before_the_stage_it_copies_from_is_done(tiny_store):
    """The image's own first step needs only its parent, so it runs while the stage builds."""
    SlowStage, User = overlap_family()
    settings = tiny_store.settings(jobs=2)
    report = Executor(settings, tiny_store.buildah()).execute(build_plan([User], settings))
    assert report.ok
    user = User.image_ref()
    assert _uptime(tiny_store, user, "/own-start") < _uptime(tiny_store, user, "/stage-done"), \
        "the image waited for the whole stage before its first step"


@pytest.mark.buildah
def test_one_job_still_builds_a_family_with_stages(tiny_store):
    """A waiting image holds no job slot, so --jobs 1 cannot deadlock on a stage."""
    SlowStage, User = overlap_family()
    settings = tiny_store.settings(jobs=1)
    report = Executor(settings, tiny_store.buildah()).execute(build_plan([User], settings))
    assert report.ok and {r.status for r in report.results} == {"built"}


# --- layer budget -------------------------------------------------------------------------
def deep_chain(links: int, steps_each: int):
    """Links of ``steps_each`` layers; the last is not squashed, so its layer count shows the flattening."""
    chain = []
    parent = TINY_BASE
    for i in range(links):
        attrs = {"__doc__": f"link {i}", "name": _unique(f"deep{i}"), "parent": parent,
                 "squash": False if i == links - 1 else None,
                 "steps": lambda self, i=i: (Run(f"echo {i}.{j} > /l{i}-{j}") for j in range(steps_each))}
        cls = type(f"Deep{i}", (Recipe,), attrs)
        chain.append(cls)
        parent = cls
    return chain


def test_a_chain_past_the_layer_budget_builds_on_a_flattened_parent(tmp_path):
    """Pure: a link of 4 steps stacks 5 layers (its config + labels fold into the last one, the
    revision labels add one), so with a budget of 14 the third link (1 + 5 + 5 + 4 = 15 layers)
    builds on a flattened parent; its keys still chain on the parent's ID."""
    chain = deep_chain(3, 4)
    settings = _settings(tmp_path, max_layers=14)
    plan = build_plan([chain[-1]], settings)
    flat = {n.name: n.flatten for n in plan.nodes}
    assert flat[chain[0].name] is None and flat[chain[1].name] is None
    assert flat[chain[2].name] is not None and "budget of 14" in flat[chain[2].name].rendered.summary
    decisions = list(walk(plan.node(chain[2]), "parent-id", {}, StoreIndex({})))
    assert decisions[0].is_flatten and decisions[0].key
    assert list(walk(plan.node(chain[2]), "parent-id", {}, StoreIndex({})))[0].key == decisions[0].key


@pytest.mark.buildah
def test_deep_chain_builds_and_rebuilds_with_the_flattened_parent_cached(tiny_store):
    chain = deep_chain(3, 4)
    settings = tiny_store.settings(max_layers=14)
    report = Executor(settings, tiny_store.buildah()).execute(build_plan([chain[-1]], settings))
    assert report.ok and any("flatten" in n for n in report.notes), report.notes
    last = next(r for r in report.results if r.name == chain[-1].name)
    assert [s.kind for s in last.steps][0] == "flatten"
    import subprocess

    layers = subprocess.run(["buildah", *tiny_store.args(), "inspect", "--format",
                             "{{len .OCIv1.RootFS.DiffIDs}}", chain[-1].image_ref()],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert int(layers) == 1 + 4, layers  # the flattened parent + 4 steps (the final folds into the last; 15 without)
    again = Executor(settings, tiny_store.buildah()).execute(build_plan([chain[-1]], settings))
    assert all(r.status == "cached" for r in again.results)


@pytest.mark.buildah
def test_final_config_and_labels_fold_into_the_last_layer(tiny_store):
    """An image that is not squashed is finished in its last step's container: no extra commit or layer."""

    class Folded(Recipe):
        """folded"""

        name = _unique("folded")
        parent = TINY_BASE
        squash = False

        def steps(self):
            yield Run("echo one > /one")
            yield Run("echo two > /two")
            from imagefactory.steps import Cmd

            yield Cmd("cat", "/two")

    settings = tiny_store.settings()
    buildah = tiny_store.buildah()
    report = Executor(settings, buildah).execute(build_plan([Folded], settings))
    assert report.ok and report.commits == 2 and report.containers_started == 2, report.to_dict()
    info = buildah.inspect(Folded.image_ref())
    assert len(info["OCIv1"]["rootfs"]["diff_ids"]) == 2 + 1  # busybox base + two steps, no empty layer
    assert info["OCIv1"]["config"]["Cmd"] == ["cat", "/two"]
    assert info["OCIv1"]["config"]["Labels"]["org.opencontainers.image.title"] == Folded.name


# --- slots: the critical path first -------------------------------------------------------------
def test_a_freed_slot_goes_to_the_waiting_step_more_images_wait_for():
    import threading
    import time

    from imagefactory.execute import Slots

    slots = Slots(1)
    order: list[str] = []
    release = threading.Event()

    def hold() -> None:
        with slots.held(0):
            release.wait(10)

    def step(name: str, priority: int) -> None:
        with slots.held(priority):
            order.append(name)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    waiters = []
    for name, priority in (("libuv", 1001), ("wolfssl", 2002), ("build", 0)):  # arrival order
        t = threading.Thread(target=step, args=(name, priority))
        t.start()
        waiters.append(t)
        time.sleep(0.1)
    release.set()
    for t in [holder, *waiters]:
        t.join(10)
    assert order == ["wolfssl", "libuv", "build"]


def test_priorities_follow_the_longest_chain_of_waiting_images(tmp_path):
    from imagefactory.execute import waiting_images
    from recipes.ocserv import Build

    prio = waiting_images(resolve_graph([Build], _settings(tmp_path)))
    libs = {name.split("-")[3]: p for name, p in prio.items() if name.startswith("ocserv-modern-lib-")
            and name != "ocserv-modern-lib-toolchain"}
    assert libs["wolfsentry"] > libs["wolfssl"] > libs["libuv"] == libs["cjson"] > prio["ocserv-modern-build"]
