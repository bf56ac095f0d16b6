"""imagefactory against the equivalent Containerfile (`just bench`); not part of the test suite.

Both tools build the ocserv ``build`` image from the SAME slim Debian base: imagefactory
bootstraps it once in a seed store, and every store below gets a copy of it (same image ID,
``buildah push containers-storage:[...]``). The Containerfile is generated from the plan
(bench/containerfile.py), so it runs the very same scripts with the same env and mounts, in two
forms (TOOLS): the strongest a skilled user would write, one stage per library assembled with
``COPY --from`` and built with ``buildah bud --layers --jobs 2`` (column "per-library"); and the
libraries as one chain of RUNs in one stage, built with ``bud --layers`` (column "one-chain", the
anchor of the earlier results).

Measurements (``--only``, comma separated; default: all):

  cold-build   ``build`` from the base, both tools, fresh stores; also the image sizes
  noop         rebuild with nothing changed (``--repeat`` times, alternating which tool goes first)
  patch        rebuild after adding a harmless patch for one library (``--patch-lib``) in the
               temporary copy of the repository the bench runs in (``patches/`` is never touched)
  flag         imagefactory only: rebuild after changing one library's flags
               (``--set ocserv.cflags.LIB=...``, LIB = ``--patch-lib``); only that layer and later ones run
  quick-validate  imagefactory only: build ``ci`` from the base, then time its ``quick-validate``
               (``buildah run``, ``--repeat`` times, median)
  family-noop  imagefactory only: no-op rebuild of dev test build ci s4 together
  family-cold  imagefactory only: cold dev+test+build+ci with ``--jobs 2`` vs the sum of each target
               built alone with ``--jobs 1`` in its own cold store (long: many minutes each)
  family       both family measurements
  registry-cache  the shared step cache of CI runners, through one local docker-registry: a cold
               ``build`` with ``--cache-to`` (imagefactory; ``buildah bud --layers --cache-to`` on the
               Containerfile), compared with the cold build without it, then a fresh store holding
               only the base building from the registry (``--cache-from``), both tools
  noop-startup, cpu-floor  imagefactory only, by themselves (bench/startup.py, its own stores and
               bench/results/startup.json): the CLI's wall and CPU time with nothing to build (one
               target, all five, --help, list), and the CPU floor of a cold ``build --jobs 2``

Everything runs in a temporary copy of the repository and in private storage roots under
``--workdir`` (default: the system temporary folder, e.g. set TMPDIR); all of it is removed at
the end unless ``--keep``. The JSON report is printed and written to ``--results``
(default bench/results/latest.json); a table of ratios (imagefactory / Containerfile) follows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MEASUREMENTS = ("cold-build", "noop", "patch", "flag", "quick-validate", "family-noop", "family-cold",
                "registry-cache")
STARTUP = ("noop-startup", "cpu-floor")  # bench/startup.py: own stores, own report
ALIASES = {"family": ("family-noop", "family-cold"), "all": MEASUREMENTS, "sizes": ("cold-build",)}
SLIM = "imagefactory-base-debian-slim"
SLIM_REF = f"localhost/{SLIM}:latest"
FAMILY = ("dev", "test", "build", "ci", "s4")
# imagefactory; the Containerfile generated from the plan (one stage per library, `bud --layers --jobs
# BUD_JOBS`: the strongest a skilled user would write); the same with the libraries as one chain of RUNs
TOOLS = ("imagefactory", "containerfile", "containerfile_chain")
BUD_JOBS = 2
COLD_FAMILY = ("dev", "test", "build", "ci")
HARMLESS_PATCH = """\
Harmless patch added by bench/bench.py: creates one new text file, changes no code.

