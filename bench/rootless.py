"""What building rootless costs: the ocserv ``build`` image cold, as root and as an ordinary user.

Runs as root (it creates the user ``imagefactory-bench`` with subordinate IDs and a Python venv
it can run), then builds ``build`` from nothing (bootstrap included) three times, one after the
other, each in a fresh private store under ``--workdir``:

  root-overlay   as root, overlay (the reference)
  user-overlay   as the user, native overlay (Linux 5.13+)
  user-vfs       as the user, vfs (what kernels without rootless overlay get)

For each: cold build time, no-op rebuild time, store size on disk (``du -sx``, hard links counted
once). Prints a JSON report and the ratios against root-overlay, and writes the report to
``--results`` (default bench/results/rootless.json). Stores are removed at the end.

    python bench/rootless.py --workdir /var/tmp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
from rootless_user import VENV, ensure_user, ensure_venv  # noqa: E402  (shared with tests/test_rootless.py)

USER = "imagefactory-bench"
TARGET = "build"


def mirrors() -> str:
    import yaml

    cfg = yaml.safe_load((REPO / "imagefactory.yaml").read_text()) or {}
    return ",".join(str((REPO / m).resolve()) if "://" not in m else m for m in cfg.get("source_mirrors", []))


def run_build(kind: str, work: Path) -> dict:
    store = work / kind
    (store / "run").mkdir(parents=True, mode=0o700)
    (store / "cache").mkdir(mode=0o700)
    args = ["--root", str(store / "root"), "--runroot", str(store / "run" / "storage")]
    env = {"HOME": "/root", "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "XDG_CACHE_HOME": str(store / "cache"),
           "IMAGEFACTORY_SOURCE_MIRRORS": mirrors(), "XDG_RUNTIME_DIR": str(store / "run"),
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
    prefix: list[str] = []
    python = sys.executable
    if kind.startswith("user"):
        shutil.chown(store, USER, USER)
        for sub in ("run", "cache"):
            shutil.chown(store / sub, USER, USER)
        env.update(HOME=pwd.getpwnam(USER).pw_dir, USER=USER, PYTHONPATH=str(REPO),
                   PATH=f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        prefix = ["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
        python = str(VENV / "bin" / "python")
    driver = "vfs" if kind.endswith("vfs") else "overlay"
    cmd = [*prefix, python, "-m", "imagefactory", "build", TARGET, *args, "--storage-driver", driver,
           "--report", str(store / "report.json")]
    out = {}
    for phase in ("cold", "noop"):
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env=None if prefix else env, capture_output=True, text=True)
        out[f"{phase}_s"] = round(time.monotonic() - t0, 2)
        if proc.returncode != 0:
            raise SystemExit(f"{kind} {phase} failed:\n{proc.stderr[-4000:]}")
    report = json.loads((store / "report.json").read_text())
    out["image_bytes"] = next(i["size"] for i in report["images"] if i["target"] == TARGET)
    du = subprocess.run(["du", "-sxb", str(store / "root")], capture_output=True, text=True, check=True)
    out["store_bytes"] = int(du.stdout.split()[0])
    return out


def cleanup(kind: str, work: Path) -> None:
    store = work / kind
    bd = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run" / "storage"),
          "--storage-driver", "vfs" if kind.endswith("vfs") else "overlay"]
    runner = ["runuser", "-u", USER, "--"] if kind.startswith("user") else []
    subprocess.run([*runner, *bd, "rm", "--all"], capture_output=True)
    subprocess.run([*runner, *bd, "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(store, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"))
    p.add_argument("--results", default=str(HERE / "results" / "rootless.json"))
    p.add_argument("--only", default="root-overlay,user-overlay,user-vfs")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/rootless.py runs as root: it creates the test user")
    ensure_user(USER, first_id=400000)
    ensure_venv()
    work = Path(args.workdir) / f"imagefactory-bench-rootless-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    results: dict = {"kernel": platform.release(), "target": TARGET, "runs": {}}
    try:
        for kind in args.only.split(","):
            print(f"{kind}: building {TARGET} cold …", file=sys.stderr, flush=True)
            results["runs"][kind] = run_build(kind, work)
            print(f"  {results['runs'][kind]}", file=sys.stderr, flush=True)
            cleanup(kind, work)
    finally:
        for kind in args.only.split(","):
            cleanup(kind, work)
        shutil.rmtree(work, ignore_errors=True)
        uid = pwd.getpwnam(USER).pw_uid  # buildah's fallback runtime folders for the user
        for leftover in (f"/var/tmp/containers-user-{uid}", f"/var/tmp/podman-run-{uid}"):
            shutil.rmtree(leftover, ignore_errors=True)
    ref = results["runs"].get("root-overlay")
    if ref:
        results["ratios_vs_root_overlay"] = {
            kind: {k: round(v[k] / ref[k], 2) for k in ("cold_s", "noop_s", "store_bytes") if ref[k]}
            for kind, v in results["runs"].items() if kind != "root-overlay"}
    text = json.dumps(results, indent=2)
    print(text)
    Path(args.results).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
