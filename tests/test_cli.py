"""The core CLI as a user runs it: list, plan, build reports, images, clean, cache prune, doctor."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_BASE

pytestmark = pytest.mark.buildah

RECIPES = textwrap.dedent(f"""
    from imagefactory import Recipe, Run, Copy, Config

    class Small(Recipe):
        '''A small image for CLI tests.'''
        name = "cli-small"
        target = "small"
        parent = "{TINY_BASE}"
        size_budget_mb = 50

        def steps(self):
            yield Run("echo {{marker}} | tee /marker")
            yield Copy("payload.txt", "/payload.txt")
            yield Config(cmd=["cat", "/payload.txt"], labels={{"cli.test": "yes"}})
""")


@pytest.fixture
def project(tiny_store, tmp_path):
    """A user project: a config file naming an extra recipe folder, as docs/extending.md shows."""
    recipes = tmp_path / "myrecipes"
    recipes.mkdir()
    (recipes / "small.py").write_text(RECIPES.replace("{marker}", "one"))
    (recipes / "payload.txt").write_text("payload\n")
    cfg = tmp_path / "imagefactory.yaml"
    cfg.write_text("recipe_paths: [myrecipes]\njobs: 1\n")
    return tiny_store, cfg, recipes


def test_list_shows_targets_parents_and_descriptions(project, tmp_path):
    store, cfg, _ = project
    out = store.cli("list", "--config", str(cfg), "--report", str(tmp_path / "r.json")).stdout
    assert "small" in out
    data = json.loads((tmp_path / "r.json").read_text())
    small = next(t for t in data["targets"] if t["target"] == "small")
    assert small["description"] == "A small image for CLI tests."
    assert small["parent"] == TINY_BASE


def test_build_report_then_noop_then_images(project, tmp_path):
    store, cfg, _ = project
    r1 = tmp_path / "build1.json"
    store.cli("build", "small", "--config", str(cfg), "--report", str(r1))
    first = json.loads(r1.read_text())
    assert first["exit_code"] == 0 and first["ok"]
    img = first["images"][0]
    assert img["status"] == "built" and img["misses"] == 3 and img["size"] > 0
    assert img["size_budget_mb"] == 50 and not img["over_budget"]
    r2 = tmp_path / "build2.json"
    proc = store.cli("build", "small", "--config", str(cfg), "--report", str(r2))
    second = json.loads(r2.read_text())
    assert second["containers_started"] == 0 and second["commits"] == 0
    assert second["images"][0]["status"] == "cached"
    assert "cached" in proc.stderr
    out = store.cli("images", "--config", str(cfg), "--report", str(tmp_path / "i.json")).stdout
    assert "cli-small" in out
    images = json.loads((tmp_path / "i.json").read_text())["images"]
    assert images[0]["image_id"] == img["image_id"]


def test_step_logs_are_written_per_step(project, tmp_path):
    store, cfg, recipes = project
    report = tmp_path / "b.json"
    store.cli("build", "small", "--config", str(cfg), "--report", str(report))
    log_dir = Path(json.loads(report.read_text())["log_dir"]) / "cli-small"
    files = sorted(p.name for p in log_dir.iterdir())
    assert files[0].startswith("01-run") and any("copy" in f for f in files)
    first = (log_dir / files[0]).read_text()
    assert first.startswith("$ buildah") and "\none\n" in first, "the command, then its output"


def test_clean_removes_leftover_working_containers(project):
    store, cfg, _ = project
    bd = ["buildah", *store.args()]
    subprocess.run([*bd, "from", "--name", "imagefactory-leftover-1", TINY_BASE], check=True, capture_output=True)
    subprocess.run([*bd, "from", "--name", "someone-elses", TINY_BASE], check=True, capture_output=True)
    out = store.cli("clean", "--config", str(cfg)).stdout
    assert "1 working container" in out
    names = subprocess.run([*bd, "containers", "--format", "{{.ContainerName}}"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == ["someone-elses"], "clean only removes imagefactory's own containers"


def test_cache_prune_drops_unreachable_entries_only(project, tmp_path):
    store, cfg, recipes = project
    store.cli("build", "small", "--config", str(cfg))
    (recipes / "small.py").write_text(RECIPES.replace("{marker}", "two"))
    store.cli("build", "small", "--config", str(cfg))
    store.cli("cache", "list", "--config", str(cfg), "--report", str(tmp_path / "c.json"))
    before = json.loads((tmp_path / "c.json").read_text())
    store.cli("cache", "prune", "--keep", "small", "--config", str(cfg), "--report", str(tmp_path / "p.json"))
    pruned = json.loads((tmp_path / "p.json").read_text())
    assert pruned["pruned"] >= 3, "the 'one' generation is unreachable now"
    assert pruned["kept"] == before["entries"] - pruned["pruned"]
    store.cli("build", "small", "--config", str(cfg), "--report", str(tmp_path / "b.json"))
    again = json.loads((tmp_path / "b.json").read_text())
    assert again["images"][0]["status"] == "cached", "current entries survive a prune"


def test_unknown_target_and_bad_config_exit_2_with_a_clear_message(project, tmp_path):
    store, cfg, _ = project
    proc = store.cli("build", "nosuch", "--config", str(cfg), check=False)
    assert proc.returncode == 2
    assert "unknown target 'nosuch'" in proc.stderr and "small" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobz: 2\n")
    proc = store.cli("list", "--config", str(bad), check=False)
    assert proc.returncode == 2 and "unknown setting 'jobz'" in proc.stderr


def test_doctor_reports_each_check(project, tmp_path):
    store, cfg, _ = project
    proc = store.cli("doctor", "--config", str(cfg), "--image", TINY_BASE, "--report", str(tmp_path / "d.json"),
                     check=False)
    checks = {c["name"]: c for c in json.loads((tmp_path / "d.json").read_text())["checks"]}
    assert checks["buildah"]["ok"] and checks["storage"]["ok"] and checks["isolation"]["ok"]
    assert {"debian mirror", "cosign", "mmdebstrap"} <= set(checks)
    assert proc.returncode == 0
    assert "ran `true`" in checks["isolation"]["detail"], "isolation is proven by running a command"
    broken = store.cli("doctor", "--config", str(cfg), "--isolation", "nonsense", check=False)
    assert broken.returncode == 2 and "'isolation' is 'nonsense'" in broken.stderr
    missing_runtime = store.cli("doctor", "--config", str(cfg), "--isolation", "oci", "--image", TINY_BASE, "--report",
                                str(tmp_path / "d2.json"), check=False,
                                env=store.env(PATH="/usr/local/bin:/usr/bin:/bin", BUILDAH_RUNTIME="/nonexistent"))
    checks = {c["name"]: c for c in json.loads((tmp_path / "d2.json").read_text())["checks"]}
    assert missing_runtime.returncode == 1 and not checks["isolation"]["ok"] and "runc" in checks["isolation"]["fix"]


def test_build_writes_sboms_when_configured_and_checks_reproducibility(project, tmp_path):
    store, cfg, _ = project
    sboms = tmp_path / "sboms"
    env = store.env(IMAGEFACTORY_SBOM_DIR=str(sboms), SOURCE_DATE_EPOCH="1700000000")
    store.cli("build", "small", "--config", str(cfg), "--report", str(tmp_path / "b.json"), env=env)
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["sboms"]) == {"cli-small"}
    assert (sboms / "cli-small.spdx.json").is_file() and (sboms / "cli-small.cdx.json").is_file()
    store.cli("build", "small", "--check-reproducible", "--config", str(cfg), "--report",
              str(tmp_path / "r.json"), env=env)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["reproducible"] and rep["images"][0]["same"]