--- /dev/null
+++ b/IMAGEFACTORY-BENCH
@@ -0,0 +1 @@
+benchmark: this file only exists to change the library's patch set
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- stores -----------------------------------------------------------------------
@dataclass
class Store:
    name: str
    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def runroot(self) -> Path:
        return self.base / "run"

    def args(self) -> list[str]:
        return ["--root", str(self.root), "--runroot", str(self.runroot)]

    def spec(self) -> str:
        """This store as a containers-storage transport prefix."""
        return f"containers-storage:[overlay@{self.root}+{self.runroot}]"

    def bd(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["buildah", *self.args(), *args], capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def images(self) -> list[dict]:
        return json.loads(self.bd("images", "--json", "--no-trunc") or "[]") or []

    def image(self, ref: str) -> dict | None:
        for img in self.images():
            if ref in (img.get("names") or []):
                return img
        return None

    def layers(self, ref: str) -> int:
        data = json.loads(self.bd("inspect", "--type", "image", ref))
        return len(data.get("OCIv1", {}).get("rootfs", {}).get("diff_ids", []) or [])

    def destroy(self) -> None:
        if not self.base.exists():
            return
        subprocess.run(["buildah", *self.args(), "rm", "--all"], capture_output=True)
        subprocess.run(["buildah", *self.args(), "rmi", "--all", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.root / "overlay")], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def clone_images(src: Store, dst: Store, refs: list[str] | None = None) -> None:
    """Copy images (all, or those named) with every name they carry; image IDs stay the same."""
    for img in src.images():
        names = list(img.get("names") or [])
        if not names or (refs is not None and not set(refs) & set(names)):
            continue
        iid = img["id"].removeprefix("sha256:")
        src.bd("push", "--quiet", iid, dst.spec() + names[0])
        if len(names) > 1:
            dst.bd("tag", names[0], *names[1:])
        got = dst.image(names[0])
        if not got or got["id"].removeprefix("sha256:") != iid:
            raise RuntimeError(f"cloning {names[0]} changed its image ID")


# --- the environment both tools run in --------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="imagefactory-bench-", dir=args.workdir))
        self.copy = self.work / "repo"
        self.stores: list[Store] = []
        self.results: dict = {}
        self.created = int(time.time())
        sys.path.insert(0, str(REPO))
        from imagefactory import config

        original = config.load(config_file=str(REPO / "imagefactory.yaml"))
        self.env = dict(os.environ)
        self.env.update({
            "XDG_CACHE_HOME": str(self.work / "xdg-cache"),
            "IMAGEFACTORY_SOURCE_CACHE": original.source_cache,  # reuse the verified download cache
            "IMAGEFACTORY_SOURCE_MIRRORS": " ".join(original.source_mirrors),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        if original.debian_mirror:
            self.env["IMAGEFACTORY_DEBIAN_MIRROR"] = original.debian_mirror
        self.env.pop("SOURCE_DATE_EPOCH", None)
        self.secrets = [str(self.work), str(Path(args.workdir).resolve()) if args.workdir else "", str(REPO), str(Path.home()), original.source_cache,
                        *original.source_mirrors]

    # -- setup / teardown -------------------------------------------------------------
    def prepare(self) -> None:
        """A copy of the working tree with its own one-commit git history: the revision label (and so
        every key and bud's cache) stays put even when the checkout gets new commits during the run."""
        log(f"copying the repository into a temporary folder ({self.work.name})")
        shutil.copytree(REPO, self.copy, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "node_modules", "results", "*.egg-info", ".pytest_cache", ".ruff_cache"))
        git = ["git", "-C", str(self.copy), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "imagefactory bench snapshot"]):
            subprocess.run([*git, *args], check=True, capture_output=True)

    def store(self, name: str) -> Store:
        s = Store(name, self.work / "stores" / f"{name}-{uuid.uuid4().hex[:6]}")
        for p in (s.root, s.runroot):
            p.mkdir(parents=True, exist_ok=True)
        self.stores.append(s)
        return s

    def drop(self, store: Store) -> None:
        store.destroy()
        if store in self.stores:
            self.stores.remove(store)

    def cleanup(self) -> None:
        if self.args.keep:
            log(f"--keep: leaving {self.work}")
            return
        for s in list(self.stores):
            s.destroy()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- the two tools ----------------------------------------------------------------
    def imagefactory(self, store: Store, targets: list[str], *, jobs: int = 2, label: str,
                     extra: tuple[str, ...] = ()) -> dict:
        """`imagefactory build` through the real CLI, with every buildah call timed by verb."""
        out = self.work / "runs" / f"{label}-{uuid.uuid4().hex[:6]}"
        out.mkdir(parents=True)
        cmd = [sys.executable, str(self.copy / "bench" / "bench.py"), "_if-build", str(out / "calls.json"), "--",
               "build", *targets, "--jobs", str(jobs), *extra, *store.args(), "--report", str(out / "report.json")]
        log(f"imagefactory build {' '.join(targets)} --jobs {jobs}  [{label}]")
        load = self.wait_for_quiet()
        t0 = time.monotonic()
        with open(out / "output.log", "wb") as f:
            proc = subprocess.run(cmd, cwd=self.copy, env=self.env, stdout=f, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"imagefactory failed [{label}]:\n{_tail(out / 'output.log')}")
        report = json.loads((out / "report.json").read_text())
        calls = json.loads((out / "calls.json").read_text())
        images = {img["name"]: {"status": img["status"], "seconds": round(img["seconds"], 2), "size": img["size"],
                                "hits": img["hits"], "misses": img["misses"],
                                "steps": [{"kind": s["kind"], "summary": s["summary"], "status": s["status"],
                                           "seconds": round(s["seconds"], 2)} for s in img["steps"]]}
                  for img in report.get("images", [])}
        res = {"seconds": round(seconds, 2), "load": [load, round(os.getloadavg()[0], 2)],
               "engine_seconds": report.get("seconds"),
               "containers_started": report.get("containers_started"), "commits": report.get("commits"),
               "buildah_calls": calls, "images": images, "registry_cache": report.get("registry_cache")}
        log(f"  → {seconds:.1f}s, {res['commits']} commits, {res['containers_started']} containers")
        return res

    def containerfile(self, store: Store, target: str, *, label: str, extra: tuple[str, ...] = (),
                      single_chain: bool = False) -> dict:
        """``buildah bud --layers`` on the Containerfile generated from the plan: one stage per library,
        built ``--jobs 2``; or (``single_chain``) the libraries as one chain of RUNs in one stage."""
        ctx = self.work / "contexts" / f"{target}-{uuid.uuid4().hex[:6]}"
        variant = ["--single-chain"] if single_chain else []
        gen = subprocess.run([sys.executable, str(self.copy / "bench" / "containerfile.py"), target, str(ctx),
                              "--created", str(self.created), *variant], cwd=self.copy, env=self.env,
                             capture_output=True, text=True)
        if gen.returncode != 0:
            raise RuntimeError(f"generating the Containerfile failed: {gen.stderr[-3000:]}")
        text = (ctx / "Containerfile").read_text()
        kind = "single-chain" if single_chain else "per-library"
        self.results.setdefault("containerfiles", {})[f"{target} ({kind})"] = self.sanitize(text)
        ref = f"localhost/bench-{target}:latest"
        jobs = [] if single_chain else ["--jobs", str(BUD_JOBS)]
        cmd = ["buildah", *store.args(), "bud", "--layers", *jobs, "--isolation", "chroot", *extra, "-f",
               str(ctx / "Containerfile"), "-t", ref, str(ctx)]
        log(f"buildah bud --layers {' '.join(jobs)} --isolation chroot ({target} Containerfile, {kind})  [{label}]")
        load = self.wait_for_quiet()
        res = run_timed(cmd, self.work / "runs" / f"{label}-{uuid.uuid4().hex[:6]}.log", self.env)
        shutil.rmtree(ctx, ignore_errors=True)
        if res.pop("returncode") != 0:
            raise RuntimeError(f"buildah bud failed [{label}]:\n{res['tail']}")
        res.pop("tail", None)
        res["load"] = [load, round(os.getloadavg()[0], 2)]
        log(f"  → {res['seconds']:.1f}s, {res['cache_hits']}/{res['instructions']} instructions from cache")
        return res

    def wait_for_quiet(self) -> float:
        """With --max-load: wait (at most --max-wait s) until other work on the machine settles."""
        limit, deadline = self.args.max_load, time.monotonic() + self.args.max_wait
        load = os.getloadavg()[0]
        if limit and load > limit:
            log(f"  load {load:.1f} > {limit}: waiting up to {self.args.max_wait}s for other work to finish")
            while load > limit and time.monotonic() < deadline:
                time.sleep(10)
                load = os.getloadavg()[0]
        return round(load, 2)

    def compare(self, stores: dict[str, Store], target: str, *, first: str = "imagefactory", label: str) -> dict:
        """Each tool of ``stores`` (TOOLS) builds ``target`` in its store, starting with ``first``, then in
        the order of TOOLS (alternate ``first`` between repeats on a busy machine)."""
        tools = [t for t in TOOLS if t in stores]
        order = tools[tools.index(first):] + tools[:tools.index(first)]
        out: dict = {}
        for tool in order:
            if tool == "imagefactory":
                out[tool] = self.imagefactory(stores[tool], [target], label=f"{label}-if")
            else:
                out[tool] = self.containerfile(stores[tool], target, label=f"{label}-{tool}",
                                               single_chain=tool == "containerfile_chain")
        out["order"] = order
        return out

    def sanitize(self, obj):
        """No local paths or mirror hosts in the report: it is committed next to the docs."""
        secrets = sorted({s for s in self.secrets if s and len(s) > 3}, key=len, reverse=True)

        def clean(value):
            if isinstance(value, str):
                for secret in secrets:
                    value = value.replace(secret, "<local>")
                return re.sub(r"https?://[A-Za-z0-9.-]+(:\d+)?(/[^\s\"'\\]*)?", "<url>", value)
            if isinstance(value, dict):
                return {clean(k): clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return clean(obj)

    def checkpoint(self) -> None:
        """Partial results after every measurement, so a failure late in a long run loses nothing."""
        path = self.args.results.with_suffix(".partial.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.sanitize(self.results), indent=2))

    # -- measurements -----------------------------------------------------------------
    def run(self, wanted: list[str]) -> dict:
        self.prepare()
        self.results["machine"] = machine_facts()
        seed = self.store("seed")
        log("bootstrapping the slim Debian base with imagefactory (shared by every store)")
        base = self.imagefactory(seed, [SLIM], label="base")
        self.results["base"] = {"seconds": base["seconds"], "size": _size(seed, SLIM_REF)}
        target = self.args.target
        m = self.results.setdefault("measurements", {})
        stores: dict[str, Store] = {}
        if {"cold-build", "noop", "patch", "flag"} & set(wanted):
            stores = {tool: self.store(tool.replace("_", "-")) for tool in TOOLS}
            for tool, store in stores.items():
                clone_images(seed, store, None if tool == "imagefactory" else [SLIM_REF])
            m["cold-build"] = self.compare(stores, target, first=self.args.cold_first, label="cold")
            self.checkpoint()
            m["size"] = {tool: {"bytes": _size(store, _ref(tool, target)), "layers": store.layers(_ref(tool, target))}
                         for tool, store in stores.items()}
            m["size"]["base_bytes"] = self.results["base"]["size"]
        if "noop" in wanted:
            runs = [self.compare(stores, target, first=TOOLS[i % len(TOOLS)], label=f"noop{i}")
                    for i in range(self.args.repeat)]
            m["noop"] = {tool: {"seconds": round(statistics.median(r[tool]["seconds"] for r in runs), 2),
                                "runs": [r[tool]["seconds"] for r in runs],
                                "detail": runs[0][tool]} for tool in TOOLS}
            self.checkpoint()
        if "patch" in wanted:
            m["patch"] = self.patch_rebuild(stores, target)
            self.checkpoint()
        if "flag" in wanted:
            m["flag"] = self.flag_rebuild(stores["imagefactory"], target)
            self.checkpoint()
        for s in stores.values():
            self.drop(s)
        if "quick-validate" in wanted:
            m["quick-validate"] = self.quick_validate(seed)
            self.checkpoint()
        if "registry-cache" in wanted:
            m["registry-cache"] = self.registry_cache(seed, target, m.get("cold-build"))
            self.checkpoint()
        if "family-cold" in wanted or "family-noop" in wanted:
            self.family(seed, wanted, m)
        self.drop(seed)
        return self.results

    def registry_cache(self, seed: Store, target: str, cold: dict | None) -> dict:
        """Cold builds that fill a registry cache, then fresh stores (a new CI runner) building from it."""
        sys.path.insert(0, str(REPO / "tests"))
        from registry import local_registry  # Debian's docker-registry on a free 127.0.0.1 port

        out: dict = {}
        with local_registry(self.work / "registry") as reg:
            repos = {"imagefactory": f"{reg.host}/bench/imagefactory-cache",
                     "containerfile": f"{reg.host}/bench/containerfile-cache"}
            if cold is None:  # the cold build without a registry, for the --cache-to overhead
                s_if, s_cf = self.store("plain-if"), self.store("plain-cf")
                clone_images(seed, s_if)
                clone_images(seed, s_cf, [SLIM_REF])
                cold = self.compare({"imagefactory": s_if, "containerfile": s_cf}, target, label="plain")
                self.drop(s_if)
                self.drop(s_cf)
            out["cold"] = {tool: cold[tool]["seconds"] for tool in ("imagefactory", "containerfile")}
            flags = {tool: ("--cache-from", repo, "--cache-to", repo, "--tls-verify=false") for tool, repo in repos.items()}
            pushing, fresh = {}, {}
            s_if, s_cf = self.store("cache-to-if"), self.store("cache-to-cf")
            clone_images(seed, s_if)
            clone_images(seed, s_cf, [SLIM_REF])
            pushing["imagefactory"] = self.imagefactory(s_if, [target], label="cache-to-if", extra=flags["imagefactory"])
            pushing["containerfile"] = self.containerfile(s_cf, target, label="cache-to-cf", extra=flags["containerfile"])
            self.drop(s_if)
            self.drop(s_cf)
            # a fresh runner: only the base (imagefactory: the seed's base images and their entries)
            f_if, f_cf = self.store("fresh-if"), self.store("fresh-cf")
            clone_images(seed, f_if)
            clone_images(seed, f_cf, [SLIM_REF])
            fresh["imagefactory"] = self.imagefactory(f_if, [target], label="fresh-if",
                                                      extra=("--cache-from", repos["imagefactory"], "--tls-verify=false"))
            fresh["containerfile"] = self.containerfile(f_cf, target, label="fresh-cf",
                                                        extra=("--cache-from", repos["containerfile"],
                                                               "--tls-verify=false"))
            self.drop(f_if)
            self.drop(f_cf)
        for tool in ("imagefactory", "containerfile"):
            out[tool] = {"cold_cache_to": pushing[tool]["seconds"], "fresh_runner": fresh[tool]["seconds"],
                         "cache_to_overhead": ratio(pushing[tool]["seconds"], out["cold"][tool]),
                         "detail": {"cache_to": pushing[tool], "fresh": fresh[tool]}}
        out["fresh_ratio"] = ratio(fresh["imagefactory"]["seconds"], fresh["containerfile"]["seconds"])
        return out

    def patch_rebuild(self, stores: dict[str, Store], target: str) -> dict:
        lib = self.args.patch_lib
        libs = _load_module(self.copy / "recipes" / "libs.py")
        spec = libs.BY_NAME[lib]
        folder = self.copy / "patches" / spec.name / spec.version
        existed = folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        patch = folder / "9999-imagefactory-bench-harmless.patch"
        patch.write_text(HARMLESS_PATCH)
        log(f"patch: added a harmless patch for {lib} {spec.version} in the temporary copy")
        try:
            out = self.compare(stores, target, label="patch")
        finally:
            patch.unlink()
            if not existed:
                shutil.rmtree(self.copy / "patches" / spec.name, ignore_errors=True)
        out["library"] = f"{lib} {spec.version}"
        return out

    def flag_rebuild(self, if_store: Store, target: str) -> dict:
        """One library's flags changed (the e2e test checks what rebuilds; this is how long it takes)."""
        lib = self.args.patch_lib
        setting = f"ocserv.cflags.{lib}=-DIMAGEFACTORY_BENCH_FLAG=1"
        res = self.imagefactory(if_store, [target], label="flag", extra=("--set", setting))
        ran = [s["summary"] for img in res["images"].values() for s in img["steps"] if s["status"] in ("run", "final")]
        return {"imagefactory": res, "setting": setting, "steps_run": ran}

    def quick_validate(self, seed: Store) -> dict:
        """`quick-validate` in a fresh container of `ci`, as the e2e test runs it (which asserts only PASS)."""
        store = self.store("quick-validate")
        clone_images(seed, store)
        build = self.imagefactory(store, ["ci"], label="qv-build")
        ref = "localhost/ocserv-modern-ci:latest"
        runs = []
        for i in range(self.args.repeat):
            ctr = store.bd("from", "--pull=never", "--quiet", ref).strip()
            try:
                load = self.wait_for_quiet()
                t0 = time.monotonic()
                proc = subprocess.run(["buildah", *store.args(), "run", "--isolation", "chroot", "--user", "1000",
                                       ctr, "--", "quick-validate"], capture_output=True, text=True)
                seconds = round(time.monotonic() - t0, 2)
            finally:
                store.bd("rm", ctr, check=False)
            if proc.returncode != 0 or not proc.stdout.rstrip().endswith("quick-validate: PASS"):
                raise RuntimeError(f"quick-validate failed in {ref}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
            log(f"  quick-validate {i + 1}/{self.args.repeat}: {seconds:.2f}s")
            runs.append({"seconds": seconds, "load": [load, round(os.getloadavg()[0], 2)],
                         "checks": proc.stdout.count("PASS  ")})
        self.drop(store)
        return {"imagefactory": {"seconds": statistics.median(r["seconds"] for r in runs), "runs": runs},
                "build_ci_seconds": build["seconds"]}

    def family(self, seed: Store, wanted: list[str], m: dict) -> None:
        fam: dict = {}
        if "family-cold" in wanted:
            s2 = self.store("family-j2")
            clone_images(seed, s2)
            fam["jobs2"] = self.imagefactory(s2, list(COLD_FAMILY), jobs=2, label="family-j2")
            alone = {}
            for t in COLD_FAMILY:
                s1 = self.store(f"alone-{t}")
                clone_images(seed, s1)
                alone[t] = self.imagefactory(s1, [t], jobs=1, label=f"alone-{t}")
                self.drop(s1)
            fam["alone_jobs1"] = {t: r["seconds"] for t, r in alone.items()}
            fam["alone_jobs1_sum"] = round(sum(fam["alone_jobs1"].values()), 2)
            fam["alone_detail"] = alone
            m["family-cold"] = fam
            family_store = s2
        else:
            family_store = self.store("family")
            clone_images(seed, family_store)
        if "family-noop" in wanted:
            log("family-noop: building every target once (not measured), then the no-op rebuild")
            self.imagefactory(family_store, list(FAMILY), jobs=2, label="family-fill")
            runs = [self.imagefactory(family_store, list(FAMILY), jobs=2, label=f"family-noop{i}")
                    for i in range(self.args.repeat)]
            m["family-noop"] = {"imagefactory": {"seconds": round(statistics.median(r["seconds"] for r in runs), 2),
                                                 "runs": [r["seconds"] for r in runs], "detail": runs[0]}}
        self.drop(family_store)


# --- timing buildah bud ---------------------------------------------------------------------
# "[2/9] STEP 1/3: ..." in a multi-stage build; with --jobs the stages' lines interleave and the
# "-->" lines name no stage, so per-instruction times are then approximate (totals are exact)
_STEP = re.compile(r"^(?:\[(\d+)/\d+\] )?STEP (\d+)/(\d+): (.*)$")


def run_timed(cmd: list[str], logfile: Path, env: dict) -> dict:
    """Run bud, timestamp every output line; per instruction: seconds, cached or not, commit estimate."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    lines: list[tuple[float, str]] = []
    with open(logfile, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                errors="replace", bufsize=1)
        assert proc.stdout
        for line in proc.stdout:
            now = time.monotonic() - t0
            lines.append((now, line.rstrip("\n")))
            f.write(f"{now:9.3f} {line}")
        proc.wait()
    seconds = time.monotonic() - t0
    steps: list[dict] = []
    for i, (t, text) in enumerate(lines):
        mt = _STEP.match(text)
        if mt:
            steps.append({"stage": int(mt.group(1) or 1), "index": int(mt.group(2)), "instruction": mt.group(4)[:100],
                          "start": t, "cached": False, "commit_seconds": None, "_last": t})
        elif steps:
            st = steps[-1]
            if text.startswith("--> Using cache"):
                st["cached"] = True
            elif re.match(r"^--> [0-9a-f]{6,}", text) and not st["cached"]:
                st["commit_seconds"] = round(t - st["_last"], 2)  # last output line → new layer ID
            if not text.startswith("-->"):
                st["_last"] = t
    for i, st in enumerate(steps):
        end = steps[i + 1]["start"] if i + 1 < len(steps) else seconds
        st["seconds"] = round(end - st.pop("start"), 2)
        st.pop("_last")
    cache_hits = sum(1 for _, text in lines if text.startswith("--> Using cache"))
    return {"seconds": round(seconds, 2), "instructions": len(steps), "cache_hits": cache_hits,
            "layers_committed": sum(1 for s in steps if s["commit_seconds"] is not None), "steps": steps,
            "returncode": proc.returncode, "tail": "\n".join(t for _, t in lines[-40:])}


# --- helpers ------------------------------------------------------------------------------------
def machine_facts() -> dict:
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    info = {}
    try:
        info = json.loads(sh("buildah", "info"))
    except ValueError:
        pass
    store = info.get("store", {})
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "")
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    os_release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {
        "cores": int(sh("nproc") or 0),
        "cpu": cpu,
        "memory_mb": mem,
        "kernel": platform.release(),
        "os": os_release.get("PRETTY_NAME", "").strip('"'),
        "buildah": json.loads(sh("buildah", "version", "--json") or "{}").get("version", ""),
        "storage_driver": store.get("GraphDriverName", ""),
        "isolation": "chroot",
        "python": platform.python_version(),
    }


def _ref(tool: str, target: str) -> str:
    return f"localhost/ocserv-modern-{target}:latest" if tool == "imagefactory" else f"localhost/bench-{target}:latest"


def _size(store: Store, ref: str) -> int:
    from imagefactory.buildah import parse_size

    img = store.image(ref)
    return parse_size(str(img.get("size"))) if img else 0


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _load_module(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}_{uuid.uuid4().hex[:6]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def table(results: dict) -> str:
    """imagefactory against the per-library Containerfile (``bud --jobs 2``) and the single-chain one;
    ratios are imagefactory / that Containerfile (results before the per-library column have their
    single-chain numbers under "containerfile")."""
    m = results.get("measurements", {})
    rows = []

    def compared(name: str, a: float, b: float | None, c: float | None, fmt: str = "{:.2f}") -> None:
        rows.append((name, fmt.format(a), "-" if b is None else fmt.format(b), "-" if c is None else fmt.format(c),
                     ratio(a, b), ratio(a, c)))

    def only(name: str, a: str) -> None:
        rows.append((name, a, "-", "-", None, None))

    for name in ("cold-build", "noop", "patch"):
        if name in m:
            compared(f"{name} (s)", *(m[name].get(tool, {}).get("seconds") for tool in TOOLS))
    if "size" in m:
        size = m["size"]
        compared("image size (MB)", *((size[t]["bytes"] / 1e6 if t in size else None) for t in TOOLS), "{:.1f}")
        compared("layers", *(size[t]["layers"] if t in size else None for t in TOOLS), "{}")
    if "flag" in m:
        only("rebuild after a flag change (s)", f"{m['flag']['imagefactory']['seconds']:.2f}")
    if "quick-validate" in m:
        only("quick-validate in ci (s, median)", f"{m['quick-validate']['imagefactory']['seconds']:.2f}")
    if "family-noop" in m:
        only("family no-op, 5 targets (s)", f"{m['family-noop']['imagefactory']['seconds']:.2f}")
    if "family-cold" in m:
        fc = m["family-cold"]
        only("family cold --jobs 2 (s)", f"{fc['jobs2']['seconds']:.2f}")
        only("family cold, sum alone --jobs 1 (s)", f"{fc['alone_jobs1_sum']:.2f}")
        only("  jobs2 / sum alone", f"{ratio(fc['jobs2']['seconds'], fc['alone_jobs1_sum'])}")
    if "registry-cache" in m:
        rc = m["registry-cache"]
        a, b = rc["imagefactory"], rc["containerfile"]
        compared("cold build with --cache-to (s)", a["cold_cache_to"], b["cold_cache_to"], None)
        rows.append(("  --cache-to / without", f"{a['cache_to_overhead']}", f"{b['cache_to_overhead']}", "-", None, None))
        compared("fresh runner from the registry (s)", a["fresh_runner"], b["fresh_runner"], None)
    width = max([len(r[0]) for r in rows] + [12])
    out = [f"{'measurement':<{width}}  {'imagefactory':>12}  {'per-library cf':>14}  {'one-chain cf':>12}"
           f"  {'ratio':>9}  {'ratio':>7}",
           f"{'':<{width}}  {'':>12}  {'bud --jobs 2':>14}  {'bud':>12}  {'/ per-lib':>9}  {'/ chain':>7}"]
    for name, a, b, c, r1, r2 in rows:
        out.append(f"{name:<{width}}  {a:>12}  {b:>14}  {c:>12}  {'' if r1 is None else r1:>9}  "
                   f"{'' if r2 is None else r2:>7}")
    return "\n".join(out)


# --- the instrumented CLI (runs inside the temporary copy) ------------------------------------
def if_build(calls_file: str, argv: list[str]) -> int:
    """`python -m imagefactory ARGV` with every buildah call timed by its verb."""
    sys.path.insert(0, str(REPO))
    from imagefactory import buildah as bmod
    from imagefactory import cli

    lock = threading.Lock()
    timings: dict[str, list[float]] = {}
    original = bmod.Buildah._call

    def timed(self, *args, **kw):
        t0 = time.monotonic()
        try:
            return original(self, *args, **kw)
        finally:
            with lock:
                timings.setdefault(args[0] if args else "?", []).append(round(time.monotonic() - t0, 3))

    bmod.Buildah._call = timed
    started = time.monotonic()
    try:
        return cli.main(argv)
    finally:
        total = time.monotonic() - started
        summary = {verb: {"count": len(v), "seconds": round(sum(v), 2), "each": v if len(v) <= 40 else v[:40]}
                   for verb, v in sorted(timings.items())}
        summary["_cli_seconds"] = round(total, 2)
        Path(calls_file).write_text(json.dumps(summary))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark imagefactory against the equivalent Containerfile")
    p.add_argument("--only", default="all",
                   help=f"comma-separated measurements: {', '.join(MEASUREMENTS)}, family, all (default); "
                        "or `scale` alone (bench/scale.py), or `noop-startup`/`cpu-floor` alone (bench/startup.py)")
    p.add_argument("--target", default="build", help="the image compared with its Containerfile (default build)")
    p.add_argument("--repeat", type=int, default=3, help="no-op rebuilds per tool (median reported)")
    p.add_argument("--cold-first", choices=TOOLS, default="imagefactory",
                   help="which tool builds first in the cold comparison (the others follow in turn)")
    p.add_argument("--patch-lib", default="cjson", help="library that gets the harmless patch (default cjson)")
    p.add_argument("--workdir", help="where the temporary copy and the stores go (default: system temp folder)")
    p.add_argument("--results", type=Path, default=HERE / "results" / "latest.json")
    p.add_argument("--max-load", type=float, default=0,
                   help="before each measured build wait until the 1-minute load average is below this (0: never)")
    p.add_argument("--max-wait", type=int, default=600, help="longest wait for --max-load, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy and the stores")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_if-build"]:
        return if_build(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    args = parse_args(argv)
    if args.only == "scale":  # the engine's growth with deep families: its own script (bench/scale.py)
        scale = _load_module(HERE / "scale.py")
        return scale.main(["--workdir", args.workdir or "/var/tmp"])
    if set(args.only.split(",")) <= set(STARTUP):  # start-up and the CPU floor (bench/startup.py)
        startup = _load_module(HERE / "startup.py")
        return startup.main(["--only", args.only, *(["--workdir", args.workdir] if args.workdir else [])])
    wanted: list[str] = []
    for item in (x.strip() for x in args.only.split(",") if x.strip()):
        for name in ALIASES.get(item, (item,)):
            if name not in MEASUREMENTS:
                print(f"unknown measurement {item!r}; choose from {', '.join(MEASUREMENTS)}, family, all",
                      file=sys.stderr)
                return 2
            if name not in wanted:
                wanted.append(name)
    if os.geteuid() != 0:
        print("bench needs root (buildah with chroot isolation and private overlay stores)", file=sys.stderr)
        return 2
    bench = Bench(args)
    started = time.monotonic()
    try:
        results = bench.run(wanted)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.cleanup()
    results["command"] = "python bench/bench.py " + " ".join(shlex.quote(a) for a in argv)
    results["measured"] = wanted
    results["total_seconds"] = round(time.monotonic() - started, 1)
    results["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    results = bench.sanitize(results)
    results["table"] = table(results).splitlines()
    text = json.dumps(results, indent=2)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text + "\n")
    print("\n" + table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
