"""Progress and summaries with rich: a live view on a terminal, plain lines in CI logs."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .execute import BuildFailed, BuildReport, ImageResult, NullReporter, StepRecord
from .plan import Node, Plan

if TYPE_CHECKING:  # pragma: no cover
    from rich.live import Live


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


class RichReporter(NullReporter):
    """Live table of running images (step, elapsed, cache hits) and a final summary table."""

    def __init__(self, console: Console | None = None, verbose: bool = False):
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self._running: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._t0 = time.monotonic()

    def start(self, plan: Plan) -> None:
        self._t0 = time.monotonic()
        names = ", ".join(n.name for n in plan.nodes)
        self.console.print(f"[bold]imagefactory[/] building {len(plan.nodes)} image(s): {names}")
        if self.console.is_terminal:
            from rich.live import Live  # a terminal only: CI logs get plain lines

            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()

    def _render(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("image", "step", "now", "elapsed", "hits"):
            table.add_column(col)
        with self._lock:
            for name, st in self._running.items():
                table.add_row(name, f"{st['index']}/{st['total']}", st["summary"][:70],
                              f"{time.monotonic() - st['t0']:.0f}s", str(st["hits"]))
        return table

    def _refresh(self) -> None:
        if self._live:
            self._live.update(self._render())

    def image_started(self, node: Node, total_steps: int) -> None:
        with self._lock:
            self._running[node.name] = {"index": 0, "total": total_steps, "summary": "cache lookup",
                                        "t0": time.monotonic(), "hits": 0}
        self._refresh()

    def step(self, node: Node, record: StepRecord, total: int, running: bool) -> None:
        with self._lock:
            st = self._running.get(node.name)
            if st is not None:
                st["index"], st["summary"] = record.index, f"{record.kind}: {record.summary}"
                if record.status in ("hit", "final-hit"):
                    st["hits"] += 1
        if not running and (self.verbose or record.status in ("run", "final")):
            mark = "[green]cached[/]" if record.status.endswith("hit") else f"[cyan]{record.seconds:6.1f}s[/]"
            self.console.print(f"  {node.name} [{record.index}/{total}] {record.kind}: "
                               f"{Text(record.summary[:80]).plain} {mark}", highlight=False)
        elif running and not self._live:
            self.console.print(f"  {node.name} [{record.index}/{total}] {record.kind}: "
                               f"{Text(record.summary[:80]).plain} …", highlight=False)
        self._refresh()

    def image_done(self, result: ImageResult) -> None:
        with self._lock:
            self._running.pop(result.name, None)
        self._refresh()

    def failed(self, error: BuildFailed) -> None:
        with self._lock:
            self._running.pop(error.image, None)
        self._stop_live()
        print_failure(self.console, error)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {message}", highlight=False)

    def _stop_live(self) -> None:
        if self._live:
            self._live.stop()
            self._live = None

    def finish(self, report: BuildReport) -> None:
        self._stop_live()
        self.console.print(summary_table(report.results))
        self.console.print(f"{report.seconds:.1f}s, {report.containers_started} container(s) started, "
                           f"{report.commits} commit(s); logs in {report.log_dir}")

    def close(self) -> None:
        self._stop_live()


def summary_table(results: list[ImageResult]) -> Table:
    table = Table(title="build summary")
    for col in ("image", "status", "ID", "size", "budget", "time", "hits", "misses"):
        table.add_column(col, justify="right" if col in ("size", "time", "hits", "misses") else "left")
    for r in results:
        budget = "" if not r.size_budget_mb else (
            f"[red]{r.size_budget_mb:.0f} MB OVER[/]" if r.over_budget else f"< {r.size_budget_mb:.0f} MB")
        status = {"built": "[cyan]built[/]", "cached": "[green]cached[/]", "failed": "[red]failed[/]",
                  "skipped": "[yellow]skipped[/]"}.get(r.status, r.status)
        table.add_row(r.name, status, r.image_id[:12], human_size(r.size) if r.size else "", budget,
                      f"{r.seconds:.1f}s", str(r.hits), str(r.misses))
    return table


def print_failure(console: Console, error: BuildFailed) -> None:
    body = Group(
        Text(f"{error.image}: step {error.step_no} failed: {error.step}", style="bold red"),
        Text(f"command: {error.command[:2000]}"),
        Text("log tail:", style="bold"),
        Text(error.tail or "(empty)"),
        Text(f"full log: {error.log}" if error.log else ""),
        Text(f"hint: {error.hint}" if error.hint else "", style="yellow"),
    )
    console.print(body)
