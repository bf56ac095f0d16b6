"""The shipped GitLab pipeline, run for real: ``gitlab-ci-local`` in shell-executor mode (every job in
its own build folder, artifacts handed on as GitLab would) on a clean clone of this checkout, with
Debian's docker-registry on 127.0.0.1 as step cache, staging and release registry.

- the ``ocserv-ci`` chain (``build ci``; ``IMAGEFACTORY_PIPELINE_CHAINS`` may add others) passes
  build → verify → sbom → publish with a throwaway cosign key, and this test then checks the released
  digests with its own ``cosign verify`` and ``cosign verify-attestation`` calls;
- a second build job on an empty store (a fresh runner) builds the chain from the registry cache
  with 0 steps built, which its report shows.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

try:
    from conftest import REPO, SCRATCH, SHARED_SOURCES, require_tool
    from registry import local_registry
except ImportError:  # tests/ made a package
    from tests.conftest import REPO, SCRATCH, SHARED_SOURCES, require_tool
    from tests.registry import local_registry

pytestmark = [pytest.mark.pipeline, pytest.mark.slow, pytest.mark.buildah, pytest.mark.xdist_group("pipeline")]

NODE_BIN = Path("/usr/local/lib/imagefactory/node/node_modules/.bin")  # where ci/setup puts gitlab-ci-local
CHAINS = os.environ.get("IMAGEFACTORY_PIPELINE_CHAINS", "ocserv-ci").split()
CHAIN_TARGETS = {"ocserv-dev": "dev test", "ocserv-ci": "build ci", "s4": "s4"}
STAGES = ("build", "verify", "sbom", "publish")
PASSWORD = "pipeline-test-password"


def _gitlab_ci_local() -> str:
    found = NODE_BIN / "gitlab-ci-local"
    if not found.exists():
        pytest.fail("gitlab-ci-local is not installed: run ci/setup")
    version = subprocess.run([str(NODE_BIN / "node"), "--version"], capture_output=True, text=True).stdout
    assert int(version.strip().lstrip("v").split(".")[0]) >= 22, f"gitlab-ci-local needs Node.js >= 22, got {version}"
    return str(found)


class Pipeline:
    """A clean clone of this checkout on branch main, with gitlab-ci-local's variables set up."""

    def __init__(self, work: Path, registry_host: str):
        self.work = work
        self.checkout = work / "checkout"
        self.registry = registry_host
        self.log = work / "gitlab-ci-local.log"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(self.checkout)], check=True)
        git = ["git", "-C", str(self.checkout)]
        subprocess.run([*git, "checkout", "--quiet", "-B", "main"], check=True)
        # gitlab-ci-local derives CI_PROJECT_* from the remote; the host is never contacted
        subprocess.run([*git, "remote", "set-url", "origin", "https://gitlab.example.com/team/imagefactory.git"],
                       check=True)
        keys = work / "keys"
        keys.mkdir()
        subprocess.run(["cosign", "generate-key-pair"], cwd=keys, env=dict(os.environ, COSIGN_PASSWORD=PASSWORD),
                       check=True, capture_output=True)
        self.public_key = keys / "cosign.pub"
        variables = {
            "PIPELINE_CHAINS": " ".join(CHAINS),
            "IMAGEFACTORY_CACHE_REPO": f"{registry_host}/imagefactory-cache",
            "STAGING_REGISTRY": f"{registry_host}/staging",
            "IMAGEFACTORY_REGISTRY": f"{registry_host}/release",
            "REGISTRY_TLS_VERIFY": "false",
            "CI_SETUP_SKIP_PIP": "1",  # keep this machine's installed package; the jobs run the clone's code
            "COSIGN_PRIVATE_KEY_PEM": (keys / "cosign.key").read_text(),
            "COSIGN_PUBLIC_KEY_PEM": self.public_key.read_text(),
            "COSIGN_PASSWORD": PASSWORD,
            # a path value would become a GitLab file variable: say it is a plain one
            "IMAGEFACTORY_SOURCE_MIRRORS": {"type": "variable", "values": {"*": str(SHARED_SOURCES)}},
        }
        (self.checkout / ".gitlab-ci-local-variables.yml").write_text(yaml.safe_dump(variables))

    def run(self, *jobs: str, timeout: float = 5400) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEFACTORY_", "CI_", "GITLAB_"))}
        env["PATH"] = f"{NODE_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        cmd = [_gitlab_ci_local(), "--file", "ci/gitlab-ci.yml", "--force-shell-executor", "--shell-isolation",
               "--timestamps", "--concurrency", "1", *jobs]
        proc = subprocess.run(cmd, cwd=self.checkout, env=env, capture_output=True, text=True, timeout=timeout)
        with open(self.log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n")
        return proc

    def job(self, stage: str, chain: str) -> str:
        return f"{stage}: [{chain},{CHAIN_TARGETS[chain]}]"

    def jobs(self, stage: str) -> list[str]:
        return [self.job(stage, chain) for chain in CHAINS]

    def report(self, job: str, name: str) -> dict:
        """A report from one job's own artifacts (gitlab-ci-local keeps them per job, folder names
        with each run of other characters base64-encoded)."""
        folder = re.sub(r"[^\w-]+", lambda m: base64.b64encode(m.group().encode()).decode().rstrip("="), job)
        path = self.checkout / ".gitlab-ci-local" / "artifacts" / folder / "reports" / name
        assert path.is_file(), f"no reports/{name} in the artifacts of {job}: see {self.log}"
        return json.loads(path.read_text())

    def fresh_runner(self) -> None:
        """Forget every job's build folder: the next job starts like one on a new runner."""
        shutil.rmtree(self.checkout / ".gitlab-ci-local" / "builds", ignore_errors=True)


def _tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout[-12000:] + "\n--- stderr\n" + proc.stderr[-3000:]).strip()


