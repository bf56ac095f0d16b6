"""`sources`: fetch, list or import the pinned source archives of from-source libraries."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, command, console, err_console, print_table

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["fetch", "list", "import", "digest"],
                   help="fetch [LIB...]: download/verify into the cache; list: cache status; "
                        "import DIR: seed the cache from a folder; digest ARCHIVE ROOT/: the tree digest "
                        "for a pin's tree_sha256")
    p.add_argument("names", nargs="*", metavar="LIB_OR_DIR",
                   help="library names for fetch (default: all), the folder for import")


def _digest(args: argparse.Namespace) -> int:
    from ..sources import TREE_DIGEST_VERSION, SourceError, tree_digest

    if len(args.names) != 2:
        err_console.print("usage: imagefactory sources digest ARCHIVE TREE_ROOT/  (e.g. zstd-1.5.7.tar.gz zstd-1.5.7/)")
        return EXIT_USAGE
    try:
        digest = tree_digest(args.names[0], args.names[1])
    except SourceError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return EXIT_FAIL
    console.print(digest, highlight=False)
    args._report_data = {"archive": args.names[0], "tree_root": args.names[1], "tree_sha256": digest,
                         "algorithm": TREE_DIGEST_VERSION}
    return EXIT_OK


@command("sources", "fetch, list or import pinned source archives (cache → mirrors → upstream)", _args)
def cmd_sources(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "digest":
        return _digest(args)
    from ..sources import SourceError, Sources, known_pins

    sources = Sources.from_settings(settings, log=lambda msg: err_console.print(msg, highlight=False))
    pins = known_pins()
    if args.action == "list":
        rows = sources.status(pins)
        print_table("sources", ["library", "version", "license", "cached", "archive", "sha256"],
                    [[r["library"], r["version"], r["license"], "✓" if r["cached"] else "✗",
                      (r["archive"] or "") + (" (alternate)" if r["alternate"] else ""),
                      (r["sha256"] or f"tree {r['tree_sha256']}")[:16]]
                     for r in rows])
        console.print(f"cache: {sources.cache}; mirrors: {', '.join(sources.mirrors) or 'none'}", highlight=False)
        args._report_data = {"sources": rows}
        return EXIT_OK
    if args.action == "import":
        if len(args.names) != 1:
            err_console.print("usage: imagefactory sources import DIR")
            return EXIT_USAGE
        try:
            result = sources.import_dir(args.names[0], pins)
        except SourceError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            return EXIT_FAIL
        rows = ([[f, w, "imported"] for f, w in result.imported] + [[f, w, "already cached"] for f, w in result.already]
                + [[f, why, "refused"] for f, why in result.refused])
        print_table(f"import {args.names[0]}", ["file", "library / reason", "result"], rows)
        args._report_data = {"import": result.to_dict()}
        return EXIT_OK
    # fetch
    wanted = args.names or [p.library for p in pins]
    by_name = {p.library.lower(): p for p in pins}
    unknown = [n for n in wanted if n.lower() not in by_name]
    if unknown:
        err_console.print(f"[bold red]error:[/] unknown library {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(by_name)) or '(none)'}", highlight=False)
        return EXIT_USAGE
    rows, data, failed = [], [], []
    for name in wanted:
        pin = by_name[name.lower()]
        try:
            got = sources.fetch(pin)
        except SourceError as exc:
            failed.append({"library": pin.library, "error": str(exc)})
            err_console.print(f"[bold red]✗[/] {exc}", highlight=False)
            continue
        how = " (tree verified)" if got.tree_verified else "" if got.is_primary else " (alternate)"
        rows.append([pin.library, pin.version, got.filename + how,
                     got.sha256[:16], got.url_used])
        data.append({"library": pin.library, "version": pin.version, "archive": got.filename,
                     "sha256": got.sha256, "tree_root": got.tree_root, "tree_verified": got.tree_verified, "from": got.url_used, "path": str(got.path)})
    print_table("fetched", ["library", "version", "archive", "sha256", "from"], rows)
    args._report_data = {"fetched": data, "failed": failed}
    return EXIT_FAIL if failed else EXIT_OK
