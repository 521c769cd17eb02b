"""Progress bars on stderr: shown on a terminal, off under --json or when stderr is not a terminal."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from cache.query import QueryReport


class QueryProgress:
    """Paid, cached, skipped, spend vs budget, rate and ETA of a query run."""

    def __init__(self, enabled: bool) -> None:
        self._console = Console(stderr=True)
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = Progress(
            TextColumn("[bold]query"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._task = None
        self._started = time.monotonic()

    def __enter__(self) -> QueryProgress:
        if self.enabled:
            self._progress.start()
            self._task = self._progress.add_task("query", total=None, status="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, report: QueryReport) -> None:
        if not self.enabled or self._task is None:
            return
        rate = report.paid_images / max(1e-9, time.monotonic() - self._started)
        budget = f"/{report.budget}" if report.budget is not None else ""
        status = (
            f"paid {report.paid_images} img + {report.paid_texts} txt, cached {report.already_cached}, "
            f"skipped {report.skipped}, budget {report.budget_used}{budget}, "
            f"spent {report.cost:.4f} {report.currency}, {rate:.1f} img/s"
        )
        left = report.budget - report.budget_used_before if report.budget is not None else report.selected
        can_buy = min(report.selected, max(left, 0))
        self._progress.update(self._task, total=max(can_buy, 1), completed=report.paid_images, status=status)
