"""Checks on the finished plan that run before any container starts.

Missing Copy() sources, unresolvable stages, unverifiable sources and patches that do not
apply were already reported by :func:`imagefactory.plan.prepare`; on top of that every secret
a RUN step names must be resolvable. All problems are reported together, each naming the
recipe and step.
"""

from __future__ import annotations

from .plan import Plan, PlanError
from .secrets import Secrets
from .steps import RunCall


def check(plan: Plan, secrets: Secrets) -> None:
    from .emulation import EmulationError, require_emulation

    problems: list[str] = []
    for node in plan.nodes:
        for layer in node.layers:
            for p in layer.steps:
                for call in p.rendered.calls:
                    if not isinstance(call, RunCall):
                        continue
                    for secret in call.secrets:
                        why = secrets.missing(secret.id)
                        if why:
                            problems.append(f"recipe {node.name!r}, step {p.index} ({p.rendered.kind}: "
                                            f"{p.rendered.summary}): {why}")
    for arch in sorted({n.arch for n in plan.nodes if n.arch} | {n.target_arch for n in plan.nodes if n.target_arch}):
        try:  # a foreign architecture's programs run under qemu-user: fail now, not minutes in
            require_emulation(arch)
        except EmulationError as exc:
            problems.append(str(exc))
    if problems:
        head = "the build cannot start" if len(problems) == 1 else f"the build cannot start ({len(problems)} problems)"
        raise PlanError(head + ":\n  " + "\n  ".join(problems))


__all__ = ["check"]
