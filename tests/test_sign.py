"""push / sign / verify-signature against a real registry with real cosign and buildah.

One store, one registry and one key pair per module: building and pushing are the slow parts.
cosign missing is a failure (run ci/setup), never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_BASE, make_busybox_base, new_store, require_tool
from registry import local_registry

pytestmark = pytest.mark.buildah

PASSWORD = "correct horse battery staple"

RECIPES = textwrap.dedent(f"""
    from imagefactory import Recipe, Run

    class Signed(Recipe):
        '''An image that gets signed.'''
        name = "sign-test"
        target = "signme"
        parent = "{TINY_BASE}"

        def steps(self):
            yield Run("echo signed > /content")

    class Unsigned(Recipe):
        '''An image that is pushed but never signed.'''
        name = "sign-test-unsigned"
        target = "unsigned"
        parent = "{TINY_BASE}"

        def steps(self):
            yield Run("echo unsigned > /content")

    class EnvSigned(Recipe):
        '''Signed with the key and password from the environment.'''
        name = "sign-test-env"
        target = "envsign"
        parent = "{TINY_BASE}"

        def steps(self):
            yield Run("echo env > /content")
""")


class Env:
    def __init__(self, store, cfg: Path, reg, work: Path):
        self.store, self.cfg, self.reg, self.work = store, cfg, reg, work
        self.registry = f"{reg.host}/test"
        self.key = work / "cosign.key"
        self.pub = work / "cosign.pub"
        self.other_pub = work / "other.pub"
        self.password_file = work / "password"

    def env(self, **extra: str) -> dict[str, str]:
        env = self.store.env(HOME=str(self.work / "home"))
        env.pop("COSIGN_PASSWORD", None)
        env.update(extra)
        return env

    def cli(self, *argv: str, check: bool = True, env: dict | None = None, report: str | None = None):
        args = [*argv, "--config", str(self.cfg)]
        if report:
            args += ["--report", str(self.work / report)]
        return self.store.cli(*args, check=check, env=env or self.env())

    def report(self, name: str) -> dict:
        return json.loads((self.work / name).read_text())


def _keypair(work: Path, prefix: str, password: str) -> None:
    env = {**os.environ, "COSIGN_PASSWORD": password, "HOME": str(work / "home")}
    subprocess.run(["cosign", "generate-key-pair", "--output-key-prefix", prefix], cwd=work, env=env,
                   check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_tool("buildah")
    require_tool("cosign")
    work = tmp_path_factory.mktemp("sign")
    (work / "home").mkdir()
    recipes = work / "recipes"
    recipes.mkdir()
    (recipes / "signed.py").write_text(RECIPES)
    cfg = work / "imagefactory.yaml"
    cfg.write_text(f"recipe_paths: [{recipes}]\njobs: 1\n")
    store = new_store("sign")
    try:
        make_busybox_base(store)
        with local_registry(work) as reg:
            e = Env(store, cfg, reg, work)
            _keypair(work, "cosign", PASSWORD)
            _keypair(work, "other", "other-password")
            e.password_file.write_text(PASSWORD + "\n")
            e.cli("build", "signme", "unsigned", "envsign")
            yield e
    finally:
        store.destroy()


def test_push_prints_digest_ref_and_records_it(env):
    out = env.cli("push", "signme", "--registry", env.registry, report="push.json").stdout
    rep = env.report("push.json")["pushed"][0]
    ref = f"{env.registry}/sign-test:latest"
    assert rep["ref"] == ref and rep["digest"].startswith("sha256:") and rep["registry"] == env.registry
    assert f"{ref}@{rep['digest']}" in out
    state = next((env.store.home / "cache" / "imagefactory" / "state").glob("*/pushed.json"))
    recorded = json.loads(state.read_text())[ref]
    assert recorded["digest"] == rep["digest"] and recorded["target"] == "signme"
    # the registry serves exactly that digest for the tag
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
                             text=True, check=True, timeout=60)
    assert json.loads(inspect.stdout)["Digest"] == rep["digest"]


def test_sign_attest_verify_then_failures(env):
    env.cli("push", "signme", "--registry", env.registry)
    # sign by digest with the password from a file, attach both SBOMs
    r = env.cli("sign", "signme", "--registry", env.registry, "--key", str(env.key),
                "--password-file", str(env.password_file), report="sign.json")
    item = env.report("sign.json")["signed"][0]
    assert item["signed"] and item["attested"] == {"spdxjson": True, "cyclonedx": True, "slsaprovenance1": True}, item
    assert "@sha256:" in item["digest_ref"] and item["digest_ref"].endswith(item["digest"])
    assert PASSWORD not in r.stdout + r.stderr
    assert all(Path(p).is_file() for p in item["sboms"].values())

    # verification with the right key: signature and both attestations
    env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.pub), report="v.json")
    checks = env.report("v.json")["verified"][0]["checks"]
    assert set(checks) == {"signature", "attestation:spdxjson", "attestation:cyclonedx", "attestation:slsaprovenance1"}
    assert all(c["ok"] for c in checks.values()), checks
    assert env.report("v.json")["verified"][0]["signed_digests"] == [item["digest"]]

    # another key: fails with cosign's reason
    bad = env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.other_pub),
                  check=False)
    assert bad.returncode != 0
    assert "no matching signatures" in bad.stderr

    # pushed but never signed: fails
    env.cli("push", "unsigned", "--registry", env.registry)
    uns = env.cli("verify-signature", "unsigned", "--registry", env.registry, "--key", str(env.pub), check=False,
                  report="unsigned.json")
    assert uns.returncode != 0
    assert not env.report("unsigned.json")["verified"][0]["checks"]["signature"]["ok"]
    assert "no signatures found" in uns.stderr or "no matching signatures" in uns.stderr

    # tampered: different content pushed under the signed tag; verifying the tag fails
    tag = f"docker://{env.registry}/sign-test:latest"
    env.store.buildah().push(TINY_BASE, tag, tls_verify=False)
    tampered = env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.pub),
                       check=False, report="tampered.json")
    assert tampered.returncode != 0, tampered.stdout
    assert "registry serves different content" in tampered.stderr
    rep = env.report("tampered.json")["verified"][0]
    assert rep["current_digest"] != rep["pushed_digest"] == item["digest"]
    # ...while the digest we pushed and signed still verifies
    env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.pub), "--pushed-digest")


def test_password_from_env_and_wrong_password(env):
    env.cli("push", "envsign", "--registry", env.registry)
    wrong = env.cli("sign", "envsign", "--registry", env.registry, "--key", str(env.key), "--no-attest",
                    check=False, env=env.env(COSIGN_PASSWORD="not the password"))
    assert wrong.returncode != 0
    assert "wrong password" in wrong.stderr and "COSIGN_PASSWORD" in wrong.stderr
    assert "not the password" not in wrong.stdout + wrong.stderr
    # COSIGN_KEY + COSIGN_PASSWORD from the environment
    env.cli("sign", "envsign", "--registry", env.registry, "--no-attest",
            env=env.env(COSIGN_PASSWORD=PASSWORD, COSIGN_KEY=str(env.key)))
    env.cli("verify-signature", "envsign", "--registry", env.registry, "--key", str(env.pub), "--no-attestations")


def test_missing_key_and_missing_cosign_say_what_to_do(env, tmp_path):
    env.cli("push", "signme", "--registry", env.registry)
    nokey = env.cli("sign", "signme", "--registry", env.registry, check=False)
    assert nokey.returncode != 0 and "no signing key" in nokey.stderr and "--key" in nokey.stderr
    gone = env.cli("sign", "signme", "--registry", env.registry, "--key", str(tmp_path / "nope.key"), check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    empty = tmp_path / "empty-path"
    empty.mkdir()
    nocosign = env.cli("sign", "signme", "--registry", env.registry, "--key", str(env.key), check=False,
                       env=env.env(PATH=str(empty)))
    assert nocosign.returncode != 0
    assert "cosign is not installed" in nocosign.stderr and "ci/setup" in nocosign.stderr


def test_signed_but_not_attested_is_said_plainly(env, tmp_path):
    """A cosign whose attest call fails: the image is signed, and the user is told it is not attested."""
    real = shutil.which("cosign")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "cosign"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = attest ]; then echo "Error: simulated registry outage" >&2; exit 1; fi\n'
                    f'exec {real} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env.cli("push", "signme", "--registry", env.registry)
    r = env.cli("sign", "signme", "--registry", env.registry, "--key", str(env.key), check=False,
                env=env.env(COSIGN_PASSWORD=PASSWORD, PATH=f"{bindir}:{os.environ['PATH']}"), report="half.json")
    assert r.returncode != 0
    assert "SIGNED BUT NOT ATTESTED" in r.stderr and "simulated registry outage" in r.stderr
    item = env.report("half.json")["signed"][0]
    assert item["signed"] and item["attested"] == {"spdxjson": False, "cyclonedx": False, "slsaprovenance1": False}


def test_provenance_policy_is_evaluated_by_cosign(env, tmp_path):
    """--policy reaches cosign verify-attestation for the SLSA provenance (CUE: Debian's cosign has no Rego)."""
    env.cli("push", "signme", "--registry", env.registry)
    env.cli("sign", "signme", "--registry", env.registry, "--key", str(env.key), "--password-file",
            str(env.password_file))
    cue = tmp_path / "target.cue"

    def verify(target: str):
        cue.write_text('predicateType: "https://slsa.dev/provenance/v1"\n'
                       'predicate: buildDefinition: buildType: "urn:imagefactory:buildtype:recipe:v1"\n'
                       f'predicate: buildDefinition: externalParameters: target: "{target}"\n')
        proc = env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.pub), "--policy",
                       str(cue), check=False, report="policy.json")
        return proc, env.report("policy.json")["verified"][0]["checks"]["attestation:slsaprovenance1"]

    ok, check = verify("signme")
    assert ok.returncode == 0 and check["ok"], ok.stdout + ok.stderr
    bad, check = verify("someone-else")
    assert bad.returncode != 0 and not check["ok"] and "someone-else" in check["reason"], (check, bad.stdout, bad.stderr)
    # the shipped release policy: this test image has no libraries and no git recipe tree
    shipped = Path(__file__).resolve().parents[1] / "imagefactory" / "policies" / "release-provenance.cue"
    assert env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.pub), "--policy",
                   str(shipped), check=False).returncode != 0
    missing = env.cli("verify-signature", "signme", "--registry", env.registry, "--key", str(env.pub), "--policy",
                      str(tmp_path / "nope.cue"), check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def _release_predicate() -> dict:
    """A provenance predicate shaped like `provenance` writes, for five release-built libraries."""
    from imagefactory.provenance import BUILD_TYPE, BUILDER_ID_PREFIX
    from imagefactory.toolchain import RELEASE

    libs = ("wolfssl", "libuv", "llhttp", "cjson", "mimalloc")
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"target": "ci", "recipe": {"class": "recipes.ocserv.Ci", "commit": "a" * 40,
                                                              "dirty": False}},
            "internalParameters": {"libraries": {n: {"profile": "release", "flags": RELEASE.flags()} for n in libs}},
            "resolvedDependencies": [{"name": f"{n}.tar.gz", "digest": {"sha256": f"{i:x}" * 64},
                                      "annotations": {"kind": "source-archive", "library": n}}
                                     for i, n in enumerate(libs, start=1)],
        },
        "runDetails": {"builder": {"id": BUILDER_ID_PREFIX + "0.1.0"}},
    }


