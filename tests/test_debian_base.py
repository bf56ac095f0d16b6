"""The real Debian 13 slim base, bootstrapped by the tool, with apt working inside it.

Runs in the shared e2e store so the ocserv e2e builds reuse this base instead of
bootstrapping it again.
"""

from __future__ import annotations

import json

import pytest

from imagefactory import Install, Recipe, Run

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.buildah, pytest.mark.xdist_group("e2e")]


class AptProbe(Recipe):
    """Installs a package with apt inside the slim base and runs it."""

    name = "imagefactory-test-apt-probe"
    base = "slim"
    hidden = True

    def steps(self):
        yield Install("hello")
        yield Run("hello > /hello.out && test -s /hello.out")


def test_slim_base_bootstraps_and_apt_works(e2e_store, tmp_path):
    from imagefactory.execute import Executor
    from imagefactory.plan import build_plan

    settings = e2e_store.settings()
    report = Executor(settings, e2e_store.buildah()).execute(build_plan([AptProbe], settings))
    assert report.ok, report.to_dict()
    bd = e2e_store.buildah()
    slim = "localhost/imagefactory-base-debian-slim:latest"
    with bd.mounted_image(slim) as root:
        assert "13" in (root / "etc/debian_version").read_text() or "trixie" in (root / "etc/os-release").read_text()
        assert not any((root / "usr/share/man").iterdir()), "slim drops man pages"
        assert not list((root / "var/lib/apt/lists").glob("*_Packages")), "slim drops apt lists"
        dpkg_cfg = (root / "etc/dpkg/dpkg.cfg.d/99mmdebstrap").read_text()
        assert "path-exclude=/usr/share/doc/*" in dpkg_cfg and "path-include=/usr/share/doc/*/copyright" in dpkg_cfg
        assert not [p for p in (root / "usr/share/doc").rglob("*") if p.is_file() and p.name != "copyright"], \
            "the bootstrap unpacked no docs (nothing to strip later)"
        assert (root / "usr/share/doc/dpkg/copyright").is_file()
    with bd.mounted_image(AptProbe.image_ref()) as root:
        assert "Hello, world!" in (root / "hello.out").read_text()
        assert not (root / "usr/share/doc/hello/changelog.Debian.gz").exists(), "dpkg excludes docs in slim"
        assert (root / "usr/share/doc/hello/copyright").exists(), "copyright kept for SBOM licenses"
    # the base is itself a cached build: a second run starts no container
    again = Executor(settings, e2e_store.buildah()).execute(build_plan([AptProbe], settings))
    assert again.containers_started == 0
    # and the JSON report CI keeps says so: every image cached, every step a hit, same image IDs
    data = json.loads(json.dumps(again.to_dict()))
    first_ids = {r.name: r.image_id for r in report.results}
    assert data["ok"] and data["commits"] == 0
    assert {img["name"]: img["status"] for img in data["images"]} == {name: "cached" for name in first_ids}
    assert {img["name"]: img["image_id"] for img in data["images"]} == first_ids
    assert AptProbe.name in first_ids and "imagefactory-base-debian-slim" in first_ids
    assert all(st["status"].endswith("hit") for img in data["images"] for st in img["steps"])
