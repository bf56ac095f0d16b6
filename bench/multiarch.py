"""arm64 next to amd64: why the libraries are cross-compiled (`python bench/multiarch.py`).

One fresh store, one run, in this order (the bases are bootstrapped first and not measured: a
machine bootstraps them once and caches them):

  amd64 cold   ``build build`` for the build machine (amd64)
  arm64 cold   ``build build --arch arm64``: its packages installed under qemu-user, its libraries
               cross-compiled in build-platform stages on this machine (the default)
  emulated     a bench-only recipe on the arm64 base: BUILD_DEPS installed in the arm64 image and
               ``--lib`` (default libuv) compiled there, under qemu-user, with the same profile -
               what building the libraries without cross-compiling costs

Reported: the three wall times, the arm64/amd64 ratio, and for ``--lib`` its library step native,
cross-compiled and emulated (the emulated/cross ratio is the point). ``--only library`` skips the two
cold ``build`` runs and builds just ``--lib``'s stage natively and cross-compiled (same stages as
the cold builds) next to the emulated recipe. Writes ``--results``
(default bench/results/multiarch.json) and prints a table; the store is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from startup import Runner, Store, log  # noqa: E402

SLIM = "imagefactory-base-debian-slim"
EMULATED_RECIPE = '''
from imagefactory.libraries import BUILD_DEPS, BuildLibrary
from imagefactory.recipe import Recipe
from imagefactory.steps import Install
from imagefactory.toolchain import RELEASE
from recipes.libs import BY_NAME


class Emulated(Recipe):
    """bench: one library compiled in the target architecture's own image, under qemu-user"""

    name = "imagefactory-bench-emulated"
    base = "slim"

    def steps(self):
        yield Install(*BUILD_DEPS)
        yield BuildLibrary(BY_NAME["LIB"], RELEASE)
'''


def step_seconds(report: dict, image: str, kind: str) -> float | None:
    for img in report.get("data", report).get("images", []):
        if img["name"] == image:
            return round(sum(s["seconds"] for s in img["steps"] if s["kind"] == kind and s["status"] == "run"), 1)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", default="libuv", help="the library compiled under emulation (default libuv)")
    p.add_argument("--only", choices=("all", "library"), default="all",
                   help="library: only --lib's stage (native, cross) and the emulated build, no cold `build`s")
    p.add_argument("--workdir", default=None, help="where the store goes (default: the system temp folder)")
    p.add_argument("--results", default=str(HERE / "results" / "multiarch.json"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="imagefactory-multiarch-", dir=args.workdir))
    runner = Runner(work)
    recipes = work / "recipes"
    recipes.mkdir()
    (recipes / "emulated.py").write_text(EMULATED_RECIPE.replace("LIB", args.lib))
    runner.env["IMAGEFACTORY_RECIPE_PATHS"] = str(recipes / "emulated.py")
    runner.env["IMAGEFACTORY_STATE_DIR"] = str(work / "state")
    store = Store(work / "store")
    try:
        bases = runner.build(store, [SLIM, "--arch", "amd64,arm64"], "bases")
        load = [round(os.getloadavg()[0], 2)]
        targets = ["build"] if args.only == "all" else [f"ocserv-modern-lib-{args.lib}-release"]
        amd64 = runner.build(store, targets, "amd64-cold")
        arm64 = runner.build(store, [*targets, "--arch", "arm64"], "arm64-cold")
        emulated = runner.build(store, ["imagefactory-bench-emulated", "--arch", "arm64"], "emulated")
        load.append(round(os.getloadavg()[0], 2))
    finally:
        store.destroy()
    lib_stage = f"ocserv-modern-lib-{args.lib}-release"
    out = {
        "machine": {"cores": os.cpu_count(), "load_1min_before_after": load},
        "bases_s": round(bases["wall"], 1),
        "measured": args.only,
        "cold_s": {"what": " ".join(targets), "amd64": round(amd64["wall"], 1), "arm64": round(arm64["wall"], 1)},
        "arm64_over_amd64": round(arm64["wall"] / amd64["wall"], 2),
        "package_install_s": {"amd64": step_seconds(amd64["report"], "ocserv-modern-build", "install"),
                              "arm64 (qemu)": step_seconds(arm64["report"], "ocserv-modern-build@arm64", "install")},
        "library": args.lib,
        "library_step_s": {
            "amd64 native": step_seconds(amd64["report"], lib_stage, "library"),
            "arm64 cross-compiled": step_seconds(arm64["report"], f"{lib_stage}@arm64", "library"),
            "arm64 under qemu": step_seconds(emulated["report"], "imagefactory-bench-emulated@arm64", "library"),
        },
        "emulated_build_deps_install_s": step_seconds(emulated["report"], "imagefactory-bench-emulated@arm64",
                                                      "install"),
    }
    steps = out["library_step_s"]
    if steps["arm64 cross-compiled"] and steps["arm64 under qemu"]:
        out["emulated_over_cross"] = round(steps["arm64 under qemu"] / steps["arm64 cross-compiled"], 1)
    Path(args.results).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    log(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