def _steps_built(report: dict) -> int:
    return sum(int(img.get("misses", 0)) for img in report["images"])


@pytest.fixture(scope="module")
def pipeline():
    for tool in ("cosign", "skopeo", "buildah", "rsync", "git"):
        require_tool(tool)
    work = SCRATCH / f"imagefactory-pipeline-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        with local_registry(work) as reg:
            yield Pipeline(work, reg.host)
    finally:
        for store in (work / "checkout" / ".gitlab-ci-local" / "builds").glob("*/.imagefactory"):
            subprocess.run([str(REPO / "ci" / "drop-store"), str(store / "storage"), str(store / "run")],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_gitlab_pipeline_builds_verifies_and_publishes_through_registries(pipeline):
    jobs = [job for stage in STAGES for job in pipeline.jobs(stage)]
    proc = pipeline.run(*jobs)
    assert proc.returncode == 0, _tail(proc)
    for chain in CHAINS:
        build = pipeline.report(pipeline.job("build", chain), f"build-{chain}.json")
        assert build["exit_code"] == 0 and build["ok"], build
        staged = pipeline.report(pipeline.job("build", chain), f"staged-{chain}.json")["pushed"]
        assert {p["target"] for p in staged} == set(CHAIN_TARGETS[chain].split())
        assert all(p["ref"].startswith(f"{pipeline.registry}/staging/") for p in staged)
        for target in CHAIN_TARGETS[chain].split():
            verified = pipeline.report(pipeline.job("verify", chain), f"verify-{target}.json")
            assert verified["exit_code"] == 0, verified
        fetched = pipeline.report(pipeline.job("verify", chain), f"fetch-verify-{chain}.json")["fetched"]
        assert {(f["target"], f["digest"]) for f in fetched} == {(p["target"], p["digest"]) for p in staged}
        promoted = pipeline.report(pipeline.job("publish", chain), f"promote-{chain}.json")["promoted"]
        assert {(p["target"], p["digest"]) for p in promoted} == {(p["target"], p["digest"]) for p in staged}, \
            "publish must release exactly the digests that were verified"
        signed = pipeline.report(pipeline.job("publish", chain), f"verify-signature-{chain}.json")
        assert signed["exit_code"] == 0, signed
        # our own checks of the release, with the public key only
        for item in promoted:
            ref = f"{pipeline.registry}/release/{item['ref'].split('/release/', 1)[1].rsplit(':', 1)[0]}@{item['digest']}"
            base = ["--key", str(pipeline.public_key), "--insecure-ignore-tlog=true", "--allow-insecure-registry",
                    "--allow-http-registry"]
            out = subprocess.run(["cosign", "verify", *base, ref], capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-3000:]
            assert item["digest"] in out.stdout
            for kind in ("spdxjson", "cyclonedx"):
                out = subprocess.run(["cosign", "verify-attestation", "--type", kind, *base, ref], capture_output=True,
                                     text=True, timeout=300)
                assert out.returncode == 0, f"{kind}: {out.stderr[-3000:]}"


def test_second_build_on_an_empty_store_builds_nothing(pipeline):
    """A fresh runner (no build folder, empty store) builds the chain from the registry cache."""
    pipeline.fresh_runner()
    proc = pipeline.run(*pipeline.jobs("build"))
    assert proc.returncode == 0, _tail(proc)
    for chain in CHAINS:
        report = pipeline.report(pipeline.job("build", chain), f"build-{chain}.json")
        assert report["exit_code"] == 0 and report["ok"], report
        assert _steps_built(report) == 0, f"steps built on a fresh runner: {json.dumps(report)[:4000]}"
        assert report["commits"] == 0 and report["containers_started"] == 0, report
