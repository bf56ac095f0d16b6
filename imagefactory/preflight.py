"""Checks that run before any container starts, so bad input fails in a second, not mid-build.

Rendering every step of every image (with stage images not yet known) finds missing
Copy() sources, unresolvable stages, unfetchable or unpinned sources and patches that
do not apply (see :mod:`imagefactory.libraries`); on top of that every secret a RUN
step names must be resolvable. All problems are reported together, each naming the
recipe and step.
"""

from __future__ import annotations

from .plan import FileDigests, Plan, PlanError, render_steps
from .secrets import Secrets
from .steps import RunCall


def check(plan: Plan, digests: FileDigests, secrets: Secrets) -> None:
    problems: list[str] = []
    for node in plan.nodes:
        try:
            rendered = render_steps(node, plan, {}, digests)
        except PlanError as exc:
            problems.append(str(exc))
            continue
        for index, (_, r) in enumerate(rendered, 1):
            for call in r.calls:
                if not isinstance(call, RunCall):
                    continue
                for secret in call.secrets:
                    why = secrets.missing(secret.id)
                    if why:
                        problems.append(f"recipe {node.name!r}, step {index} ({r.kind}: {r.summary}): {why}")
    if problems:
        head = "the build cannot start" if len(problems) == 1 else f"the build cannot start ({len(problems)} problems)"
        raise PlanError(head + ":\n  " + "\n  ".join(problems))


__all__ = ["check"]
