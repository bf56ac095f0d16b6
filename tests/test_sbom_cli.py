"""`imagefactory sbom` on a real tiny image, and the post-build hook `write_sboms_for_results`."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import TINY_BASE
from sbom_checks import assert_sbom_relationships, assert_sbom_valid, cdx_components_by_kind

pytestmark = pytest.mark.buildah

DPKG_STATUS = (
    "Package: hello\\nStatus: install ok installed\\nVersion: 2.10-3\\nArchitecture: amd64\\n"
    "Maintainer: Santiago Vila <sanvila@debian.org>\\nDescription: example package\\n\\n"
)

RECIPES = textwrap.dedent(f"""
    from imagefactory import Recipe, Run

    class SbomTiny(Recipe):
        '''A tiny image with one dpkg entry.'''
        name = "sbom-cli-tiny"
        target = "sbomtiny"
        parent = "{TINY_BASE}"
        labels = {{"org.example.team": "supply"}}

        def steps(self):
            yield Run("mkdir -p /var/lib/dpkg && printf '{DPKG_STATUS}' > /var/lib/dpkg/status")
""")


@pytest.fixture
def project(tiny_store, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.py").write_text(RECIPES)
    cfg = tmp_path / "imagefactory.yaml"
    cfg.write_text(f"recipe_paths: [{recipes}]\njobs: 1\n")
    tiny_store.cli("build", "sbomtiny", "--config", str(cfg), "--report", str(tmp_path / "build.json"))
    return tiny_store, cfg


def test_sbom_cli_writes_valid_documents_with_parents(project, tmp_path):
    store, cfg = project
    out = tmp_path / "sboms"
    r = store.cli("sbom", "sbomtiny", "--out", str(out), "--config", str(cfg), "--report", str(tmp_path / "s.json"),
                  env=store.env(SOURCE_DATE_EPOCH="1700000000"))
    entry = json.loads((tmp_path / "s.json").read_text())["sboms"][0]
    assert entry["counts"]["deb"] == 1 and entry["counts"]["total"] == 1
    assert "sbom-cli-tiny" in r.stdout and "deb" in r.stdout
    spdx, cdx = out / "sbom-cli-tiny.spdx.json", out / "sbom-cli-tiny.cdx.json"
    assert str(spdx) == entry["spdx"] and str(cdx) == entry["cyclonedx"]
    _doc, bom = assert_sbom_valid(spdx, cdx)
    assert [c["name"] for c in cdx_components_by_kind(bom)["deb"]] == ["hello"]
    base_id = store.buildah().inspect(TINY_BASE)["FromImageID"]
    assert_sbom_relationships(spdx, cdx, ancestor_ids=[base_id])
    built = json.loads((tmp_path / "build.json").read_text())["images"][0]["image_id"]
    assert built in json.dumps(bom["metadata"]["component"])
    assert "org.example.team" in cdx.read_text()


def test_write_sboms_for_results_after_build(project, tmp_path):
    """The function `build` calls when `sbom_dir` is set."""
    from imagefactory.commands.supply import write_sboms_for_results
    from imagefactory.loader import load_recipes

    store, cfg = project
    load_recipes([str(tmp_path / "recipes")])
    report = json.loads((tmp_path / "build.json").read_text())
    assert write_sboms_for_results(store.settings(), report) == {}  # sbom_dir unset: nothing to do
    out = tmp_path / "auto"
    written = write_sboms_for_results(store.settings(sbom_dir=str(out)), report)
    assert set(written) == {"sbom-cli-tiny"}
    assert_sbom_valid(out / "sbom-cli-tiny.spdx.json", out / "sbom-cli-tiny.cdx.json")