def _libs(p: dict) -> dict:
    return p["buildDefinition"]["internalParameters"]["libraries"]


POLICY_VARIANTS = {
    "dirty tree": (lambda p: p["buildDefinition"]["externalParameters"]["recipe"].update(dirty=True),
                   "cleanRecipeTree"),
    "dirty state unknown": (lambda p: p["buildDefinition"]["externalParameters"]["recipe"].pop("dirty"),
                            "cleanRecipeTree"),
    "stack protector removed": (lambda p: _libs(p)["cjson"]["flags"].update(
        CFLAGS=_libs(p)["cjson"]["flags"]["CFLAGS"] + " -fno-stack-protector"), "nothingWeakened.cjson"),
    "required flag missing": (lambda p: _libs(p)["libuv"]["flags"].update(
        CFLAGS=_libs(p)["libuv"]["flags"]["CFLAGS"].replace("-fstack-clash-protection", "")),
        'hardeningCflags.libuv."-fstack-clash-protection"'),
    "archive without sha256": (lambda p: p["buildDefinition"]["resolvedDependencies"][0]["digest"].pop("sha256"),
                               "archivesPinnedBySha256"),
    "library without archive": (lambda p: p["buildDefinition"]["resolvedDependencies"].pop(), "oneArchivePerLibrary"),
    "debug profile": (lambda p: _libs(p)["llhttp"].update(profile="debug"), "releaseProfile.llhttp"),
    "flags not recorded": (lambda p: _libs(p)["mimalloc"].pop("flags"), "flagsRecorded.mimalloc"),
    "another builder": (lambda p: p["runDetails"]["builder"].update(id="https://builder.example/x"), "builder.id"),
}


