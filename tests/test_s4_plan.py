"""The S4 recipe as a plan (no buildah): two stages, CopyFrom order, s4.context, runtime config, ubi9 parent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagefactory import config
from imagefactory.plan import build_plan
from imagefactory.walk import step_key
from imagefactory.recipe import CATALOGUE
from imagefactory.loader import load_recipes
from imagefactory.steps import ConfigCall, CopyCall

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "recipes" / "s4" / "app"


def settings(**kw):
    return config.load(env={}, overrides=kw)


@pytest.fixture(scope="module")
def s4():
    load_recipes()
    from recipes.s4.recipe import S4, S4Builder

    return S4, S4Builder


def rendered_of(recipe, st):
    plan = build_plan([recipe], st)
    return [(p.step, p.rendered) for p in plan.node(recipe).planned]


def test_s4_is_a_target_and_its_builder_is_a_hidden_stage(s4):
    S4, S4Builder = s4
    assert CATALOGUE.get("s4") is S4
    assert S4 in CATALOGUE.targets() and S4Builder not in CATALOGUE.targets()
    assert S4.stages == {"builder": S4Builder}
    assert S4.size_budget_mb == 800


def test_plan_builds_the_builder_before_the_runtime(s4):
    S4, S4Builder = s4
    plan = build_plan(["s4"], settings())
    names = [n.name for n in plan.nodes]
    assert names.index("imagefactory-base-debian-full") < names.index("s4-builder") < names.index("s4")
    assert names.index("imagefactory-base-debian-slim") < names.index("s4")
    runtime = plan.node(S4)
    assert S4Builder in runtime.deps
    assert runtime.parent.name == "imagefactory-base-debian-slim"
    assert plan.node(S4Builder).parent.name == "imagefactory-base-debian-full"
    # the builder must be finished before the runtime may start: a later level
    levels = [[n.name for n in lvl] for lvl in plan.levels()]
    level_of = {name: i for i, lvl in enumerate(levels) for name in lvl}
    assert level_of["s4-builder"] < level_of["s4"]
    assert runtime.squash and not plan.node(S4Builder).squash, "only the runtime is squashed"


def test_runtime_copies_only_built_artifacts_from_the_builder(s4):
    S4, _ = s4
    rendered = rendered_of(S4, settings())
    copies = [c for _, r in rendered for c in r.calls if isinstance(c, CopyCall) and c.from_stage]
    assert {(c.sources[0], c.dest) for c in copies} == {
        ("/src/app/dist/server", "/opt/app-root/bin/s4/backend/dist"),
        ("/src/app/package.json", "/opt/app-root/bin/s4/backend/package.json"),
        ("/src/app/node_modules", "/opt/app-root/bin/s4/backend/node_modules"),
        ("/src/app/dist/public", "/opt/app-root/bin/s4/frontend/dist"),
        ("/out/bin/s5cmd", "/usr/local/bin/s5cmd"),
    }
    assert all(c.from_stage == "s4-builder" for c in copies)
    # the builder image's ID is part of the key, known only when it is built: no key before that
    for _, r in rendered:
        if r.kind == "copy-from":
            assert r.stages == ["s4-builder"]
            with pytest.raises(KeyError):
                step_key("parent", r)
            assert step_key("parent", r, {"s4-builder": "id-1"}) != step_key("parent", r, {"s4-builder": "id-2"})


def test_runtime_config_user_ports_volumes_healthcheck_entrypoint(s4):
    S4, _ = s4
    rendered = rendered_of(S4, settings())
    args = [a for _, r in rendered for c in r.calls if isinstance(c, ConfigCall) for a in c.args]

    def values(flag):
        return [args[i + 1] for i, a in enumerate(args) if a == flag]

    assert values("--user") == ["1001"]
    assert values("--port") == ["7480/tcp", "5000/tcp"]
    assert values("--volume") == ["/var/lib/ceph/radosgw", "/opt/app-root/src/data"]
    assert values("--healthcheck") == ["CMD-SHELL curl -fsS http://127.0.0.1:5000/api/disclaimer || exit 1"]
    assert json.loads(values("--entrypoint")[0]) == ["/usr/local/bin/entrypoint.sh"]
    env = dict(v.split("=", 1) for v in values("--env"))
    assert env["AWS_S3_ENDPOINT"] == "http://127.0.0.1:7480" and env["PORT"] == "5000"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "IP", "NODE_ENV"} <= set(env)
    assert any(s.needs_docker_format for s, _ in rendered), "HEALTHCHECK needs the docker format"


def test_runtime_settings_keep_secrets_out_of_the_environment(s4):
    S4, _ = s4
    rt = S4.runtime
    assert rt.secrets == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "UI_USERNAME", "UI_PASSWORD"]
    assert not set(rt.secrets) & set(rt.environment)
    assert rt.user == "1001" and rt.group == "0"
    assert rt.ports == ["7480:7480", "5000:5000"]
    assert "s4-rgw:/var/lib/ceph/radosgw" in rt.volumes
    assert rt.health_cmd and "/api/disclaimer" in rt.health_cmd


def _app_copy(st, builder):
    for step, r in rendered_of(builder, st):
        if r.kind == "copy":
            return step, r
    raise AssertionError("builder has no Copy step")


def test_s4_context_changes_the_copied_source_and_its_key(s4, tmp_path):
    _, S4Builder = s4
    step, shipped = _app_copy(settings(), S4Builder)
    assert step.dest == "/src/app"
    assert Path(shipped.calls[0].sources[0]) == APP.resolve()

    ctx = tmp_path / "myapp"
    shutil.copytree(APP, ctx, ignore=shutil.ignore_patterns("node_modules", "dist"))
    same = _app_copy(settings(values={"s4.context": str(ctx)}), S4Builder)[1]
    assert Path(same.calls[0].sources[0]) == ctx
    assert step_key("p", same) != step_key("p", shipped), "another source, another key"
    assert step_key("p", same) == step_key("p", _app_copy(settings(values={"s4.context": str(ctx)}), S4Builder)[1])

    (ctx / "src" / "server" / "server.ts").write_text((ctx / "src/server/server.ts").read_text() + "\n// edit\n")
    edited = _app_copy(settings(values={"s4.context": str(ctx)}), S4Builder)[1]
    assert step_key("p", edited) != step_key("p", same), "the key follows the context's bytes"
    # node_modules in a context is ignored by the key (npm ci replaces it anyway)
    (ctx / "node_modules" / "x").mkdir(parents=True)
    (ctx / "node_modules" / "x" / "index.js").write_text("1")
    assert step_key("p", _app_copy(settings(values={"s4.context": str(ctx)}), S4Builder)[1]) == step_key("p", edited)


def test_cli_plan_with_set_s4_context(tmp_path):
    ctx = tmp_path / "ctx"
    shutil.copytree(APP, ctx, ignore=shutil.ignore_patterns("node_modules", "dist"))
    out = subprocess.run([sys.executable, "-m", "imagefactory", "plan", "s4", "--offline", "--json",
                          "--set", f"s4.context={ctx}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert [img["image"] for img in plan][-2:] == ["s4-builder", "s4"]
    builder = plan[-2]
    copy = [s for s in builder["steps"] if s["kind"] == "copy"]
    assert len(copy) == 1 and str(ctx) in copy[0]["calls"][0] and copy[0]["calls"][0].endswith(" /src/app")
    runtime = plan[-1]
    assert "s4-builder" in runtime["deps"]
    assert sum(s["kind"] == "copy-from" for s in runtime["steps"]) == 5  # backend dist, package.json, node_modules; frontend; s5cmd


def test_ubi9_runtime_starts_from_the_radosgw_posix_image(s4):
    S4, S4Builder = s4
    from recipes.s4.recipe import UBI9_RADOSGW_IMAGE

    st = settings(platform="ubi9")
    plan = build_plan(["s4"], st)
    runtime = plan.node(S4)
    assert runtime.parent == UBI9_RADOSGW_IMAGE
    assert plan.node(S4Builder).parent.name == "imagefactory-base-ubi9"
    install = next(p.rendered for p in runtime.planned if p.rendered.kind == "install")
    script = install.calls[0].argv[-1]
    assert script.startswith("dnf install") and "radosgw" not in script and "curl-minimal" in script
    # and on Debian the same recipe starts from the slim base
    assert build_plan(["s4"], settings()).node(S4).parent.name == "imagefactory-base-debian-slim"
