"""The Containerfile equivalent to an imagefactory image, generated from the plan so it cannot drift.

:func:`containerfile_for` renders the recipe's steps exactly as the executor would (the same
:class:`~imagefactory.steps.RunCall` / :class:`~imagefactory.steps.CopyCall` /
:class:`~imagefactory.steps.ConfigCall` objects) and writes each as Containerfile instructions:

* ``RunCall``  → ``RUN [--mount=...] ["/usr/bin/env", "K=V", ..., argv...]``: the exec form runs
  the same argv (``/bin/sh -ec SCRIPT``); ``env`` sets the step's variables for that RUN only,
  as ``buildah run --env`` does. When one step renders several RunCalls (an install followed by
  a trim) they are chained in ONE ``RUN`` by default, because imagefactory commits a step as one
  layer: files a trim deletes in a later layer would still count in the image.
  ``RunCall.user`` / ``workdir`` (per-run in imagefactory) become ``USER`` / ``WORKDIR`` before
  the RUN and are switched back after it.
* bind mounts (source archives, patches, the host CA bundle) → ``RUN --mount=type=bind,
  source=<context path>,target=<same target>,ro``; the host folder is listed in the returned
  files to stage into the build context. Context paths carry the content digest
  (``mounts/<name>-<digest12>``): buildah 1.28 does NOT key its layer cache on the content of a
  bind mount, so a path that changes with the bytes is what makes a changed patch miss the cache.
* ``CopyCall`` from the host → ``COPY`` of a staged copy (``copy/<digest12>/<name>``);
  ``CopyFrom`` → ``COPY --from=<stage>``.
* ``ConfigCall`` → ``ENV`` / ``LABEL`` / ``USER`` / ``WORKDIR`` / ``ENTRYPOINT`` / ``CMD`` /
  ``EXPOSE`` / ``VOLUME`` / ``HEALTHCHECK``; the OCI labels imagefactory adds at the final
  commit become one ``LABEL`` at the end of each stage.
* ``HostCall`` (debootstrap) has no Containerfile form: such images (the platform bases) must be
  built by imagefactory and passed in ``from_images``.

Ancestors and stages not in ``from_images`` become earlier stages (``FROM ... AS <name>``) of
the same file, so the whole chain is one ``buildah bud``.

Run as a script to write a build context: ``python bench/containerfile.py build OUT_DIR``; with
``--single-chain`` the stages the target copies from (one per library) become one stage of RUNs,
the Containerfile of the libraries built one after the other (the bench's second column).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # import imagefactory from the tree this file sits in
    sys.path.insert(0, str(_REPO))

from imagefactory.buildah import Mount  # noqa: E402
from imagefactory.plan import Node, Plan, oci_labels  # noqa: E402
from imagefactory.prepare import FileDigests  # noqa: E402
from imagefactory.steps import ConfigCall, CopyCall, HostCall, RunCall  # noqa: E402

HOST_CA_TARGET = "/run/imagefactory/host-ca.crt"
HOST_CA_ENV = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
               "GIT_SSL_CAINFO")
CREATED_LABEL = "org.opencontainers.image.created"


class ContainerfileError(ValueError):
    """A step has no Containerfile equivalent (e.g. a host action such as debootstrap)."""


@dataclass
class _Stage:
    user: str | None = None  # effective USER (None: unset, i.e. root)
    workdir: str | None = None  # effective WORKDIR (None: unset, i.e. /)


def stage_alias(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]", "-", name.lower())


def containerfile_for(node: Node, plan: Plan, *, from_images: Mapping[str, str],
                      digests: FileDigests | None = None, host_ca: str | None = None, revision: str | None = None, source: str | None = None,
                      created: int | None = None, merge_step_calls: bool = True,
                      env_binary: str = "/usr/bin/env", chain: Collection[str] = (),
                      chain_alias: str = "libraries") -> tuple[str, dict[str, Path]]:
    """The Containerfile for ``node`` and the host files to stage into its build context.

    from_images  recipe name → image reference to start from instead of building it (bases built by
                 imagefactory: their steps run on the host and have no Containerfile form).
    host_ca      bind the host CA bundle into every RUN and point the usual variables at it, as the
                 executor does when ``trust_host_ca`` is on (pass the file, or None when it is off).
    revision / source / created  the OCI label values (``created``: a fixed epoch keeps the text,
                 and so bud's cache, stable between runs).
    chain        names of stages to build as ONE stage ``chain_alias``, one after the other (the bench's
                 single-chain column: the libraries as one chain of RUNs, as before they had their own
                 stages). They must build on one image outside the chain or on each other; a copy from
                 one of them into another is dropped (the files are already there), copies from them
                 elsewhere read ``chain_alias``, and consecutive such copies become one ``COPY``.
    Returns ``(text, files)``; ``files`` maps context-relative paths to host files or folders.
    """
    digests = digests or FileDigests()
    if node.name in from_images:
        raise ContainerfileError(f"{node.name} is given in from_images; nothing to generate")
    needed = _needed_nodes(node, plan, from_images)
    chained = [n for n in needed if n.name in chain]
    aliases = {n.name: chain_alias if n.name in chain else stage_alias(n.name) for n in needed}
    files: dict[str, Path] = {}
    out: list[str] = [
        "# syntax: buildah bud (generated by bench/containerfile.py from the imagefactory plan; do not edit)",
    ]
    stages: dict[str, _Stage] = {}

    def emit(calls, state: _Stage, owner: str) -> list[str]:
        return _emit_step(calls, state, files, digests, from_images, aliases, host_ca, merge_step_calls,
                          env_binary, owner)

    for n in needed:
        if n.name in chain:
            if n is chained[0]:
                out += _emit_chain(chained, plan, stages, from_images, aliases, emit, revision, source, created)
            continue
        parent = n.parent
        if isinstance(parent, type):
            ref = from_images.get(parent.name) or aliases.get(parent.name)
            if ref is None:  # pragma: no cover - _needed_nodes includes every parent
                raise ContainerfileError(f"{n.name}: parent {parent.name} is neither built here nor given")
            state = _Stage(**vars(stages[parent.name])) if parent.name in stages else _Stage()
        else:
            ref = parent or "scratch"
            state = _Stage()
        out += ["", f"# --- {n.name}", f"FROM {ref} AS {aliases[n.name]}"]
        for i, r in enumerate((p.rendered for p in n.planned), 1):
            out.append(f"# step {i} ({r.kind}): {_one_line(r.summary)}")
            out += emit(r.calls, state, n.name)
        out += _final_labels(n, plan, revision, source, created)
        stages[n.name] = state
    if chain:
        out = _join_chain_copies(out, chain_alias)
    return "\n".join(out) + "\n", files


def _final_labels(n: Node, plan: Plan, revision: str | None, source: str | None, created: int | None) -> list[str]:
    labels = oci_labels(n.recipe, plan.settings, revision=revision, source=source)
    if created is not None:
        import datetime as _dt

        labels[CREATED_LABEL] = _dt.datetime.fromtimestamp(created, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ["# final: the OCI labels imagefactory adds at the last commit",
            "LABEL " + " ".join(f"{_dq(k)}={_dq(v)}" for k, v in sorted(labels.items()))]


def _emit_chain(chained: list[Node], plan: Plan, stages: dict[str, _Stage], from_images, aliases, emit,
                revision, source, created) -> list[str]:
    """The ``chain`` stages as one stage: FROM the image they build on, then each one's steps in turn."""
    names = {n.name for n in chained}
    roots = {n.parent.name if isinstance(n.parent, type) else n.parent for n in chained} - names
    if len(roots) != 1:
        raise ContainerfileError(f"the chained stages build on {sorted(map(str, roots))}: they must build on one "
                                 "image outside the chain, or on each other")
    root = roots.pop()
    ref = from_images.get(root) or aliases.get(root) or root or "scratch"
    state = _Stage(**vars(stages[root])) if root in stages else _Stage()
    out = ["", f"# --- {', '.join(n.name for n in chained)}: one chain", f"FROM {ref} AS {aliases[chained[0].name]}"]
    for n in chained:
        for i, r in enumerate((p.rendered for p in n.planned), 1):
            calls = [c for c in r.calls if not (isinstance(c, CopyCall) and c.from_stage in names)]
            if calls != r.calls and not calls:
                continue  # a copy of a library the chain already holds
            out.append(f"# {n.name} step {i} ({r.kind}): {_one_line(r.summary)}")
            out += emit(calls, state, n.name)
    for n in chained:
        stages[n.name] = state
    return out + _final_labels(chained[-1], plan, revision, source, created)


def _join_chain_copies(lines: list[str], alias: str) -> list[str]:
    """Consecutive ``COPY --from=ALIAS`` to the same destination (comments between them aside) → one COPY."""
    prefix = f"COPY --from={alias} ["
    out: list[str] = []
    last = None  # index in out of the COPY being extended
    for line in lines:
        if line.startswith(prefix):
            sources = json.loads(line[len(prefix) - 1:])
            if last is not None:
                previous = json.loads(out[last][len(prefix) - 1:])
                if previous[-1] == sources[-1]:
                    out[last] = prefix[:-1] + json.dumps([*previous[:-1], *sources[:-1], sources[-1]])
                    continue
            out.append(line)
            last = len(out) - 1
        elif line.startswith("#") and last is not None:
            out.append(line)
        else:
            out.append(line)
            last = None
    return out


def _needed_nodes(node: Node, plan: Plan, from_images: Mapping[str, str]) -> list[Node]:
    """``node`` and every dep it needs built in this file, in the plan's topological order."""
    by_name = {n.name: n for n in plan.nodes}
    want: set[str] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n.name in want or n.name in from_images:
            continue
        want.add(n.name)
        todo += [by_name[d.name] for d in n.deps]
    return [n for n in plan.nodes if n.name in want]


def _emit_step(calls, state: _Stage, files: dict[str, Path], digests: FileDigests, from_images, aliases,
               host_ca: str | None, merge: bool, env_binary: str, owner: str) -> list[str]:
    out: list[str] = []
    runs = [c for c in calls if isinstance(c, RunCall)]
    if merge and len(runs) > 1 and len(runs) == len(calls) and _mergeable(runs):
        return _emit_run(runs, state, files, digests, host_ca, env_binary)
    for call in calls:
        if isinstance(call, RunCall):
            out += _emit_run([call], state, files, digests, host_ca, env_binary)
        elif isinstance(call, CopyCall):
            out.append(_emit_copy(call, files, digests, from_images, aliases))
        elif isinstance(call, ConfigCall):
            out += config_instructions(call.args, state)
        elif isinstance(call, HostCall):
            raise ContainerfileError(
                f"{owner}: {call.description!r} runs on the host and has no Containerfile form; build "
                f"{owner} with imagefactory and pass it in from_images")
        else:  # pragma: no cover
            raise ContainerfileError(f"{owner}: unknown call {call!r}")
    return out


def _mergeable(runs: list[RunCall]) -> bool:
    first = runs[0]
    if any((r.user, r.workdir, r.network) != (first.user, first.workdir, first.network) for r in runs):
        return False
    targets: dict[str, Mount] = {}
    for r in runs:
        for m in r.mounts:
            if targets.setdefault(m.target, m) != m:
                return False
    return True


def _emit_run(runs: list[RunCall], state: _Stage, files: dict[str, Path], digests: FileDigests,
              host_ca: str | None, env_binary: str) -> list[str]:
    first = runs[0]
    out: list[str] = []
    restore: list[str] = []
    if first.workdir and first.workdir != state.workdir:
        out.append(f"WORKDIR {first.workdir}")
        restore.append(f"WORKDIR {state.workdir or '/'}")
    if first.user and first.user != state.user:
        out.append(f"USER {first.user}")
        restore.insert(0, f"USER {state.user or 'root'}")
    mounts: list[Mount] = []
    for r in runs:
        mounts += [m for m in r.mounts if m not in mounts]
    if host_ca:
        mounts.append(Mount(target=HOST_CA_TARGET, source=host_ca))
    flags = [_mount_flag(m, files, digests) for m in mounts]
    argvs = []
    for r in runs:
        env = dict(r.env)
        if host_ca:
            env.update({k: HOST_CA_TARGET for k in HOST_CA_ENV})
        prefix = [env_binary, *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []
        argvs.append([*prefix, *r.argv])
    # several calls: one layer, each call's exact argv in turn
    argv = argvs[0] if len(argvs) == 1 else ["/bin/sh", "-ec", "\n".join(shlex.join(a) for a in argvs)]
    if first.network:
        out.append(f"# imagefactory runs this with --network={first.network}; buildah 1.28 RUN takes only --mount")
    out.append(" ".join(["RUN", *flags, json.dumps(argv)]))
    return out + restore


def _mount_flag(m: Mount, files: dict[str, Path], digests: FileDigests) -> str:
    if m.type == "bind":
        if not m.source:
            raise ContainerfileError(f"bind mount at {m.target} has no source")
        ctx = _stage(Path(m.source), "mounts", files, digests)
        return f"--mount=type=bind,source={ctx},target={m.target}" + (",ro" if m.readonly else ",rw")
    parts = [f"type={m.type}"]
    if m.source and m.type != "tmpfs":
        parts.append(f"id={m.source}")
    parts.append(f"target={m.target}")
    return "--mount=" + ",".join(parts)


def _stage(path: Path, kind: str, files: dict[str, Path], digests: FileDigests) -> str:
    """Context-relative path for a host file or folder; content-addressed so changed bytes change the text."""
    digest = digests.tree(path)[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", path.name)[:24] or "root"
    rel = f"{kind}/{slug}-{digest}" if kind == "mounts" else f"{kind}/{digest}/{slug}"
    files[rel] = path
    return rel


def _emit_copy(call: CopyCall, files: dict[str, Path], digests: FileDigests, from_images, aliases) -> str:
    flags = []
    if call.from_stage:
        label = call.from_stage
        src_ref = from_images.get(label) or aliases.get(label) or label
        flags.append(f"--from={src_ref}")
        sources = list(call.sources)
    else:
        sources = [_stage(Path(s), "copy", files, digests) for s in call.sources]
    if call.chown:
        flags.append(f"--chown={call.chown}")
    if call.chmod:
        flags.append(f"--chmod={call.chmod}")
    return " ".join(["COPY", *flags, json.dumps([*sources, call.dest])])


def config_instructions(args: tuple[str, ...] | list[str], state: _Stage | None = None) -> list[str]:
    """``buildah config`` arguments as Containerfile instructions (ENV and LABEL pairs grouped)."""
    state = state if state is not None else _Stage()
    out: list[str] = []
    envs: list[str] = []
    labels: list[str] = []
    health: dict[str, str] = {}
    it = iter(args)
    for flag in it:
        try:
            value = next(it)
        except StopIteration:
            raise ContainerfileError(f"buildah config {flag} has no value") from None
        if flag == "--env":
            k, _, v = value.partition("=")
            envs.append(f"{k}={_dq(v)}")
        elif flag == "--label":
            k, _, v = value.partition("=")
            labels.append(f"{_dq(k)}={_dq(v)}")
        elif flag == "--user":
            out.append(f"USER {value}")
            state.user = value
        elif flag == "--workingdir":
            out.append(f"WORKDIR {value}")
            state.workdir = value
        elif flag in ("--entrypoint", "--cmd"):
            form = value if value.lstrip().startswith("[") else json.dumps(["/bin/sh", "-c", value])
            out.append(f"{flag[2:].upper()} {form}")
        elif flag == "--port":
            out.append(f"EXPOSE {value}")
        elif flag == "--volume":
            out.append(f"VOLUME {json.dumps([value])}")
        elif flag.startswith("--healthcheck"):
            health[flag] = value
        else:
            raise ContainerfileError(f"buildah config {flag} has no Containerfile equivalent in this generator")
    if envs:
        out.insert(0, "ENV " + " ".join(envs))
    if labels:
        out.append("LABEL " + " ".join(labels))
    if health:
        cmd = health.get("--healthcheck", "")
        opts = [f"--{k.removeprefix('--healthcheck-')}={v}" for k, v in health.items() if k != "--healthcheck"]
        if cmd.startswith("CMD-SHELL "):
            body = "CMD " + cmd.removeprefix("CMD-SHELL ")
        elif cmd == "NONE":
            body = "NONE"
        else:
            body = "CMD " + json.dumps(shlex.split(cmd.removeprefix("CMD ")))
        out.append(" ".join(["HEALTHCHECK", *opts, body]))
    return out


def _dq(value: str) -> str:
    """A double-quoted Containerfile word: no variable expansion, no escapes lost."""
    if "\n" in value:
        raise ContainerfileError(f"value {value[:40]!r}... holds a newline; Containerfiles cannot say that")
    return '"' + re.sub(r'([\\"$])', r"\\\1", value) + '"'


def _one_line(text: str) -> str:
    return " ".join(text.split())[:120]


def stage_context(files: Mapping[str, Path], context: Path) -> None:
    """Put the files into the build context: hard links where possible, copies otherwise."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for rel, src in files.items():
        dst = context / rel
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)
        else:
            link_or_copy(str(src), str(dst))


def write_context(target: str, out_dir: Path, settings=None, *, from_images: Mapping[str, str] | None = None,
                  created: int | None = None, single_chain: bool = False) -> Path:
    """Plan ``target``, write ``Containerfile`` + staged files into ``out_dir``; return the Containerfile.

    ``single_chain``: the stages ``target`` copies from (the library stages) become one chain of RUNs
    (see ``chain`` in :func:`containerfile_for`), the Containerfile of one libraries stage.
    """
    from imagefactory import config
    from imagefactory.plan import build_plan
    from imagefactory.recipe import CATALOGUE
    from imagefactory.loader import load_recipes

    settings = settings or config.load()
    load_recipes(settings.recipe_paths)
    plan = build_plan([target], settings)
    node = plan.node(CATALOGUE.get(target))
    if from_images is None:
        from_images = {n.name: n.recipe.image_ref() for n in plan.nodes if n.recipe.platform_name}
    revision, source, host_ca = plan.facts.revision, plan.facts.source, plan.facts.host_ca
    chain = [d.name for d in node.deps if d is not node.parent] if single_chain else []
    text, files = containerfile_for(node, plan, from_images=from_images, host_ca=host_ca, revision=revision,
                                    source=source, created=created, chain=chain)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage_context(files, out_dir)
    path = out_dir / "Containerfile"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write the Containerfile (and its context) for a target")
    p.add_argument("target")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--created", type=int, help="fixed epoch for the created label (stable text)")
    p.add_argument("--from-image", action="append", default=[], metavar="RECIPE=REF",
                   help="start from REF instead of building RECIPE (default: the platform bases)")
    p.add_argument("--single-chain", action="store_true",
                   help="build the stages the target copies from as ONE stage, one RUN after the other")
    a = p.parse_args(argv)
    from_images = dict(x.split("=", 1) for x in a.from_image) or None
    path = write_context(a.target, a.out_dir, from_images=from_images, created=a.created,
                         single_chain=a.single_chain)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
