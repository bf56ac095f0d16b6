"""The plan as data: what `plan` prints, `cache prune` keeps and provenance states.

Formats the decisions of the one cache walk (:func:`imagefactory.walk.walk`) with a read-only
view of the store; nothing here builds, and buildah is only asked for one listing of the store.
"""

from __future__ import annotations

import shlex

from .buildah import Buildah, Mount
from .config import Settings
from .plan import Node, Plan, Progress, build_plan
from .prepare import HOST_CA_ENV, HOST_CA_TARGET
from .steps import ConfigCall, CopyCall, HostCall, RunCall
from .walk import SCRATCH, Decision, FirstFound, NoCache, Provider, StoreIndex, walk

def describe_plan(targets: list[str], settings: Settings, read_store: bool = True,
                  progress: Progress | None = None, remote: Provider | None = None) -> list[dict]:
    """Plan as data: per image, per step: status (hit/miss), where it comes from, key and its calls."""
    plan = build_plan(targets, settings, progress=progress)
    bd = Buildah(settings.storage)
    index = bd.image_index() if read_store else {}
    local = StoreIndex(index)
    provider: Provider = NoCache() if settings.no_cache else (FirstFound(local, remote) if remote else local)
    return [describe_image(node, decisions, plan, bd) for node, decisions in walk_plan(plan, provider, index)]


def walk_plan(plan: Plan, provider: Provider, external: dict[str, str]) -> list[tuple[Node, list[Decision]]]:
    """Every image's decisions, for `plan`: the walk the build takes, with nothing built.

    External parents are looked up by name in ``external`` (the store's listing); a step after
    one that must run has an unknown key, and so has every image built on such an image.
    """
    ids: dict[str, str] = {}
    out: list[tuple[Node, list[Decision]]] = []
    for node in plan.nodes:
        parent = node.parent
        if isinstance(parent, type):
            parent_id = ids.get(node.parent_name or parent.name)
        elif isinstance(parent, str):
            parent_id = next((external[r] for r in (parent, f"docker.io/library/{parent}", f"localhost/{parent}")
                              if r in external), None)
        else:
            parent_id = SCRATCH
        stage_ids = {d: ids[d] for d in node.dep_names if d in ids}
        steps = walk(node, parent_id, stage_ids, provider)
        decisions: list[Decision] = []
        try:
            decision = next(steps)
            while True:
                decisions.append(decision)
                decision = steps.send(None)
        except StopIteration as done:
            if done.value:
                ids[node.name] = done.value
        out.append((node, decisions))
    return out


def describe_image(node, decisions: list[Decision], plan: Plan, bd) -> dict:
    steps = []
    host_ca = plan.facts.host_ca if plan.facts else None
    for d in decisions:
        status = "hit" if d.hit else "miss"
        common = {"status": status, "from": d.source, "key": d.key, "image": d.found.image_id if d.found else None}
        if d.is_flatten:
            steps.append({"index": 0, "kind": "flatten", "summary": d.unit.rendered.summary, **common,
                          "calls": [shlex.join(bd.argv("commit", "--squash", "$CTR", "$FLAT"))], "secrets": []})
            continue
        finals = [d.unit] if d.is_final else ([d.unit.final] if d.unit.final else [])
        if not d.is_final:
            for p in d.unit.steps:
                secrets = sorted({sec.id for c in p.rendered.calls if isinstance(c, RunCall) for sec in c.secrets})
                steps.append({"index": p.index, "kind": p.rendered.kind, "summary": p.rendered.summary, **common,
                              "calls": [format_call(c, bd, host_ca) for c in p.rendered.calls], "secrets": secrets})
        for fc in finals:
            for p in fc.trailing:  # config-only steps after the last layer: applied in the first final commit
                steps.append({"index": p.index, "kind": p.rendered.kind, "summary": p.rendered.summary, **common,
                              "key": None, "calls": [format_call(c, bd, host_ca) for c in p.rendered.calls],
                              "secrets": []})
            target = node.ref if not fc.feeds_children or fc.squash else "$STABLE"
            steps.append({"index": fc.index, "kind": "final", "summary": fc.rendered.summary, **common,
                          "calls": [shlex.join(bd.argv("config", *fc.label_args, "$CTR")),
                                    shlex.join(bd.argv("commit", "--format", node.image_format,
                                                       *(["--squash"] if fc.squash else []), "$CTR", target))],
                          "secrets": []})
    parent = node.parent
    pname = (node.parent_name or parent.name) if isinstance(parent, type) else (parent or "scratch")
    return {"image": node.name, "target": node.recipe.target_name(), "parent": pname, "squash": node.squash,
            "format": node.image_format, "platform": plan.platform.name, "arch": node.arch,
            "target_arch": node.target_arch, "ref": node.ref, "deps": list(node.dep_names), "steps": steps}


def format_call(c, bd, host_ca: str | None) -> str:
    """One call as the command line the executor runs (`$CTR` for the working container)."""
    if isinstance(c, RunCall):
        env = dict(c.env)
        mounts = list(c.mounts)
        if host_ca:
            env.update({k: HOST_CA_TARGET for k in HOST_CA_ENV})
            mounts.append(Mount(target=HOST_CA_TARGET, source=host_ca))
        return shlex.join(bd.argv(*bd.run_args("$CTR", list(c.argv), env=env, user=c.user, workdir=c.workdir,
                                               mounts=mounts, network=c.network)))
    if isinstance(c, CopyCall):
        return shlex.join(bd.argv(*bd.copy_args("$CTR", list(c.sources), c.dest, chown=c.chown, chmod=c.chmod,
                                                from_image=c.from_stage)))
    if isinstance(c, ConfigCall):
        return shlex.join(bd.argv("config", *c.args, "$CTR"))
    if isinstance(c, HostCall):
        return c.description
    raise TypeError(c)
