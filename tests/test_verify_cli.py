"""`imagefactory verify` on real images: the hardened library images pass, an unhardened binary fails.

Reads the shared library test images (lib_images.py, one build per test run).
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.buildah, pytest.mark.slow]


def test_verify_passes_on_hardened_libraries(lib_images, tmp_path):
    store, recipes, _, _ = lib_images
    ref = recipes["a"].image_ref()
    proc = store.cli("verify", ref, "--size", "--report", str(tmp_path / "a.json"))
    assert "OK" in proc.stdout and "libllhttp.so.9.4.3" in proc.stdout
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["exit_code"] == 0 and data["ok"] is True and data["image"] == ref
    paths = {f["path"]: f for f in data["files"]}
    assert paths["usr/local/lib/libcjson.so.1.7.19"]["profile"] == "debug"
    assert paths["usr/local/lib/libllhttp.so.9.4.3"]["profile"] == "release"
    assert [c["name"] for c in data["image_checks"]] == ["size"]  # no recipe known to the CLI: report only
    assert data["image_checks"][0]["status"] == "info"


def test_verify_fails_naming_the_unhardened_file(lib_images, tmp_path):
    store, recipes, _, _ = lib_images
    ref = recipes["unsafe"].image_ref()
    proc = store.cli("verify", ref, "--report", str(tmp_path / "u.json"), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())  # rich may wrap long lines
    assert "FAILED" in out
    for check in ("pie", "nx-stack", "relro", "stack-protector"):
        assert f"usr/local/bin/unsafe-tool: {check}:" in out
    data = json.loads((tmp_path / "u.json").read_text())
    failed = {(f["file"], f["check"]) for f in data["failures"]}
    assert ("usr/local/bin/unsafe-tool", "pie") in failed and ("usr/local/bin/unsafe-tool", "nx-stack") in failed
    assert not any(f.startswith("usr/local/lib/libllhttp") for f, _ in failed)  # its neighbour is fine


def test_verify_profile_override_and_unknown_image(lib_images):
    store, recipes, _, _ = lib_images
    # forcing "release" on the image holding debug cJSON: the debug info is now a failure
    proc = store.cli("verify", recipes["a"].image_ref(), "--profile", "release", check=False)
    assert proc.returncode == 1
    assert "usr/local/lib/libcjson.so.1.7.19: debug-info:" in " ".join(proc.stdout.split())
    missing = store.cli("verify", "localhost/does-not-exist:latest", check=False)
    assert missing.returncode == 1 and "cannot read image" in missing.stderr
