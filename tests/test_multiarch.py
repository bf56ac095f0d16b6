"""Multi-arch: one plan over architectures, arch in the keys, manifest lists, push and sign of the index."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import new_store, require_tool
from imagefactory import config
from imagefactory.arches import ArchError, get_arch, host_arch, parse_arches
from imagefactory.describe import walk_plan
from imagefactory.multiarch import is_multiarch
from imagefactory.plan import build_plan, resolve_graph
from imagefactory.recipe import Recipe
from imagefactory.steps import Copy, CopyFrom, Run
from imagefactory.walk import NoCache
from registry import local_registry

HOST = host_arch().name
FOREIGN = "arm64" if HOST == "amd64" else "amd64"


def _settings(tmp_path: Path, arches: str) -> config.Settings:
    return config.load(env={"IMAGEFACTORY_STATE_DIR": str(tmp_path / "state"),
                            "IMAGEFACTORY_ARCHES": arches})


def _family():
    tag = uuid.uuid4().hex[:6]

    class Tools(Recipe):
        """a build-platform stage: runs on the build machine, makes files for the target"""

        name = f"ma-tools-{tag}"
        hidden = True
        build_platform = True
        parent = "localhost/some-base:latest"

        def steps(self):
            yield Run(f"echo {self.arch.name} for {self.target.name} cross={self.cross} > /out.txt")

    class Top(Recipe):
        """the image users run"""

        name = f"ma-top-{tag}"
        stages: ClassVar[dict] = {"tools": Tools}

        def steps(self):
            yield CopyFrom("tools", "/out.txt", "/out.txt")

    return Tools, Top


# --- pure: names, plans, keys ------------------------------------------------------------------
def test_arch_names_are_one_table():
    assert get_arch("x86_64").name == "amd64" and get_arch("aarch64").name == "arm64"
    assert get_arch("arm64").triple == "aarch64-linux-gnu" and get_arch("arm64").platform == "linux/arm64/v8"
    assert parse_arches("x86_64, arm64,amd64") == ("amd64", "arm64")
    with pytest.raises(ArchError, match="riscv.*amd64, arm64"):
        parse_arches("riscv")
    with pytest.raises(config.ConfigError, match="environment: setting 'arches'.*'sparc'"):
        config.load(env={"IMAGEFACTORY_ARCHES": "amd64,sparc"})
    assert not is_multiarch((HOST,)) and is_multiarch((HOST, FOREIGN)) and is_multiarch((FOREIGN,))


def test_one_plan_holds_every_architecture_and_build_platform_stages_run_natively(tmp_path):
    Tools, Top = _family()
    plan = resolve_graph([Top], _settings(tmp_path, f"{HOST},{FOREIGN}"))
    by_name = {n.name: n for n in plan.nodes}
    native, foreign = by_name[Top.name], by_name[f"{Top.name}@{FOREIGN}"]
    assert (native.arch, native.target_arch, native.ref) == (HOST, HOST, Top.image_ref())
    assert (foreign.arch, foreign.target_arch) == (FOREIGN, FOREIGN)
    assert foreign.ref == f"localhost/{Top.name}:latest-{FOREIGN}"
    # the foreign image's stage runs on this machine, building for the foreign architecture
    stage = by_name[f"{Tools.name}@{FOREIGN}"]
    assert (stage.arch, stage.target_arch) == (HOST, FOREIGN)
    assert foreign.dep_names == [stage.name]
    copy = foreign.steps[0]
    assert isinstance(copy, CopyFrom) and copy.stage_name == stage.name
    assert f"{HOST} for {FOREIGN} cross=True" in stage.steps[0].script
    assert f"{HOST} for {HOST} cross=False" in by_name[Tools.name].steps[0].script
    assert len(plan.nodes) == 4  # each recipe once per architecture, nothing shared twice


def test_the_architecture_is_key_material(tmp_path):
    class Scratch(Recipe):
        """from nothing: the key must still say which architecture"""

        name = f"ma-scratch-{uuid.uuid4().hex[:6]}"

        def steps(self):
            yield Copy("test_multiarch.py", "/x")

    plan = build_plan([Scratch], _settings(tmp_path, f"{HOST},{FOREIGN}"))
    keys = {node.target_arch: [d.key for d in decisions] for node, decisions in walk_plan(plan, NoCache(), {})}
    assert keys[HOST][0] and keys[FOREIGN][0] and keys[HOST][0] != keys[FOREIGN][0]
    assert len(plan.nodes) == 2


def test_a_foreign_base_is_bootstrapped_for_its_architecture(tmp_path):
    from imagefactory.recipe import CATALOGUE

    slim = CATALOGUE.get("imagefactory-base-debian-slim")
    plan = resolve_graph([slim], _settings(tmp_path, FOREIGN))
    names = [n.name for n in plan.nodes]
    assert names == [f"imagefactory-base-debian-full@{FOREIGN}", f"imagefactory-base-debian-slim@{FOREIGN}"]
    assert all(n.arch == FOREIGN for n in plan.nodes)


# --- real buildah, registry and cosign -----------------------------------------------------------
RECIPE = '''
from imagefactory.recipe import Recipe
from imagefactory.steps import Copy


class Files(Recipe):
    """a from-scratch image: no binary runs, so any architecture builds in a second"""

    name = "NAME"
    target = "files"

    def steps(self):
        yield Copy("payload.txt", "/payload.txt")
'''


@pytest.mark.buildah
def test_build_push_and_sign_a_manifest_list(store, tmp_path):
    require_tool("cosign")
    name = f"ma-files-{uuid.uuid4().hex[:6]}"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "files.py").write_text(RECIPE.replace("NAME", name))
    (recipes / "payload.txt").write_text("hello\n")
    env = store.env(IMAGEFACTORY_RECIPE_PATHS=str(recipes / "files.py"))
    arches = f"{HOST},{FOREIGN}"
    built = store.cli("build", "files", "--arch", arches, "--report", str(tmp_path / "b.json"), env=env)
    report = json.loads((tmp_path / "b.json").read_text())
    lists = report["data"]["manifest_lists"] if "data" in report else report["manifest_lists"]
    assert [i["arch"] for i in lists[0]["instances"]] == [HOST, FOREIGN], built.stdout
    bd = ["buildah", *store.args()]

    def arch_of(ref: str) -> str:
        return json.loads(subprocess.run([*bd, "inspect", ref], capture_output=True, text=True,
                                         check=True).stdout)["OCIv1"]["architecture"]

    assert arch_of(f"localhost/{name}:latest") == HOST
    assert arch_of(f"localhost/{name}:latest-{FOREIGN}") == FOREIGN
    assert arch_of(f"localhost/{name}:latest-{HOST}") == HOST
    listed = json.loads(subprocess.run([*bd, "manifest", "inspect", f"localhost/{name}:latest-multiarch"],
                                       capture_output=True, text=True, check=True).stdout)
    assert sorted(m["platform"]["architecture"] for m in listed["manifests"]) == sorted([HOST, FOREIGN])
    # nothing to do the second time, for either architecture
    again = store.cli("build", "files", "--arch", arches, "--report", str(tmp_path / "b2.json"), env=env)
    images = json.loads((tmp_path / "b2.json").read_text())
    images = (images.get("data") or images)["images"]
    assert {i["status"] for i in images} == {"cached"}, again.stderr
    assert store.containers() == []

    keys = tmp_path / "keys"
    keys.mkdir()
    cosign_env = {**os.environ, "COSIGN_PASSWORD": "pw", "HOME": str(tmp_path)}
    subprocess.run(["cosign", "generate-key-pair"], cwd=keys, env=cosign_env, check=True, capture_output=True,
                   timeout=60)
    with local_registry(tmp_path) as reg:
        pushed = store.cli("push", "files", "--arch", arches, "--registry", f"{reg.host}/ma", "--report",
                           str(tmp_path / "pushed.json"), env=env)
        ref = f"{reg.host}/ma/{name}:latest"
        raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                        capture_output=True, text=True, check=True).stdout)
        assert raw["mediaType"].endswith(("manifest.list.v2+json", "image.index.v1+json")), pushed.stdout
        platforms = {m["platform"]["architecture"]: m["digest"] for m in raw["manifests"]}
        assert set(platforms) == {HOST, FOREIGN}
        signed = store.cli("sign", "files", "--arch", arches, "--registry", f"{reg.host}/ma", "--no-attest",
                           "--key", str(keys / "cosign.key"), env={**env, "COSIGN_PASSWORD": "pw"})
        repo = ref.rsplit(":", 1)[0]
        index_digest = pushed.stdout.strip().split("@")[-1]
        for digest in (index_digest, *platforms.values()):  # the index and each instance
            check = subprocess.run(["cosign", "verify", "--key", str(keys / "cosign.pub"), "--insecure-ignore-tlog",
                                    "--allow-insecure-registry", f"{repo}@{digest}"],
                                   capture_output=True, text=True, env=cosign_env, timeout=120)
            assert check.returncode == 0, f"{digest}: {check.stderr}\n{signed.stdout}"
        # a later CI job fetches the pushed list: every architecture's instance, by digest
        fresh = new_store("ma-fetch")
        try:
            fresh.cli("fetch", "files", "--arch", arches, "--digests", str(tmp_path / "pushed.json"),
                      "--tls-verify", "false", env=fresh.env(IMAGEFACTORY_RECIPE_PATHS=str(recipes / "files.py")))
            got = {a: json.loads(subprocess.run(["buildah", *fresh.args(), "inspect", f"localhost/{name}:{tag}"],
                                                capture_output=True, text=True, check=True).stdout)
                   ["OCIv1"]["architecture"] for a, tag in ((HOST, "latest"), (FOREIGN, f"latest-{FOREIGN}"))}
            assert got == {HOST: HOST, FOREIGN: FOREIGN}
        finally:
            fresh.destroy()
