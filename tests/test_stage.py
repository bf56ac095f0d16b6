"""`fetch` and `promote`: later CI jobs work on the exact digests a build job pushed to staging."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap

import pytest

try:
    from conftest import TINY_BASE, make_busybox_base, new_store
    from registry import local_registry
except ImportError:  # tests/ made a package
    from tests.conftest import TINY_BASE, make_busybox_base, new_store
    from tests.registry import local_registry

pytestmark = pytest.mark.buildah


def _recipe(tmp_path):
    path = tmp_path / "staged.py"
    path.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run
        class Staged(Recipe):
            '''a staged image'''
            name = "staged-app"
            parent = "{TINY_BASE}"
            def steps(self):
                yield Run("echo staged > /staged")
    """))
    return path


def test_fetch_and_promote_keep_the_pushed_digest(tiny_store, tmp_path):
    recipe = _recipe(tmp_path)
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe))
    with local_registry(tmp_path) as reg:
        staging, release = f"{reg.host}/staging", f"{reg.host}/release"
        tiny_store.cli("build", "staged-app", env=env)
        report = tmp_path / "push.json"
        tiny_store.cli("push", "staged-app", "--registry", staging, "--report", str(report), env=env)
        pushed = json.loads(report.read_text())["pushed"][0]
        fresh = new_store("fetch")
        try:
            make_busybox_base(fresh)  # only the base: the staged image comes from the registry
            out = tmp_path / "fetch.json"
            fresh.cli("fetch", "staged-app", "--digests", str(report), "--tls-verify=false", "--report", str(out),
                      env=fresh.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
            fetched = json.loads(out.read_text())["fetched"][0]
            assert fetched["image_id"] == pushed["image_id"] and fetched["digest"] == pushed["digest"]
            assert fresh.buildah().image_index()["localhost/staged-app:latest"] == pushed["image_id"]
            out = tmp_path / "promote.json"
            fresh.cli("promote", "staged-app", "--digests", str(report), "--registry", release, "--tls-verify=false",
                      "--report", str(out), env=fresh.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
            promoted = json.loads(out.read_text())["promoted"][0]
            assert promoted["digest"] == pushed["digest"] and promoted["ref"] == f"{release}/staged-app:latest"
            raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                  f"docker://{release}/staged-app:latest"], capture_output=True, check=True).stdout
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == pushed["digest"]
            # a target the report does not name: one clear line, exit 1
            proc = fresh.cli("fetch", "other", "--digests", str(report), check=False,
                             env=fresh.env(IMAGEFACTORY_RECIPE_PATHS=str(recipe)))
            assert proc.returncode != 0
        finally:
            fresh.destroy()
