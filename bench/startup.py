"""The CLI's start-up cost with nothing to build, and the CPU floor of a cold build.

Run through ``python bench/bench.py --only noop-startup,cpu-floor`` or directly
(``python bench/startup.py --only noop-startup --store DIR`` reuses a store where the five targets
are built). Measurements (``--only``, comma separated; default both):

  noop-startup  ``python -m imagefactory`` as a user runs it, in a store where dev test build ci s4
                are built (``--store``, else a fresh store filled once, not measured): ``--help``,
                ``list``, ``build ci`` (one target) and ``build dev test build ci s4`` (all five).
                Each ``--repeat`` times; reported: the median wall time, and the median CPU time
                (user+sys) of the CLI process plus every process it waited for (buildah), from
                ``os.wait4``'s rusage - CPU time barely moves with the load other work puts on the
                machine, wall time does. Also: the CPU time of importing what the run imports (the
                top-level modules ``-X importtime`` lists, imported again in a fresh interpreter), the
                heaviest of those imports, and the buildah calls the no-op makes by verb (bench.py's
                ``_if-build`` wrapper). An empty ``python -c pass`` is measured too: the floor of any
                Python CLI here. A no-op that commits or starts a container is an error. Goals
                (issue 16): one target <= 0.25 s, all five <= 0.35 s.
  cpu-floor     a cold ``build build --jobs 2`` (``--floor-targets`` for others, e.g. the family
                ``dev,test,build,ci``) from the slim Debian base (bootstrapped first in the
                same fresh store, not measured). The build runs in its own transient cgroup (v2 if
                mounted, else v1 ``cpuacct``): the cgroup's CPU counter is the user+sys time of the
                whole process tree - every buildah process, the shells and compilers inside the
                containers - even of processes that nobody waits for, and none of other work on the
                machine. Without a usable cgroup the rusage of waited-for children is used (and is
                always reported next to it as a cross-check). Not counted either way: kernel threads
                working for the build (page writeback). The floor = CPU seconds / cores is the wall
                time a perfectly parallel build could reach on this machine; wall / floor says how
                far the build is from it (1.0 = every core busy for the build the whole time).

Private stores and the fresh state folders live under ``--workdir`` and are removed at the end.
Writes ``--results`` (default bench/results/startup.json; a measurement run alone replaces only its
own entry) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MEASUREMENTS = ("noop-startup", "cpu-floor")
FAMILY = ("dev", "test", "build", "ci", "s4")
SLIM = "imagefactory-base-debian-slim"
GOALS = {"build ci": 0.25, "build dev test build ci s4": 0.35}  # seconds of wall time (issue 16)


def log(msg: str) -> None:
    print(f"[startup {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Store:
    """A private buildah store: ``DIR/root`` and ``DIR/runroot``."""

    def __init__(self, base: Path):
        self.base = base
        self.root, self.runroot = base / "root", base / "runroot"

    def args(self) -> list[str]:
        return ["--root", str(self.root), "--runroot", str(self.runroot)]

    def destroy(self) -> None:
        for verb in (["rm", "--all"], ["rmi", "--all", "--force"]):
            subprocess.run(["buildah", *self.args(), *verb], capture_output=True)
        subprocess.run(["umount", "-R", str(self.root / "overlay")], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


class Runner:
    """``python -m imagefactory`` from this checkout, as a user runs it."""

    def __init__(self, work: Path):
        self.work = work
        self.env = dict(os.environ, PYTHONPATH=str(REPO))
        self.env.pop("SOURCE_DATE_EPOCH", None)
        # As a user's install runs: bytecode cached in __pycache__ (ignored by git), not every
        # module compiled again on every start (that alone costs about 0.1 s of CPU).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def cli(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "imagefactory", *args]

    def run(self, cmd: list[str], label: str, *, wrap: list[str] | None = None) -> dict:
        """Wall time and the rusage (user+sys) of the process and the children it waited for."""
        logfile = self.work / "logs" / f"{label}-{uuid.uuid4().hex[:6]}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen([*(wrap or []), *cmd], cwd=REPO, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"{' '.join(cmd[2:])} failed (exit {proc.returncode}):\n{tail}")
        return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
                "sys": usage.ru_stime, "log": logfile}

    def build(self, store: Store, targets: list[str], label: str, jobs: int = 2) -> dict:
        report = self.work / "logs" / f"{label}-{uuid.uuid4().hex[:6]}.json"
        log(f"imagefactory build {' '.join(targets)} --jobs {jobs}  [{label}]")
        res = self.run(self.cli(["build", *targets, "--jobs", str(jobs), *store.args(), "--report", str(report)]),
                       label)
        res["report"] = json.loads(report.read_text())
        log(f"  → {res['wall']:.1f}s wall, {res['cpu']:.1f}s CPU (waited-for processes)")
        return res


# --- noop-startup ---------------------------------------------------------------------------------
def import_profile(runner: Runner, args: list[str]) -> dict:
    """What the run imports: the CPU time of importing the same top-level modules in a fresh
    interpreter (median of 3; CPU time, as the machine may be busy), and the heaviest of them by
    ``-X importtime`` (wall time, ms)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "imagefactory", *args], cwd=REPO,
                          env=runner.env, capture_output=True, text=True)
    top = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and len(m.group(3)) == 0:  # nested imports are part of their top-level import's cumulative time
            top.append((m.group(4), int(m.group(2)) / 1000))
    names = [name for name, _ in top if name not in ("site", "encodings") and not name.startswith("_")]
    script = ("import importlib, sys, time\nt = time.process_time()\nfor name in sys.argv[1:]:\n"
              "    try:\n        importlib.import_module(name)\n    except Exception:\n        pass\n"
              "print(time.process_time() - t)")
    cpu = [float(subprocess.run([sys.executable, "-c", script, *names], cwd=REPO, env=runner.env,
                                capture_output=True, text=True).stdout) for _ in range(3)]
    top.sort(key=lambda item: -item[1])
    return {"import_cpu_ms": round(statistics.median(cpu) * 1000, 1),
            "heaviest_wall_ms": {name: round(ms, 1) for name, ms in top[:8]}}


