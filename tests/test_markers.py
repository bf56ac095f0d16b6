"""The markers say what the tests do: the selections in the Justfile and the CI lint jobs rely on them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

FAST = "not e2e and not slow and not faults and not rootless"


def _collected(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-3000:]  # 5: everything deselected
    return {line.removeprefix("tests/") for line in proc.stdout.splitlines() if "::" in line}


@pytest.fixture(scope="module")
def fast() -> set[str]:
    """What the fast selection picks from modules that mix fast tests, builds, faults and test users."""
    return _collected("-m", FAST, "tests/test_sbom.py", "tests/test_verify_cli.py", "tests/test_libraries.py",
                      "tests/test_faults.py", "tests/test_faults_network.py", "tests/test_rootless.py",
                      "tests/test_e2e_ocserv.py", "tests/test_debian_base.py")


def test_fixtures_imply_their_markers(fast):
    """A test reaching the library images through another fixture is still slow and buildah."""
    assert {"test_sbom.py::test_debian_license_mapping",
            "test_libraries.py::test_patch_bytes_profile_and_archive_are_in_the_key"} <= fast
    assert "test_sbom.py::test_summary" not in fast  # written -> fake_root -> lib_images
    assert not [t for t in fast if t.startswith("test_verify_cli.py")]
    slow = _collected("-m", "slow and buildah", "tests/test_sbom.py")
    assert "test_sbom.py::test_summary" in slow and "test_sbom.py::test_debian_license_mapping" not in slow


def test_the_fast_selection_leaves_out_builds_faults_and_test_users(fast):
    for module in ("test_faults.py", "test_faults_network.py", "test_rootless.py", "test_e2e_ocserv.py",
                   "test_debian_base.py"):
        assert not [t for t in fast if t.startswith(module)], module


def test_a_misspelt_marker_is_an_error(tmp_path):
    (tmp_path / "test_typo.py").write_text("import pytest\n\n@pytest.mark.slwo\ndef test_x():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                           "-c", str(REPO / "pyproject.toml"), str(tmp_path / "test_typo.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "'slwo' not found in `markers`" in proc.stdout + proc.stderr


def test_justfile_and_ci_lint_jobs_run_the_same_fast_selection():
    just = re.search(r'^unit:\n\s+python -m pytest [^\n]*-m "([^"]+)"', (REPO / "Justfile").read_text(), re.M)
    assert just and just.group(1) == FAST
    for path in (REPO / "ci" / "gitlab-ci.yml", REPO / "ci" / "github" / "imagefactory.yml"):
        assert re.findall(r'python -m pytest -m "([^"]+)"', path.read_text()) == [FAST], path.name
