"""`imagefactory reproduce`: two cold builds in two temporary stores, compared image by image, step by step."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import TINY_BASE

pytestmark = pytest.mark.buildah

RECIPES = textwrap.dedent(f"""
    from imagefactory import Recipe, Run, Config, Healthcheck

    class Stable(Recipe):
        '''Same bytes every time.'''
        name = "repro-stable"
        target = "stable"
        parent = "{TINY_BASE}"

        def steps(self):
            yield Run("mkdir -p /app && echo hello > /app/greeting && chmod 0644 /app/greeting")
            yield Config(cmd=["cat", "/app/greeting"])

    class Dated(Recipe):
        '''Writes the build time into the image: not reproducible.'''
        name = "repro-dated"
        target = "dated"
        parent = "{TINY_BASE}"
        squash = False

        def steps(self):
            yield Run("echo fixed > /fixed")
            yield Run("date > /built-at && sleep 1")
            yield Run("echo after > /after")

    class Healthy(Recipe):
        '''A HEALTHCHECK makes it a Docker-format image.'''
        name = "repro-healthy"
        target = "healthy"
        parent = "{TINY_BASE}"
        squash = False

        def steps(self):
            yield Run("echo ok > /status")
            yield Healthcheck("cat /status")
""")


@pytest.fixture
def project(tiny_store, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "repro.py").write_text(RECIPES)
    cfg = tmp_path / "imagefactory.yaml"
    cfg.write_text(f"recipe_paths: [{recipes}]\njobs: 1\n")
    return tiny_store, cfg


def _reproduce(store, cfg, tmp_path, *targets, epoch="1700000000"):
    report = tmp_path / f"repro-{'-'.join(t.strip('-') for t in targets)}.json"
    proc = store.cli("reproduce", *targets, "--config", str(cfg), "--report", str(report), check=False,
                     env=store.env(SOURCE_DATE_EPOCH=epoch))
    return proc, json.loads(report.read_text())


def test_two_cold_builds_give_the_same_image_id(project, tmp_path):
    store, cfg = project
    proc, rep = _reproduce(store, cfg, tmp_path, "stable")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rep["reproducible"] and rep["source_date_epoch"] == 1700000000 and rep["differing_steps"] == []
    (img,) = rep["images"]
    assert img["same"] and img["image_ids"][0] == img["image_ids"][1]
    assert all(st["same"] for st in img["steps"])
    # the temporary stores are gone and the user's store was not touched
    assert rep["stores"] == []
    assert not list((store.home / "cache" / "imagefactory" / "state").glob("imagefactory-reproduce-*"))
    assert "localhost/repro-stable:latest" not in store.buildah().image_index()


def test_against_store_compares_one_cold_build_with_the_store(project, tmp_path):
    """--against-store: the targets are built in the user's store (cache as usual), plus ONE cold build."""
    store, cfg = project
    proc, rep = _reproduce(store, cfg, tmp_path, "stable", "--against-store")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rep["reproducible"] and rep["against_store"]
    (img,) = rep["images"]
    assert store.buildah().image_index()["localhost/repro-stable:latest"] == img["image_ids"][0] == img["image_ids"][1]
    assert "cold build a" not in proc.stderr and "cold build b" in proc.stderr  # one cold build only
    proc, rep = _reproduce(store, cfg, tmp_path, "dated", "--against-store")
    assert proc.returncode != 0 and not rep["reproducible"]
    assert [f["path"] for d in rep["differing_steps"] if d["files"] for f in d["files"]["files"]] == ["/built-at"]