def buildah_calls(runner: Runner, args: list[str]) -> dict:
    """The buildah calls one run makes, by verb (bench.py's instrumented CLI)."""
    calls = runner.work / "logs" / f"calls-{uuid.uuid4().hex[:6]}.json"
    runner.run([sys.executable, str(HERE / "bench.py"), "_if-build", str(calls), "--", *args], "calls")
    data = json.loads(calls.read_text())
    return {verb: {"count": v["count"], "seconds": v["seconds"]} for verb, v in data.items() if verb != "_cli_seconds"}


def noop_startup(runner: Runner, store: Store, fill: bool, repeat: int) -> dict:
    if fill:
        runner.build(store, list(FAMILY), "fill")
    cases = {"--help": ["--help"], "list": ["list"], "build ci": ["build", "ci", *store.args()],
             "build dev test build ci s4": ["build", *FAMILY, *store.args()]}
    out: dict = {}
    empty = [runner.run([sys.executable, "-c", "pass"], "python") for _ in range(repeat)]
    out["python -c pass"] = {"wall_s": round(statistics.median(r["wall"] for r in empty), 3),
                             "cpu_s": round(statistics.median(r["cpu"] for r in empty), 3)}
    for name, args in cases.items():
        runner.run(runner.cli(args), f"warm-{name.replace(' ', '-')}")  # page cache, digest memo, .pyc
        runs = []
        for i in range(repeat):
            report = runner.work / "logs" / f"noop-{uuid.uuid4().hex[:6]}.json"
            extra = ["--report", str(report)] if args[0] == "build" else []
            res = runner.run(runner.cli([*args, *extra]), f"noop-{i}")
            if extra:
                data = json.loads(report.read_text())
                if data.get("commits") or data.get("containers_started"):
                    raise RuntimeError(f"`{name}` is not a no-op here: {data.get('commits')} commits, "
                                       f"{data.get('containers_started')} containers (is every target built?)")
            runs.append(res)
        row = {"wall_s": round(statistics.median(r["wall"] for r in runs), 3),
               "cpu_s": round(statistics.median(r["cpu"] for r in runs), 3),
               "runs_wall_s": [round(r["wall"], 3) for r in runs],
               "runs_cpu_s": [round(r["cpu"], 3) for r in runs],
               **import_profile(runner, args)}
        if args[0] == "build":
            row["buildah_calls"] = buildah_calls(runner, args)
        if name in GOALS:
            row["goal_s"] = GOALS[name]
        out[name] = row
        log(f"{name}: {row['wall_s']:.3f}s wall, {row['cpu_s']:.3f}s CPU (median of {repeat}), "
            f"imports {row['import_cpu_ms']:.0f} ms CPU")
    return out


