"""The CI pipelines in ci/ (GitHub Actions, GitLab CI): every imagefactory call they make parses with
the real CLI, every stage writes a report, images move between jobs through registries (step cache,
staging digests, release) and never as a cached storage root, only main publishes, and the files pass
zizmor and the vendors' JSON schemas. test_pipeline_run.py runs the GitLab pipeline for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from imagefactory import cli

try:
    from cli_commands import Invocation, check, find_invocations, subcommands
except ImportError:  # tests/ made a package
    from tests.cli_commands import Invocation, check, find_invocations, subcommands

REPO = Path(__file__).resolve().parents[1]
GITHUB = REPO / "ci" / "github" / "imagefactory.yml"
GITLAB = REPO / "ci" / "gitlab-ci.yml"
PUBLISHING = {"promote", "sign", "verify-signature"}  # `push` is to staging (build jobs)
CHAIN_TARGETS = {"dev", "test", "build", "ci", "s4"}
PLACEHOLDER = "placeholder"  # an unknown variable: a loop variable, a secret
GITLAB_RESERVED = {"stages", "variables", "default", "include", "workflow", "image", "services", "cache",
                   "before_script", "after_script"}


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _subst(text: str, variables: dict[str, str], depth: int = 0) -> str:
    """Expand ${{ matrix.X }}, ${{ ... }}, $VAR and ${VAR} as the CI would (unknown → placeholder)."""
    def gh(m: re.Match) -> str:
        expr = m.group(1).strip()
        if expr.startswith("matrix."):
            return variables.get(expr, PLACEHOLDER)
        return PLACEHOLDER

    text = re.sub(r"\$\{\{(.*?)\}\}", gh, text)

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in variables:
            return _subst(variables[name], variables, depth + 1) if depth < 5 else variables[name]
        return m.group(0) if name in ("CHAIN", "TARGETS") else PLACEHOLDER

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", var, text)


# --- GitHub Actions ---------------------------------------------------------------------------------
def _github_matrix(job: dict) -> list[dict[str, str]]:
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    include = matrix.get("include") or []
    return [{f"matrix.{k}": str(v) for k, v in entry.items()} for entry in include] or [{}]


def github_jobs() -> dict[str, dict]:
    return _load(GITHUB)["jobs"]


def github_invocations() -> list[tuple[str, Invocation]]:
    wf = _load(GITHUB)
    out = []
    for name, job in wf["jobs"].items():
        for entry in _github_matrix(job):
            for i, step in enumerate(job.get("steps", [])):
                if "run" not in step:
                    continue
                variables = {**{k: str(v) for k, v in (wf.get("env") or {}).items()},
                             **{k: str(v) for k, v in (job.get("env") or {}).items()},
                             **{k: str(v) for k, v in (step.get("env") or {}).items()}, **entry}
                text = _subst(step["run"], variables)
                out += [(name, inv) for inv in find_invocations(text, f"github {name} step {i + 1}")]
    return out


# --- GitLab CI --------------------------------------------------------------------------------------
def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve(data: dict, name: str) -> dict:
    job = data[name]
    parents = job.get("extends") or []
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _merge(merged, _resolve(data, parent))
    return _merge(merged, {k: v for k, v in job.items() if k != "extends"})


def gitlab_jobs() -> dict[str, dict]:
    data = _load(GITLAB)
    return {name: _resolve(data, name) for name, job in data.items()
            if name not in GITLAB_RESERVED and not name.startswith(".") and isinstance(job, dict)}


def _gitlab_scripts(job: dict, default: dict) -> list[str]:
    lines = []
    for key in ("before_script", "script", "after_script"):
        value = job.get(key, default.get(key, []))
        lines += [value] if isinstance(value, str) else list(value or [])
    return lines


def gitlab_invocations() -> list[tuple[str, Invocation]]:
    data = _load(GITLAB)
    default = data.get("default") or {}
    out = []
    for name, job in gitlab_jobs().items():
        matrix = ((job.get("parallel") or {}).get("matrix") if isinstance(job.get("parallel"), dict) else None)
        for entry in matrix or [{}]:
            variables = {**{k: str(v) for k, v in (data.get("variables") or {}).items()},
                         **{k: str(v) for k, v in (job.get("variables") or {}).items()},
                         **{k: str(v) for k, v in entry.items()}}
            for i, line in enumerate(_gitlab_scripts(job, default)):
                text = _subst(line, variables)
                out += [(name, inv) for inv in find_invocations(text, f"gitlab {name} script line {i + 1}")]
    return out


# --- tests ------------------------------------------------------------------------------------------
PIPELINES = {"github": github_invocations, "gitlab": gitlab_invocations}


@pytest.mark.parametrize("ci", sorted(PIPELINES))
def test_every_imagefactory_call_parses_with_the_real_cli(ci):
    invocations = PIPELINES[ci]()
    assert len(invocations) >= 10
    parser = cli.parser()
    known = subcommands(parser)
    used = {inv.subcommand for _, inv in invocations}
    missing = sorted(used - set(known))
    assert not missing, f"{ci}: subcommands the pipeline runs but the CLI lacks: {', '.join(missing)}"
    problems = [p for _, inv in invocations if (p := check(parser, inv))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("ci", sorted(PIPELINES))
def test_pipeline_covers_every_stage(ci):
    invocations = PIPELINES[ci]()
    used = {inv.subcommand for _, inv in invocations}
    assert {"doctor", "build", "push", "fetch", "verify", "sbom", "promote", "sign", "verify-signature"} <= used
    built = {t for _, inv in invocations if inv.subcommand == "build" for t in inv.argv[1:] if not t.startswith("-")}
    assert built >= CHAIN_TARGETS
    for _, inv in invocations:
        if inv.subcommand == "verify":
            assert "--size" in inv.argv, inv
        if inv.subcommand == "sbom":
            assert inv.argv[inv.argv.index("--out") + 1] == "sboms/", inv


@pytest.mark.parametrize("ci", sorted(PIPELINES))
def test_every_call_writes_a_report_and_uses_the_job_store(ci):
    for _, inv in PIPELINES[ci]():
        assert "--report" in inv.argv, f"no --report: {inv}"
        report = inv.argv[inv.argv.index("--report") + 1]
        assert re.fullmatch(r"reports/[a-z0-9-]+\.json", report), f"report not under reports/: {inv}"
        assert inv.argv[inv.argv.index("--root") + 1] == ".imagefactory/storage", f"not the job's store: {inv}"
        assert "--runroot" in inv.argv, inv


def _value(inv: Invocation, flag: str) -> str | None:
    for i, word in enumerate(inv.argv):
        if word == flag:
            return inv.argv[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


@pytest.mark.parametrize("ci", sorted(PIPELINES))
def test_images_move_through_registries(ci):
    """build: registry step cache + push to staging (digests in the report); verify/sbom/publish: fetch
    exactly those digests; publish: promote them unchanged to release before signing."""
    by_job: dict[str, list[Invocation]] = {}
    for job, inv in PIPELINES[ci]():
        by_job.setdefault(job, []).append(inv)
    builds = [inv for inv in by_job["build"] if inv.subcommand == "build"]
    assert builds and all(_value(inv, "--cache-from") and _value(inv, "--cache-from") == _value(inv, "--cache-to")
                          for inv in builds), builds
    staged = {_value(inv, "--report") for inv in by_job["build"] if inv.subcommand == "push"}
    assert staged and all(r.startswith("reports/staged-") for r in staged)
    assert all(_value(inv, "--registry") for inv in by_job["build"] if inv.subcommand == "push")
    for job in ("verify", "sbom", "publish"):
        fetches = [inv for inv in by_job[job] if inv.subcommand == "fetch"]
        assert fetches, f"{job} does not fetch the staged digests"
        assert {_value(inv, "--digests") for inv in fetches} <= staged, fetches
        assert not any(inv.subcommand == "build" for inv in by_job[job]), f"{job} rebuilds instead of fetching"
    order = [inv.subcommand for inv in by_job["publish"]]
    assert order.index("fetch") < order.index("promote") < order.index("sign") < order.index("verify-signature")
    assert "push" not in order, "publish copies the verified digests (promote); it does not push again"


def test_no_job_caches_or_moves_a_storage_root():
    for path in (GITHUB, GITLAB):
        text = path.read_text()
        assert "actions/cache" not in text, path
        data = _load(path)
        jobs = data["jobs"] if path == GITHUB else {k: v for k, v in data.items() if isinstance(v, dict)}
        for name, job in jobs.items():
            assert "cache" not in job, f"{path.name}: job {name} uses a CI cache"
        for line in text.splitlines():
            if line.strip().startswith("- .imagefactory/") or line.strip().startswith(".imagefactory/"):
                assert not re.search(r"\.imagefactory/(storage|run|sources)", line), f"{path.name}: {line.strip()}"


def test_reports_are_unique_per_job():
    seen: dict[str, str] = {}
    for job, inv in github_invocations() + gitlab_invocations():
        report = inv.argv[inv.argv.index("--report") + 1]
        key = f"{inv.where.split()[0]}:{report}"
        assert seen.setdefault(key, job) == job, f"{report} written by two jobs: {seen[key]} and {job}"


def _github_main_only(condition: str) -> bool:
    return "github.ref == 'refs/heads/main'" in condition and "||" not in condition


def test_github_publishes_on_main_only():
    jobs = github_jobs()
    publishing = {job for job, inv in github_invocations() if inv.subcommand in PUBLISHING}
    assert publishing, "no job pushes or signs"
    for name in publishing:
        assert _github_main_only(str(jobs[name].get("if", ""))), f"job {name} publishes without a main-only `if`"
    for name, job in jobs.items():
        if name not in publishing:
            for step in job.get("steps", []):
                assert not any(f"imagefactory {s} " in step.get("run", "") for s in ("promote", "sign")), name
                if "imagefactory push " in step.get("run", ""):
                    assert '--registry "$STAGING_REGISTRY"' in step["run"], f"{name} pushes elsewhere than staging"


def test_gitlab_publishes_on_main_only():
    jobs = gitlab_jobs()
    for name, job in jobs.items():
        for line in job.get("script", []):
            if "imagefactory push " in line:
                assert '--registry "$STAGING_REGISTRY"' in line, f"{name} pushes elsewhere than staging"
    publishing = {job for job, inv in gitlab_invocations() if inv.subcommand in PUBLISHING}
    assert publishing, "no job pushes or signs"
    for name in publishing:
        job = jobs[name]
        assert "only" not in job and "except" not in job, f"{name}: use rules"
        rules = job.get("rules")
        assert rules, f"job {name} publishes without rules"
        for rule in rules:
            if rule.get("when") == "never":
                continue
            cond = str(rule.get("if", ""))
            assert re.search(r'\$CI_COMMIT_BRANCH\s*==\s*("main"|\$CI_DEFAULT_BRANCH)', cond) and "||" not in cond, \
                f"job {name}: rule {rule} lets other branches publish"


def test_github_structure():
    jobs = github_jobs()
    for name, job in jobs.items():
        runs = [s.get("run", "") for s in job["steps"]]
        assert "ci/setup" in runs, f"job {name} does not run ci/setup"
        first_if = next(i for i, r in enumerate(runs) if "imagefactory" in r or "pytest" in r or "ruff" in r)
        assert runs.index("ci/setup") < first_if, f"job {name} runs something before ci/setup"
        assert job.get("container", {}).get("options", "").find("--privileged") >= 0, name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"{name}: not pinned: {step['uses']}"
            if "${{" in step.get("run", ""):
                raise AssertionError(f"{name}: expression in a run script (template injection): {step['run']}")
    build = jobs["build"]
    assert len(build["strategy"]["matrix"]["include"]) >= 3, "chains build in parallel jobs"
    assert build["needs"] == "lint"
    for stage in ("verify", "sbom"):
        assert jobs[stage]["needs"] == "build"
    assert set(jobs["publish"]["needs"]) == {"verify", "sbom"}
    uploads = [s["with"]["path"] for j in jobs.values() for s in j["steps"]
               if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert any("sboms/" in p for p in uploads) and any("reports/" in p for p in uploads)
    assert any("staged-" in p for p in uploads), "the build's push report (digests) is an artifact"


def test_gitlab_structure():
    data = _load(GITLAB)
    assert data["stages"] == ["lint", "build", "verify", "sbom", "publish"]
    assert data["default"]["before_script"] == ["ci/setup"]
    jobs = gitlab_jobs()
    for name, job in jobs.items():
        assert "before_script" not in job, f"{name} replaces the ci/setup before_script"
        first = job["script"][0]
        assert first.startswith("trap ") and "ci/drop-store" in first and first.endswith(" EXIT"), \
            f"{name} leaves its store (or keys) to the next job on the runner"
    assert len(jobs["build"]["parallel"]["matrix"]) >= 3, "chains build in parallel jobs"
    assert set(jobs["publish"]["needs"]) == {"build", "verify", "sbom"}, "publish needs the staged digests"
    assert "sboms/" in jobs["sbom"]["artifacts"]["paths"]
    assert all("reports/" in (job.get("artifacts") or data["default"]["artifacts"])["paths"] for job in jobs.values())
    for name in ("build", "verify", "sbom", "publish"):
        assert jobs[name]["script"][1].startswith("if ! ci/chain-selected"), f"{name}: PIPELINE_CHAINS not honoured"


# --- linters: zizmor (GitHub Actions security), the vendors' JSON schemas ------------------------------
def _tool(name: str) -> str:
    import shutil

    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run ci/setup")
    return found


def test_github_workflow_passes_zizmor():
    import subprocess

    config = REPO / "ci" / "github" / "zizmor.yml"
    proc = subprocess.run([_tool("zizmor"), "--offline", "--persona=auditor", "--no-progress", "--config", str(config),
                           "--format", "plain", str(GITHUB)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # every allow-listed rule says why, next to the rule
    text = config.read_text()
    blocks = re.split(r"\n  (?=[a-z-]+:)", text.split("rules:", 1)[1])
    for rule in yaml.safe_load(text)["rules"]:
        block = next(b for b in blocks if b.startswith(f"{rule}:"))
        assert re.search(r"#\s*\S.{20,}", block), f"zizmor rule {rule} is allow-listed without a reason"


@pytest.mark.parametrize("path,schema", [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")])
def test_pipeline_matches_the_vendor_schema(path, schema):
    import subprocess

    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", schema, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("path", [GITHUB, GITLAB, REPO / "ci" / "containers.conf"])
def test_no_machine_paths_or_registry_hosts(path):
    import re

    text = path.read_text()
    assert str(REPO) + "/" not in text, f"{path.name} names where this checkout happens to live"
    hosts = set(re.findall(r"https?://([^/\s\"']+)", text))
    assert hosts <= {"github.com"}, f"{path.name} names hosts {hosts}: mirrors come from the machine's own config"