def test_docker_format_images_are_reproducible(project, tmp_path):
    """buildah < 1.30 writes the working container's ID into Docker configs; the commit drops it."""
    store, cfg = project
    proc, rep = _reproduce(store, cfg, tmp_path, "healthy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (img,) = rep["images"]
    assert img["same"] and all(st["same"] for st in img["steps"])
    store.cli("build", "healthy", "--config", str(cfg), env=store.env(SOURCE_DATE_EPOCH="1700000000"))
    info = store.buildah().inspect("localhost/repro-healthy:latest")
    assert info["Docker"]["config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"  # the health check is kept
    assert "container" not in json.loads(info["Config"])
    assert info["FromImageID"] == img["image_ids"][0]  # the store's build is the reproduced one


def test_a_step_writing_the_date_is_reported(project, tmp_path):
    store, cfg = project
    proc, rep = _reproduce(store, cfg, tmp_path, "dated")
    assert proc.returncode != 0
    assert not rep["reproducible"]
    (img,) = rep["images"]
    assert not img["same"]
    by_summary = {st["summary"]: st for st in img["steps"]}
    dated = next(st for s, st in by_summary.items() if "date > /built-at" in s)
    assert not dated["layer_same"]
    fixed = next(st for s, st in by_summary.items() if "/fixed" in s)
    assert fixed["same"]  # the step before it is byte-identical
    after = next(st for s, st in by_summary.items() if "/after" in s)
    assert after["layer_same"] and after["only_parent_differs"]  # same layer, differs only by its parent
    differing = [d for d in rep["differing_steps"] if d["kind"] != "final"]
    assert [d["summary"] for d in differing] == [dated["summary"]]
    assert "date > /built-at" in proc.stdout
    # the files that make the layer differ are named
    (bad,) = [d for d in rep["differing_steps"] if "date > /built-at" in d["summary"]]
    assert [f["path"] for f in bad["files"]["files"]] == ["/built-at"]
    assert "content" in bad["files"]["files"][0]["what"]
    assert "/built-at: " in proc.stdout


def test_epoch_defaults_to_the_recipes_git_head_time(tmp_path):
    """No SOURCE_DATE_EPOCH anywhere: the commit time of the recipes' checkout is used."""
    import os
    import subprocess

    from imagefactory import config
    from imagefactory.loader import load_recipes
    from imagefactory.reproduce import ReproduceError, resolve_epoch

    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "epoch_recipe.py").write_text(RECIPES.replace("repro-", "repro-epoch-").replace('"stable"', '"epoch-a"')
                                          .replace('"dated"', '"epoch-b"'))
    load_recipes([str(repo / "epoch_recipe.py")])
    settings = config.load(config_file=None, env={}, overrides={"state_dir": str(tmp_path / "state")})
    with pytest.raises(ReproduceError, match="SOURCE_DATE_EPOCH"):
        resolve_epoch(["epoch-a"], settings)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "recipes"], check=True,
                   env={"GIT_COMMITTER_DATE": "@1650000000 +0000", "PATH": os.environ["PATH"]})
    assert resolve_epoch(["epoch-a"], settings) == (1650000000, "git HEAD commit time of the recipes")
    assert resolve_epoch(["epoch-a"], settings, 42)[0] == 42


def _commit(index, kind, layer, image):
    return {"indexes": [index], "kinds": [kind], "summaries": [f"{kind} {index}"], "layer": layer, "image": image}


def test_compare_runs_tells_layers_parents_and_configs_apart():
    """Pure logic: a differing layer, commits that only sit on another parent, a config-only difference."""
    from imagefactory.reproduce import compare_runs, config_differences

    def run(*commits, image_id):
        return {"img": {"target": "t", "image_id": image_id, "commits": list(commits)}}

    same = [_commit(1, "run", "L1", "I1")]
    a = run(*same, _commit(2, "run", "L2", "I2"), _commit(3, "run", "L3", "I3"), image_id="I3")
    b = run(*same, _commit(2, "run", "L2x", "J2"), _commit(3, "run", "L3", "J3"), image_id="J3")
    rep = compare_runs(a, b, 1, "test", 0.0, [])
    assert not rep["reproducible"]
    assert [(d["index"], d["config_only"]) for d in rep["differing_steps"]] == [(2, False)]
    assert rep["images"][0]["steps"][2]["only_parent_differs"]
    # same layers everywhere, but the last commit's image differs: its config does
    a = run(*same, _commit(2, "final", "L2", "I2"), image_id="I2")
    b = run(*same, _commit(2, "final", "L2", "J2"), image_id="J2")
    rep = compare_runs(a, b, 1, "test", 0.0, [])
    assert [(d["index"], d["config_only"]) for d in rep["differing_steps"]] == [(2, True)]
    assert config_differences({"container": "abc", "config": {"Env": ["A=1"], "Labels": {"rev": "1", "t": "x"}}},
                              {"config": {"Env": ["A=2"], "Labels": {"rev": "2", "t": "x"}}}) == [
        "config.Env", "config.Labels.rev", "container"]