# --- cpu-floor ------------------------------------------------------------------------------------
class CpuCgroup:
    """A transient cgroup whose CPU counter covers a process tree (cgroup v2, else v1 cpuacct)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.version = 0
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
        v2 = next((m[1] for m in mounts if m[2] == "cgroup2"), None)
        v1 = next((m[1] for m in mounts if m[2] == "cgroup" and "cpuacct" in m[3].split(",")), None)
        for version, mount in ((2, v2), (1, v1)):
            if mount is None:
                continue
            path = Path(mount) / f"imagefactory-bench-{uuid.uuid4().hex[:8]}"
            try:
                path.mkdir()
            except OSError:
                continue
            self.path, self.version = path, version
            break

    def wrapper(self) -> list[str]:
        """Argv prefix: the shell joins the cgroup, then becomes the command (children follow it)."""
        assert self.path is not None
        return ["sh", "-c", f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"', "cgroup-join"]

    def cpu(self) -> dict:
        """user and sys CPU seconds the cgroup's processes used so far."""
        assert self.path is not None
        if self.version == 2:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
            return {"user": int(stat["user_usec"]) / 1e6, "sys": int(stat["system_usec"]) / 1e6}
        return {"user": int((self.path / "cpuacct.usage_user").read_text()) / 1e9,
                "sys": int((self.path / "cpuacct.usage_sys").read_text()) / 1e9}

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):  # a process may still be leaving it
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def cpu_floor(runner: Runner, store: Store, cores: int, targets: list[str]) -> dict:
    base = runner.build(store, [SLIM], "base")
    group = CpuCgroup()
    try:
        load = round(os.getloadavg()[0], 2)
        counter = f"cgroup v{group.version}" if group.path else "rusage"
        log(f"imagefactory build {' '.join(targets)} --jobs 2 (cold; CPU time from the {counter} counter)")
        report = runner.work / "logs" / "cold-build.json"
        res = runner.run(runner.cli(["build", *targets, "--jobs", "2", *store.args(), "--report", str(report)]),
                         "cold-build", wrap=group.wrapper() if group.path else None)
        cgroup = group.cpu() if group.path else None
    finally:
        group.remove()
    data = json.loads(report.read_text())
    rusage = {"user": round(res["user"], 2), "sys": round(res["sys"], 2)}
    cpu = cgroup["user"] + cgroup["sys"] if cgroup else res["cpu"]
    floor = cpu / cores
    out = {"wall_s": round(res["wall"], 2), "cpu_s": round(cpu, 2), "cores": cores, "floor_s": round(floor, 2),
           "wall_over_floor": round(res["wall"] / floor, 2) if floor else None,
           "method": f"cgroup v{group.version}" if cgroup else "rusage of waited-for children",
           "cgroup_cpu": {k: round(v, 2) for k, v in cgroup.items()} if cgroup else None,
           "rusage_cpu": rusage, "load": [load, round(os.getloadavg()[0], 2)],
           "base_seconds": round(base["wall"], 1), "containers_started": data.get("containers_started"),
           "commits": data.get("commits"),
           "images": {img["name"]: round(img["seconds"], 1) for img in data.get("images", [])}}
    log(f"cold build: {out['wall_s']}s wall, {out['cpu_s']}s CPU on {cores} cores: floor {out['floor_s']}s, "
        f"wall/floor {out['wall_over_floor']}")
    return out


