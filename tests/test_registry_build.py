"""Builds that share their step cache through a registry (--cache-from / --cache-to), with real
buildah, skopeo and Debian's docker-registry on 127.0.0.1: a fresh store builds nothing and pulls
only the target's final image, keys chain exactly as in a store that built locally, a later miss
pulls only the hit it builds on, and a registry that is down is a warning (or, required, an error)."""

from __future__ import annotations

import json
import textwrap

import pytest

try:
    from conftest import TINY_BASE, make_busybox_base, new_store
    from registry import free_port, local_registry
except ImportError:  # tests/ made a package
    from tests.conftest import TINY_BASE, make_busybox_base, new_store
    from tests.registry import free_port, local_registry

pytestmark = pytest.mark.buildah
SDE = "1700000000"  # the same timestamps in every store, so even final image IDs match


def _recipes(path, child_step: str = "cat /data.txt > /child.txt"):
    (path.parent / "data.txt").write_text("shared data\n")
    path.write_text(textwrap.dedent(f"""
        from imagefactory import Copy, Env, Recipe, Run
        class RegParent(Recipe):
            '''registry cache test parent'''
            name = "reg-parent"
            parent = "{TINY_BASE}"
            def steps(self):
                yield Env(GREETING="hello")
                yield Run("echo built > /built.txt")
                yield Copy("data.txt", "/data.txt")
        class RegChild(RegParent):
            '''registry cache test child'''
            name = "reg-child"
            def steps(self):
                yield Run({child_step!r})
    """))
    return path


def _build(store, recipe, *extra, check=True, report=None):
    report = report or recipe.parent / f"report-{store.root.parent.name}.json"
    env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), SOURCE_DATE_EPOCH=SDE)
    proc = store.cli("build", "reg-child", "--report", str(report), *extra, env=env, check=check)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def _keys(report) -> list[str]:
    return [s["key"] for img in report["images"] for s in img["steps"]]


def _keys_on_cached_images(report) -> list[str]:
    """Keys of every step up to the first one that runs: all of them build on cached images, so a
    store that pulled those must compute the same keys as one that built them. (Later keys build on
    a fresh commit, whose ID carries that commit's file times.)"""
    keys = []
    for s in (s for img in report["images"] for s in img["steps"]):
        keys.append(s["key"])
        if s["status"] in ("run", "final"):
            break
    return keys


@pytest.fixture
def two_stores():
    stores = [new_store("regbuild-a"), new_store("regbuild-b")]
    for s in stores:
        make_busybox_base(s)
    yield stores
    for s in stores:
        s.destroy()


def test_fresh_store_builds_nothing_and_keys_chain_as_locally(two_stores, tmp_path):
    built, fresh = two_stores
    (tmp_path / "src").mkdir()
    recipe = _recipes(tmp_path / "src" / "reg.py")
    with local_registry(tmp_path) as reg:
        repo = f"{reg.host}/team/cache"
        flags = ("--cache-from", repo, "--cache-to", repo, "--tls-verify=false")
        _, first = _build(built, recipe, *flags)
        assert first["registry_cache"]["pushes"] == first["commits"] > 0, first["registry_cache"]
        assert first["registry_cache"]["warnings"] == []

        # plan in the fresh store: every step would come from the registry, nothing is pulled
        env = fresh.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), SOURCE_DATE_EPOCH=SDE)
        plan = json.loads(fresh.cli("plan", "reg-child", "--json", "--cache-from", repo, "--tls-verify=false",
                                    env=env).stdout)
        assert {s["from"] for img in plan for s in img["steps"]} == {"registry"}, plan
        assert not fresh.buildah().exists("localhost/reg-child:latest")

        _, second = _build(fresh, recipe, "--cache-from", repo, "--tls-verify=false")
        assert second["containers_started"] == 0 and second["commits"] == 0
        assert sum(img["misses"] for img in second["images"]) == 0
        assert second["registry_cache"]["pulls"] == 1, "only the target's final image is pulled"
        assert _keys(second) == _keys(first)
        child = {img["name"]: img["image_id"] for img in second["images"]}["reg-child"]
        assert child == {img["name"]: img["image_id"] for img in first["images"]}["reg-child"]
        assert fresh.buildah().image_index()["localhost/reg-child:latest"] == child
        assert "localhost/reg-parent:latest" not in fresh.buildah().image_index(), "a non-target final is not pulled"

        # a changed child step: the fresh store pulls only the hit it builds on and computes the same
        # keys as the store that built everything locally
        _recipes(recipe, child_step="cat /data.txt /built.txt > /child.txt")
        _, local = _build(built, recipe)  # local store only: parent hits, child step runs
        _, remote = _build(fresh, recipe, "--cache-from", repo, "--tls-verify=false")
        assert _keys_on_cached_images(remote) == _keys_on_cached_images(local)
        assert remote["images"][-1]["steps"][0]["status"] == "run", "the changed step is the first miss"
        assert remote["registry_cache"]["pulls"] == 1, "only the hit the changed step builds on is pulled"
        assert sum(img["misses"] for img in remote["images"]) == sum(img["misses"] for img in local["images"])
        assert remote["images"][0]["image_id"] == local["images"][0]["image_id"]

        # the old child's entries are no longer reached by any recipe: prune deletes them, and only them
        pruned = tmp_path / "prune.json"
        env = built.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), SOURCE_DATE_EPOCH=SDE)
        built.cli("cache", "prune", "--registry", repo, "--keep", "reg-child", "--tls-verify=false",
                  "--report", str(pruned), env=env)
        old_child = {s["key"] for img in first["images"] if img["name"] == "reg-child" for s in img["steps"]}
        assert set(json.loads(pruned.read_text())["registry"]["deleted"]) == old_child


def test_registry_down_falls_back_to_building_or_fails_when_required(two_stores, tmp_path):
    store = two_stores[0]
    (tmp_path / "src").mkdir()
    recipe = _recipes(tmp_path / "src" / "reg.py")
    repo = f"127.0.0.1:{free_port()}/team/cache"
    env_fast = {"IMAGEFACTORY_NETWORK_RETRIES": "2", "IMAGEFACTORY_NETWORK_RETRY_DELAY": "0"}
    report = tmp_path / "strict.json"
    env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe), SOURCE_DATE_EPOCH=SDE, **env_fast)
    proc = store.cli("build", "reg-child", "--cache-from", repo, "--tls-verify=false", "--cache-required",
                     "--report", str(report), env=env, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"cache registry {repo}" in proc.stderr and "--cache-required" in proc.stderr
    assert not store.buildah().exists("localhost/reg-child:latest"), "no target tagged after a required failure"
    proc = store.cli("build", "reg-child", "--cache-from", repo, "--cache-to", repo, "--tls-verify=false",
                     "--report", str(report), env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    warnings = data["registry_cache"]["warnings"]
    assert any(f"cache registry {repo}: unreachable" in w for w in warnings), warnings
    assert any("could not push cache entry" in w for w in warnings), warnings
    assert store.buildah().exists("localhost/reg-child:latest")
