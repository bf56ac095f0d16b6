"""Bit-for-bit: one cold build of ``ci`` in a fresh store gives the images the shared e2e store holds.

The e2e store builds everything with ``SOURCE_DATE_EPOCH`` pinned (conftest), so its images are
what a cold build with that epoch must give. ``reproduce ci --against-store`` builds ``ci`` in the
e2e store (all cache hits once test_e2e_ocserv has run; built there otherwise) and once cold in a
temporary store, and compares every image of the chain (Debian bases, the library toolchain and
release library stages, build, ci) commit by commit: image IDs and layer digests. One more cold build, not two.

``s4`` is checked the same way by ``just reproduce`` (two cold builds of ``ci`` and ``s4``): its
builder stage downloads npm packages and a wheel, which does not fit this job's time.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import E2E_SOURCE_DATE_EPOCH
from imagefactory.layerdiff import describe
from recipes.ocserv import Build, LibraryToolchain

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

CHAIN = ("imagefactory-base-debian-full", "imagefactory-base-debian-slim", LibraryToolchain.name,
         *(stage.name for stage in Build.stages.values()), "ocserv-modern-build", "ocserv-modern-ci")


def explain(data: dict) -> str:
    lines = []
    for d in data.get("differing_steps", []):
        lines.append(f"{d['image']} step {d['index']} ({d['kind']}) {d['summary'][:80]}")
        lines += [f"    {line}" for line in describe(d["files"], limit=40)] if d.get("files") else []
    return "\n".join(lines) or data.get("error", "")


def test_ci_is_bit_for_bit_reproducible(e2e_store, tmp_path):
    report = tmp_path / "reproduce-ci.json"
    t0 = time.monotonic()
    proc = e2e_store.cli("reproduce", "ci", "--against-store", "--report", str(report), check=False,
                         timeout=3 * 3600)
    data = json.loads(report.read_text())
    data = data.get("data", data)
    print(f"reproduce ci --against-store: {time.monotonic() - t0:.0f}s")
    assert data.get("source_date_epoch") == int(E2E_SOURCE_DATE_EPOCH), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert data["against_store"]
    assert data["reproducible"], "not reproducible:\n" + explain(data) + "\n" + proc.stdout[-4000:]
    assert proc.returncode == 0
    images = {img["name"]: img for img in data["images"]}
    assert set(CHAIN) <= set(images)
    for name in CHAIN:
        img = images[name]
        a, b = img["image_ids"]
        assert a and a == b, name
        for step in img["steps"]:
            assert step["layers"][0] and step["layers"] == [step["layers"][0]] * 2, (name, step["summary"])
    # the temporary store is gone
    assert not list((e2e_store.home / "cache" / "imagefactory" / "state").glob("imagefactory-reproduce-*"))
