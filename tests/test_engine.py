"""The engine against real buildah, on a busybox base in a private store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from conftest import REPO, TINY_BASE
from imagefactory.execute import BuildFailed, Executor
from imagefactory.plan import build_plan
from imagefactory.walk import CACHE_REPO
from imagefactory.recipe import Recipe
from imagefactory.steps import Cmd, Copy, Env, Label, Run

pytestmark = pytest.mark.buildah


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def make_chain(data_file, marker: str = "one"):
    """A parent (copies a file) and a child (runs a command) on the busybox base."""

    class Parent(Recipe):
        """engine test parent"""

        name = _unique("t-parent")
        parent = TINY_BASE

        def steps(self):
            yield Env(GREETING="hello")
            yield Run("echo built > /built.txt")
            yield Copy(str(data_file), "/data.txt")
            yield Label(**{"test.marker": marker})

    class Child(Parent):
        """engine test child"""

        name = _unique("t-child")

        def steps(self):
            yield Run("cat /data.txt > /child.txt")
            yield Cmd("cat", "/child.txt")

    return Parent, Child


def build(store, *targets, **overrides):
    settings = store.settings(**overrides)
    ex = Executor(settings, store.buildah())
    return ex.execute(build_plan(list(targets), settings)), ex


def cache_entries(store) -> set[str]:
    return {n for r in store.buildah().images() for n in r.names if n.startswith(CACHE_REPO)}


def test_rebuild_is_all_hits_and_starts_no_container(tiny_store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("v1\n")
    _, child = make_chain(data)
    first, _ = build(tiny_store, child)
    assert first.ok and first.containers_started > 0
    second, ex = build(tiny_store, child)
    assert second.ok
    assert ex.buildah.counters.containers_started == 0
    assert ex.buildah.counters.commits == 0
    assert all(r.status == "cached" and r.misses == 0 for r in second.results)
    # a single listing of the store, nothing else
    assert [c[c.index("images") if "images" in c else 0] for c in ex.buildah.counters.calls] == ["images"]


def test_copied_file_bytes_invalidate_but_mtime_does_not(tiny_store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("v1\n")
    _, child = make_chain(data)
    build(tiny_store, child)
    os.utime(data, (time.time() + 100, time.time() + 100))
    again, _ = build(tiny_store, child)
    assert all(r.status == "cached" for r in again.results)
    data.write_text("v2\n")
    changed, _ = build(tiny_store, child)
    parent_res, child_res = changed.results
    ran = [s.kind for s in parent_res.steps if s.status == "run"]
    assert ran == ["copy"], "only the copy step (and what follows) may rerun"
    assert [s.status for s in parent_res.steps[:2]] == ["hit", "hit"]
    assert child_res.status == "built", "the child is invalidated when its parent changes"
    bd = tiny_store.buildah()
    with bd.mounted_image(child.image_ref()) as root:
        assert (root / "child.txt").read_text() == "v2\n"


def test_parent_change_invalidates_child_only_downstream(tiny_store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("same\n")
    parent1, child1 = make_chain(data, marker="one")
    build(tiny_store, child1)
    # the same child steps on a parent whose recipe line changed → child rebuilt
    parent2, child2 = make_chain(data, marker="two")
    parent2.name, child2.name = parent1.name, child1.name
    report, _ = build(tiny_store, child2)
    p, c = report.results
    assert p.status == "built" and c.status == "built"
    # the label is finished in the last layer's container (folded), so only that layer runs again
    assert [s.status for s in p.steps][:3] == ["hit", "hit", "run"]


def test_leaf_is_squashed_and_labelled(tiny_store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("x\n")
    parent, child = make_chain(data)
    report, _ = build(tiny_store, child, source_date_epoch=1700000000)
    assert report.ok
    bd = tiny_store.buildah()
    info = bd.inspect(child.image_ref())
    layers = info["OCIv1"]["rootfs"]["diff_ids"]
    assert len(layers) == 1, "leaf images are squashed to one layer"
    parent_layers = bd.inspect(parent.image_ref())["OCIv1"]["rootfs"]["diff_ids"]
    assert len(parent_layers) > 1, "intermediates keep their layers for the cache"
    labels = info["OCIv1"]["config"]["Labels"]
    for key in ("title", "version", "created", "licenses", "revision"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["test.marker"] == "one"
    assert info["OCIv1"]["created"].startswith("2023-11-14T22:13:20")


def test_failing_step_leaves_no_container_and_no_cache_entry(tiny_store, tmp_path):
    class Broken(Recipe):
        """fails on purpose"""

        name = _unique("t-broken")
        parent = TINY_BASE

        def steps(self):
            yield Run("echo about to fail; echo marker-in-log; exit 3")

    before = cache_entries(tiny_store)
    with pytest.raises(BuildFailed) as err:
        build(tiny_store, Broken)
    assert "marker-in-log" in err.value.tail
    assert err.value.log is not None and err.value.log.is_file()
    assert err.value.step_no == 1
    assert tiny_store.containers() == []
    assert cache_entries(tiny_store) == before


def test_failure_via_cli_shows_command_and_log_tail(tiny_store, tmp_path):
    recipe = tmp_path / "broken.py"
    recipe.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run
        class Broken(Recipe):
            '''fails'''
            name = "cli-broken"
            parent = "{TINY_BASE}"
            def steps(self):
                yield Run("echo the-tail-line; false")
    """))
    proc = tiny_store.cli("build", "cli-broken", check=False,
                          env=tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
    assert proc.returncode == 1
    assert "the-tail-line" in proc.stderr
    assert "step 1" in proc.stderr and "false" in proc.stderr
    assert tiny_store.containers() == []


def test_sigint_mid_step_leaves_no_working_container(tiny_store, tmp_path):
    recipe = tmp_path / "slow.py"
    recipe.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run
        class Slow(Recipe):
            '''sleeps'''
            name = "cli-slow"
            parent = "{TINY_BASE}"
            def steps(self):
                yield Run("echo started; sleep 60")
    """))
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe))
    proc = subprocess.Popen([sys.executable, "-m", "imagefactory", "build", "cli-slow", *tiny_store.args()],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not tiny_store.containers():
        time.sleep(0.2)
    assert tiny_store.containers(), "the step should be running in a working container"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert tiny_store.containers() == []
    assert not any("cli-slow" in n for n in json.dumps([r.names for r in tiny_store.buildah().images()]).split())


def test_plan_json_shows_status_and_calls_without_building(tiny_store, tmp_path):
    recipe = tmp_path / "planme.py"
    data = tmp_path / "f.txt"
    data.write_text("x")
    recipe.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run, Copy
        class P(Recipe):
            '''plan me'''
            name = "cli-plan"
            parent = "{TINY_BASE}"
            def steps(self):
                yield Run("echo one")
                yield Copy("f.txt", "/f.txt")
    """))
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe))
    plan = json.loads(tiny_store.cli("plan", "cli-plan", "--json", env=env).stdout)
    steps = plan[0]["steps"]
    assert [s["status"] for s in steps] == ["miss", "miss", "miss"]
    assert "buildah" in steps[0]["calls"][0] and "echo one" in steps[0]["calls"][0]
    assert tiny_store.containers() == []
    tiny_store.cli("build", "cli-plan", env=env)
    plan = json.loads(tiny_store.cli("plan", "cli-plan", "--json", env=env).stdout)
    assert [s["status"] for s in plan[0]["steps"]] == ["hit", "hit", "hit"]


def test_new_git_revision_relabels_but_does_not_rebuild_children(tiny_store, tmp_path, monkeypatch):
    import imagefactory.prepare as prepare

    data = tmp_path / "data.txt"
    data.write_text("r\n")
    parent, child = make_chain(data)
    monkeypatch.setattr(prepare, "git_facts", lambda folder: ("rev-one", None))
    build(tiny_store, child)
    monkeypatch.setattr(prepare, "git_facts", lambda folder: ("rev-two", None))
    report, ex = build(tiny_store, child)
    p, c = report.results
    assert [s.status for s in p.steps if s.kind != "final"] == ["hit"] * 3
    assert [s.status for s in p.steps if s.kind == "final"] == ["final-hit", "final"], \
        "stable commit reused, only the revision-label commit is new"
    assert [s.status for s in c.steps if s.kind != "final"] == ["hit"], "the child's steps stay cached"
    bd = tiny_store.buildah()
    assert bd.inspect(parent.image_ref())["OCIv1"]["config"]["Labels"]["org.opencontainers.image.revision"] == "rev-two"
    assert bd.inspect(child.image_ref())["OCIv1"]["config"]["Labels"]["org.opencontainers.image.revision"] == "rev-two"
