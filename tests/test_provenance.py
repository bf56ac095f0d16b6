"""Provenance pieces that need no image: the tree digest, statement validation, the shipped policy.

Real images, cosign and the policy evaluation are in test_e2e_supply.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagefactory import provenance
from imagefactory.toolchain import HARDENING_LDFLAGS, RELEASE

POLICY = Path(provenance.__file__).parent / "policies" / "release-provenance.cue"


def test_dir_hash_is_go_dirhash_h1_computed_by_coreutils(tmp_path):
    tree = tmp_path / "pkg-1.0"
    (tree / "src" / "sub").mkdir(parents=True)
    (tree / "a.c").write_text("int a;\n")
    (tree / "src" / "sub" / "b.h").write_text("#define B 1\n")
    (tree / "Z").write_bytes(b"\x00\x01")
    (tree / "link").symlink_to("a.c")  # symlinks are not hashed (as Go's module zips hold none)
    archive = tmp_path / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="pkg-1.0")
    # h1 = base64(sha256 of the `sha256sum` listing of the files, sorted by name)
    listing = subprocess.run("find . -type f | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum", shell=True,
                             cwd=tree, capture_output=True, text=True, check=True).stdout
    expected = "h1:" + base64.b64encode(hashlib.sha256(listing.encode()).digest()).decode()
    assert provenance.dir_hash(archive, "pkg-1.0/") == expected
    # a different compression of the same tree has another sha256 but the same tree digest
    again = tmp_path / "pkg.tar.xz"
    with tarfile.open(again, "w:xz") as tar:
        tar.add(tree, arcname="pkg-1.0")
    assert provenance.dir_hash(again, "pkg-1.0") == expected
    (tree / "a.c").write_text("int a = 1;\n")
    with tarfile.open(again, "w:xz") as tar:
        tar.add(tree, arcname="pkg-1.0")
    assert provenance.dir_hash(again, "pkg-1.0") != expected


def _statement() -> dict:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "localhost/x:latest", "digest": {"sha256": "a" * 64}}],
        "predicateType": provenance.PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {"buildType": provenance.BUILD_TYPE, "externalParameters": {"target": "x"},
                                "resolvedDependencies": [{"name": "x.tar.gz", "digest": {"sha256": "b" * 64}}]},
            "runDetails": {"builder": {"id": provenance.BUILDER_ID_PREFIX + "0.1.0"}},
        },
    }


@pytest.mark.parametrize("breakage, message", [
    (lambda s: s.update(subject=[]), "subject"),
    (lambda s: s["subject"][0].pop("digest"), "digest"),
    (lambda s: s.update(predicateType="https://slsa.dev/provenance/v0.2"), "predicateType"),
    (lambda s: s["predicate"]["buildDefinition"].pop("buildType"), "buildType"),
    (lambda s: s["predicate"]["runDetails"]["builder"].pop("id"), "builder.id"),
    (lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"][0].update(digest={"sha256": "xyz"}),
     "sha256"),
    (lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"].append({}), "resolvedDependencies"),
    (lambda s: s["predicate"]["buildDefinition"].update(unknownField=1), "unknownField"),
])
def test_validate_statement_rejects(breakage, message):
    provenance.validate_statement(_statement())
    broken = copy.deepcopy(_statement())
    breakage(broken)
    with pytest.raises(provenance.ProvenanceError, match=message):
        provenance.validate_statement(broken)


def _policy_list(name: str) -> set[str]:
    text = POLICY.read_text()
    body = re.search(rf"^#{name}: \[(.*?)\]", text, re.MULTILINE | re.DOTALL).group(1)
    return set(re.findall(r'"([^"]+)"', body))


def test_shipped_policy_requires_the_release_profile_hardening_flags():
    """The policy's required flags are the release profile's (toolchain.RELEASE): no drift."""
    required = _policy_list("RequiredCflags")
    assert required <= set(RELEASE.cflags), required - set(RELEASE.cflags)
    for flag in ("-D_FORTIFY_SOURCE=3", "-fstack-protector-strong", "-fstack-clash-protection", "-fPIC"):
        assert flag in required
    assert _policy_list("RequiredLdflags") <= set(HARDENING_LDFLAGS) and _policy_list("RequiredLdflags")
    assert not _policy_list("Weakening") & set(RELEASE.cflags + RELEASE.ldflags)
    assert "-fno-stack-protector" in _policy_list("Weakening")


def test_recording_values_remembers_what_recipes_read():
    values = provenance.RecordingValues({"ocserv.cflags.cjson": "-O1", "unused": "x"})
    assert values.get("ocserv.cflags.cjson") == "-O1" and values.get("ocserv.cflags.libuv") is None
    assert values.read == {"ocserv.cflags.cjson", "ocserv.cflags.libuv"}
