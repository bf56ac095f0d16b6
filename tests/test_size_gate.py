"""The size gate (`verify TARGET --size`) on a real image: per-platform budgets, and a failure that
names the image, its size and the budget.

A busybox image (~2 MB) with budgets on both sides of its size stands in for the shipped images,
which the e2e tests check against their own budgets.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from conftest import TINY_BASE, make_busybox_base, new_store, require_tool

pytestmark = pytest.mark.buildah

RECIPES = textwrap.dedent(f"""
    from imagefactory import Recipe, Run

    class Fits(Recipe):
        '''busybox plus 1 MB, within its budget on debian, over it on ubi9.'''
        name = "size-gate-fits"
        target = "fits"
        parent = "{TINY_BASE}"
        size_budget_mb = {{"debian": 50, "ubi9": 1.5}}

        def steps(self):
            yield Run("head -c 1000000 /dev/zero > /payload")

    class Over(Fits):
        '''Fits plus 1 MB more, over its budget everywhere.'''
        name = "size-gate-over"
        target = "over"
        size_budget_mb = 2.5

        def steps(self):
            yield Run("head -c 1000000 /dev/zero > /payload2")
""")


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """Both images built once; yields the store, the env naming the recipe folder, and the build report."""
    require_tool("buildah")
    store = new_store("size-gate")
    try:
        make_busybox_base(store)
        folder = tmp_path_factory.mktemp("recipes")
        (folder / "gate.py").write_text(RECIPES)
        env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(folder))
        report = folder / "build.json"
        store.cli("build", "fits", "over", "--report", str(report), env=env)
        yield store, env, json.loads(report.read_text())
    finally:
        store.destroy()


def _size_mb(build_report: dict, name: str) -> float:
    return next(i["size"] for i in build_report["images"] if i["name"] == name) / 1e6


def test_over_budget_fails_naming_image_size_and_budget(gated, tmp_path):
    store, env, built = gated
    size = _size_mb(built, "size-gate-over")
    assert size > 2.5, f"the test image must be over its budget ({size:.1f} MB)"
    over = next(i for i in built["images"] if i["name"] == "size-gate-over")
    assert over["over_budget"] and over["size_budget_mb"] == 2.5  # the build report agrees
    proc = store.cli("verify", "over", "--size", "--report", str(tmp_path / "v.json"), env=env, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = " ".join(proc.stdout.split())  # rich may wrap long lines
    message = f"localhost/size-gate-over:latest is {size:.1f} MB, over its size budget of 2.5 MB on debian"
    assert message in line, line
    check = json.loads((tmp_path / "v.json").read_text())["image_checks"][0]
    assert check["status"] == "fail" and check["detail"].startswith(message)
    assert re.search(r"by \d+\.\d MB; make the image smaller or raise the recipe's size_budget_mb", check["detail"])


def test_budget_is_per_platform(gated, tmp_path):
    store, env, built = gated
    size = _size_mb(built, "size-gate-fits")
    assert 1.5 < size < 50
    ok = store.cli("verify", "fits", "--size", env=env, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "within its size budget of 50 MB on debian" in " ".join(ok.stdout.split())
    # the same image judged with the ubi9 budget (verify reads no base, only the recipe's budget)
    ubi = store.cli("verify", "fits", "--size", env={**env, "IMAGEFACTORY_PLATFORM": "ubi9"}, check=False)
    assert ubi.returncode == 1
    assert f"localhost/size-gate-fits:latest is {size:.1f} MB, over its size budget of 1.5 MB on ubi9" in \
        " ".join(ubi.stdout.split())
