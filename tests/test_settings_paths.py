"""Relative paths in settings mean "relative to where the command started", resolved once; and the
tests themselves do not depend on the IMAGEFACTORY_* variables of whoever runs them (a CI job)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imagefactory import config

try:
    from conftest import REPO, SHARED_SOURCES, TINY_BASE, scrub_settings_environment
except ImportError:  # tests/ made a package
    from tests.conftest import REPO, SHARED_SOURCES, TINY_BASE, scrub_settings_environment


def test_relative_env_and_cli_paths_resolve_against_the_starting_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"IMAGEFACTORY_STATE_DIR": ".imagefactory/state", "IMAGEFACTORY_LOG_DIR": "logs",
           "IMAGEFACTORY_SOURCE_CACHE": "./src", "IMAGEFACTORY_SOURCE_MIRRORS": "mirror https://example.org/m",
           "IMAGEFACTORY_AUTHFILE": "auth/config.json"}
    s = config.load(env=env, overrides={"root": "store/root", "runroot": "store/run"})
    assert s.state_dir == str(tmp_path / ".imagefactory" / "state")
    assert s.log_dir == str(tmp_path / "logs")
    assert s.source_cache == str(tmp_path / "src")
    assert s.source_mirrors == [str(tmp_path / "mirror"), "https://example.org/m"]
    assert s.authfile == str(tmp_path / "auth" / "config.json")
    assert (s.root, s.runroot) == (str(tmp_path / "store/root"), str(tmp_path / "store/run"))
    # the buildah scratch folder derived from them is absolute too (the bug: a relative TMPDIR)
    assert Path(s.storage.tmp_root).is_absolute()
    # resolved once: changing folder afterwards changes nothing
    monkeypatch.chdir("/")
    assert s.state_path().is_relative_to(tmp_path)


def test_relative_paths_in_a_config_file_are_relative_to_that_file(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "imagefactory.yaml").write_text("state_dir: .state\nsbom_dir: out/sboms\ncache_from: [reg.example/c]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = config.load(str(project / "imagefactory.yaml"), env={"IMAGEFACTORY_LOG_DIR": "logs"})
    assert s.state_dir == str(project / ".state")
    assert s.sbom_dir == str(project / "out" / "sboms")
    assert s.log_dir == str(elsewhere / "logs")
    assert s.cache_from == ["reg.example/c"]  # a repository, not a path


def test_module_names_and_urls_are_not_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = config.load(env={"IMAGEFACTORY_RECIPE_PATHS": "mycompany.recipes ./local.py",
                         "IMAGEFACTORY_COSIGN_KEY": "awskms:///alias/release"})
    assert s.recipe_paths == ["mycompany.recipes", str(tmp_path / "local.py")]
    assert s.cosign_key == "awskms:///alias/release"


def test_scrub_drops_settings_but_keeps_harness_knobs():
    environ = {"IMAGEFACTORY_STATE_DIR": "x", "IMAGEFACTORY_CACHE_FROM": "r/c", "IMAGEFACTORY_SECRET_TOKEN": "s",
               "IMAGEFACTORY_TEST_TMP": "/var/tmp", "PATH": "/bin"}
    dropped = scrub_settings_environment(environ)
    assert sorted(dropped) == ["IMAGEFACTORY_CACHE_FROM", "IMAGEFACTORY_SECRET_TOKEN", "IMAGEFACTORY_STATE_DIR"]
    assert environ == {"IMAGEFACTORY_TEST_TMP": "/var/tmp", "PATH": "/bin"}


def test_a_pipeline_environment_does_not_leak_into_tests(tmp_path):
    """Run a test of this file in a child pytest whose environment looks like a CI job's."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(textwrap.dedent("""
        import os
        from imagefactory import config
        def test_defaults():
            assert not [k for k in os.environ if k in ("IMAGEFACTORY_STATE_DIR", "IMAGEFACTORY_JOBS")]
            assert config.load(env=None).jobs == 2
    """))
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    env = dict(os.environ, IMAGEFACTORY_STATE_DIR=".imagefactory/state", IMAGEFACTORY_JOBS="7",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.buildah
def test_build_with_relative_state_dir_from_another_folder(tiny_store, tmp_path):
    """The pipeline's settings (IMAGEFACTORY_STATE_DIR=.imagefactory/state, a relative store) in a
    folder that is not the checkout: RUN steps work, state lands below the starting folder."""
    recipe = tmp_path / "rel.py"
    recipe.write_text(textwrap.dedent(f"""
        from imagefactory import Recipe, Run
        class Rel(Recipe):
            '''relative paths'''
            name = "rel-paths"
            parent = "{TINY_BASE}"
            def steps(self):
                yield Run("echo hello > /hello")
    """))
    work = tmp_path / "job"
    work.mkdir()
    root, runroot = os.path.relpath(tiny_store.root, work), os.path.relpath(tiny_store.runroot, work)
    env = tiny_store.env(IMAGEFACTORY_RECIPE_PATHS="../rel.py", IMAGEFACTORY_STATE_DIR=".imagefactory/state",
                         IMAGEFACTORY_LOG_DIR=".imagefactory/logs", IMAGEFACTORY_SOURCE_CACHE=".imagefactory/sources",
                         IMAGEFACTORY_SOURCE_MIRRORS=str(SHARED_SOURCES), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "imagefactory", "build", "rel-paths", "--root", root,
                           "--runroot", runroot], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / ".imagefactory" / "state").is_dir()
    assert tiny_store.buildah().exists("localhost/rel-paths:latest")