def test_shipped_policy_admits_a_release_provenance_and_names_each_violation(env, tmp_path):
    """The shipped CUE policy, evaluated by the real cosign against attested predicates: the release
    shape passes; each violation fails and cosign's reason names the check."""
    import copy

    shipped = Path(__file__).resolve().parents[1] / "imagefactory" / "policies" / "release-provenance.cue"
    env.cli("push", "envsign", "--registry", env.registry, report="p.json")
    rec = env.report("p.json")["pushed"][0]
    ref = f"{rec['ref'].rsplit(':', 1)[0]}@{rec['digest']}"
    cosign_env = {**env.env(), "COSIGN_PASSWORD": PASSWORD, "COSIGN_YES": "true"}
    flags = ["--allow-insecure-registry", "--allow-http-registry"]

    def check(predicate: dict) -> subprocess.CompletedProcess:
        path = tmp_path / "predicate.json"
        path.write_text(json.dumps(predicate))
        subprocess.run(["cosign", "attest", "--replace", "--key", str(env.key), "--tlog-upload=false", "--yes",
                        "--type", "slsaprovenance1", "--predicate", str(path), *flags, ref], env=cosign_env,
                       check=True, capture_output=True, timeout=120)
        return subprocess.run(["cosign", "verify-attestation", "--key", str(env.pub), "--type", "slsaprovenance1",
                               "--policy", str(shipped), "--insecure-ignore-tlog=true", *flags, ref],
                              env=cosign_env, capture_output=True, text=True, timeout=120)

    good = check(_release_predicate())
    assert good.returncode == 0, good.stderr
    for name, (breakage, named) in POLICY_VARIANTS.items():
        predicate = copy.deepcopy(_release_predicate())
        breakage(predicate)
        bad = check(predicate)
        assert bad.returncode != 0, f"{name}: the policy admitted it"
        assert named in bad.stderr, f"{name}: {bad.stderr[-800:]}"
