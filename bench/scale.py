"""How the engine grows with deep, wide families: plan, cold build and no-op rebuild at 1×, 3×, 10×.

Generates a synthetic family (not shipped recipes): CHAINS chains of IMAGES images, each image a
child of the previous one with STEPS `Run` steps, on a busybox base (so the measurement is the
engine and buildah, not package downloads). At 10× that is 6 × 10 × 20 = 1200 steps, deeper than
overlay's ~128-layer limit without the layer budget. For each factor, in a fresh private store:

  plan    resolve + prepare + render + the read-only walk of every image (what `plan` does)
  cold    build everything (`--jobs` = cores)
  noop    build again: every step a cache hit, no container

Writes bench/results/scale.json and prints a table. Stores are removed at the end.

    python bench/scale.py --workdir /var/tmp --factors 1,3,10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from conftest import Store, make_busybox_base  # noqa: E402  (the busybox base the tests build on)

CHAINS, IMAGES, BASE_STEPS = 6, 10, 2  # 1× = 120 steps


def family(factor: int, base: str) -> list[type]:
    """The leaves of CHAINS chains; every image has BASE_STEPS × factor Run steps."""
    from imagefactory import Recipe, Run

    tag = uuid.uuid4().hex[:6]
    leaves = []
    for c in range(CHAINS):
        parent: object = base
        for i in range(IMAGES):
            steps = BASE_STEPS * factor

            def own(self, c=c, i=i, steps=steps):
                return (Run(f"echo {c}.{i}.{j} > /s-{c}-{i}-{j}") for j in range(steps))

            parent = type(f"Scale{c}x{i}", (Recipe,), {"__doc__": f"scale {c}/{i}", "name": f"scale-{tag}-{c}-{i}",
                                                       "parent": parent, "steps": own})
        leaves.append(parent)
    return leaves


def measure(factor: int, work: Path) -> dict:
    from imagefactory.describe import walk_plan
    from imagefactory.execute import Executor
    from imagefactory.plan import build_plan
    from imagefactory.walk import StoreIndex

    root = work / f"scale-{factor}x-{uuid.uuid4().hex[:6]}"
    store = Store(root / "root", root / "run", root / "home")
    for p in (store.root, store.runroot, store.home):
        p.mkdir(parents=True, exist_ok=True)
    try:
        base = make_busybox_base(store)
        leaves = family(factor, base)
        settings = store.settings()
        t0 = time.monotonic()
        plan = build_plan(leaves, settings)
        walk_plan(plan, StoreIndex(store.buildah().image_index()), {})
        plan_s = time.monotonic() - t0
        steps = sum(len(n.planned) for n in plan.nodes)
        t0 = time.monotonic()
        cold = Executor(settings, store.buildah()).execute(build_plan(leaves, settings))
        cold_s = time.monotonic() - t0
        t0 = time.monotonic()
        noop = Executor(settings, store.buildah()).execute(build_plan(leaves, settings))
        noop_s = time.monotonic() - t0
        return {"factor": factor, "steps": steps, "images": len(plan.nodes), "plan_s": round(plan_s, 3),
                "cold_s": round(cold_s, 1), "noop_s": round(noop_s, 3), "cold_ok": cold.ok,
                "noop_containers": noop.containers_started, "flattened": [n for n in cold.notes if "flatten" in n]}
    finally:
        store.destroy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--factors", default="1,3,10")
    p.add_argument("--results", type=Path, default=HERE / "results" / "scale.json")
    a = p.parse_args(argv)
    rows = []
    for factor in (int(f) for f in a.factors.split(",")):
        row = measure(factor, a.workdir)
        print(json.dumps(row), flush=True)
        rows.append(row)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    print("| steps | images | plan (s) | cold (s) | no-op (s) | no-op containers |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['steps']} | {r['images']} | {r['plan_s']} | {r['cold_s']} | {r['noop_s']} | {r['noop_containers']} |")
    return 0 if all(r["cold_ok"] and r["noop_containers"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