# --- report ---------------------------------------------------------------------------------------
def table(results: dict) -> str:
    rows = [("measurement", "wall (s)", "user+sys (s)", "imports (ms CPU)", "goal (s)")]
    for name, row in results.get("noop-startup", {}).items():
        if name == "run":
            continue
        imports = f"{row['import_cpu_ms']:.0f}" if "import_cpu_ms" in row else ""
        rows.append((f"no-op `{name}`" if name.startswith("build") else f"`{name}`", f"{row['wall_s']:.3f}",
                     f"{row['cpu_s']:.3f}", imports, str(row.get("goal_s", ""))))
    for key, floor in results.items():
        if not key.startswith("cpu-floor"):
            continue
        targets = key.removeprefix("cpu-floor").strip() or "build"
        rows.append((f"cold `build {targets} --jobs 2`", f"{floor['wall_s']:.1f}", f"{floor['cpu_s']:.1f}", "", ""))
        rows.append((f"  CPU floor ({floor['cores']} cores) / wall ÷ floor", f"{floor['floor_s']:.1f}",
                     f"{floor['wall_over_floor']}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def _shown(argv: list[str]) -> str:
    """The command line for the committed report, without this machine's folders."""
    flags = ("--store", "--workdir", "--results")
    out: list[str] = []
    for word in argv:
        flag = word.split("=", 1)[0]
        if out and out[-1] in flags:
            word = "<dir>"
        elif flag in flags and "=" in word:
            word = f"{flag}=<dir>"
        out.append(word)
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(MEASUREMENTS), help=f"comma-separated: {', '.join(MEASUREMENTS)}")
    p.add_argument("--repeat", type=int, default=9, help="runs per no-op case (median reported)")
    p.add_argument("--store", type=Path, help="noop-startup: a store (DIR/root, DIR/runroot) where "
                                              f"{' '.join(FAMILY)} are built; default: a fresh one, filled first")
    p.add_argument("--floor-targets", default="build",
                   help="cpu-floor: the targets built cold (default build; e.g. 'dev,test,build,ci' for the family)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--results", type=Path, default=HERE / "results" / "startup.json")
    a = p.parse_args(argv)
    wanted = [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = sorted(set(wanted) - set(MEASUREMENTS))
    if unknown:
        print(f"unknown measurement {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench needs root (buildah with chroot isolation and private overlay stores)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="imagefactory-startup-", dir=a.workdir))
    runner = Runner(work)
    sys.path.insert(0, str(REPO))
    from imagefactory import config

    original = config.load(config_file=str(REPO / "imagefactory.yaml"))
    runner.env.update({"XDG_CACHE_HOME": str(work / "xdg-cache"),  # a fresh state folder (locks, digest memo)
                       "IMAGEFACTORY_SOURCE_CACHE": original.source_cache})  # the verified downloads, reused
    cores = len(os.sched_getaffinity(0))
    # a measurement run alone replaces its own entry and keeps the others of the results file
    results: dict = json.loads(a.results.read_text()) if a.results.is_file() else {}
    run = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cores": cores,
           "load_at_start": round(os.getloadavg()[0], 2),
           "command": "python bench/startup.py " + _shown(argv if argv is not None else sys.argv[1:])}
    stores: list[Store] = []
    try:
        if "noop-startup" in wanted:
            store = Store(a.store) if a.store else Store(work / "noop-store")
            if not a.store:
                stores.append(store)
            results["noop-startup"] = {"run": run, **noop_startup(runner, store, fill=not a.store, repeat=a.repeat)}
        if "cpu-floor" in wanted:
            store = Store(work / "cold-store")
            stores.append(store)
            targets = [t.strip() for t in a.floor_targets.split(",") if t.strip()]
            key = "cpu-floor" if targets == ["build"] else "cpu-floor " + " ".join(targets)  # one entry per target set
            results[key] = {"run": run, **cpu_floor(runner, store, cores, targets)}
    finally:
        for store in stores:
            store.destroy()
        shutil.rmtree(work, ignore_errors=True)
    results["table"] = table(results).splitlines()
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n".join(results["table"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
