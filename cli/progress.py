"""Progress on stderr: live bars on a terminal; off under --json. Training also prints one line per evaluation
when stderr is not a terminal, so a log shows a run's course."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cache.query import QueryReport

if TYPE_CHECKING:
    from student.trainer import Progress as TrainerProgress


class QueryProgress:
    """Paid, cached, skipped, spend vs budget, rate and ETA of a query run."""

    def __init__(self, enabled: bool) -> None:
        self._console = Console(stderr=True, emoji=False)
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
        self._task: TaskID | None = None
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
            f"spent {money(report.cost, report.currency)}, {rate:.1f} img/s"
        )
        left = report.budget - report.budget_used_before if report.budget is not None else report.selected
        can_buy = min(report.selected, max(left, 0))
        self._progress.update(self._task, total=max(can_buy, 1), completed=report.paid_images, status=status)


def money(amount: float, currency: str | None) -> str:
    """0.128011 USD: six decimals (a hundredth of a cent's hundredth), never float noise."""
    return f"{amount:.6f} {currency or ''}".rstrip()


def counted(total: int, reasons: dict[str, int]) -> str:
    """3 (undecodable here 2, rejected by the vendor 1)."""
    detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    return f"{total} ({detail})" if detail else str(total)


def duration(seconds: float) -> str:
    """3h05m, 4m12s, 9s."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def losses_text(losses: dict[str, float]) -> str:
    """loss 0.412 (ce 0.310, kd 0.204): the total, then its named parts."""
    parts = ", ".join(f"{k} {v:.3g}" for k, v in losses.items() if k not in ("loss", "kept"))
    return f"loss {losses['loss']:.3g}" + (f" ({parts})" if parts else "") if "loss" in losses else ""


HEARTBEAT_S = 30.0  # the longest a run's log stays silent


class TrainingProgress:
    """Training as it goes: a live bar per run on a terminal (step, loss and its parts, images/s, elapsed and
    time left, the latest source-validation accuracy), and lines anywhere else (logs, CI, pipes): one per
    evaluation, one at least every `heartbeat_s` while training, and a "still working" line when nothing has
    reported for that long (building a student, loading data, averaging weights). Every line starts with the
    time elapsed since the command started."""

    def __init__(
        self, label: str, enabled: bool, console: Console, heartbeat_s: float = HEARTBEAT_S, clock=time.monotonic
    ) -> None:
        self.label, self.console = label, console
        self.live = enabled and console.is_terminal
        self.lines = enabled and not self.live
        self.heartbeat_s, self._clock = heartbeat_s, clock
        self._started = self._last_line = self._last_event = clock()
        self._latest: tuple[str, TrainerProgress] | None = None
        self._phase = "preparing (building the student, reading the data)"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="vl2v-heartbeat", daemon=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TrainingProgress:
        if self.live:
            self._bar.start()
        if self.lines:
            self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._watchdog.is_alive():
            self._watchdog.join()
        if self.live:
            self._bar.stop()

    def update(self, run: str, p: TrainerProgress) -> None:
        name = f"{self.label} {run}".strip()
        with self._lock:
            self._latest, self._last_event = (name, p), self._clock()
        if self.live:
            self._show(f"{name} {p.stage}", p)
        elif self.lines and p.event == "evaluated":
            self._print(evaluation_line(name, p))
        elif self.lines and p.event == "step" and self._clock() - self._last_line >= self.heartbeat_s:
            self._print(step_line(name, p))

    def note(self, line: str) -> None:
        """A step of the command outside training (`demo: buying ...`): printed with the elapsed time, and what
        the heartbeat names until training reports."""
        with self._lock:
            self._latest, self._phase, self._last_event = None, line, self._clock()
        if self.lines:
            self._print(line)
        elif self.live:
            self.console.print(line, markup=False, highlight=False)

    def _watch(self) -> None:
        """Say that the run is alive when nothing has reported for `heartbeat_s`."""
        while not self._stop.wait(min(self.heartbeat_s / 4, 5.0)):
            with self._lock:
                now, latest, last_event = self._clock(), self._latest, self._last_event
            if now - self._last_line < self.heartbeat_s:
                continue
            if latest is None:
                self._print(f"still working: {self._phase}, {duration(now - last_event)} so far")
            else:
                name, p = latest
                where = f"{name} {p.stage} step {p.step}/{p.steps}" if p.stage != "final" else f"{name} final model"
                self._print(f"{where}: still working, {duration(now - last_event)} since it last reported")

    def _print(self, line: str) -> None:
        with self._lock:
            self._last_line = now = self._clock()
            self.console.print(f"[{duration(now - self._started)}] {line}", markup=False, highlight=False)

    def _show(self, key: str, p: TrainerProgress) -> None:
        if key not in self._tasks:
            self._tasks[key] = self._bar.add_task(key, total=p.steps, status="")
        val = f"val {100 * p.source_val_acc:.1f}%" if p.source_val_acc is not None else ""
        if p.event == "evaluating" and p.evaluated:
            status = f"evaluating {p.evaluated[0]}/{p.evaluated[1]} images  {val}"
        else:
            eta = f"{duration(p.eta_s)} left" if p.eta_s is not None and p.stage != "final" else ""
            speed = f"{p.images_per_s:.0f} img/s" if p.images_per_s else ""
            status = "  ".join(x for x in (losses_text(p.losses), speed, eta, val) if x)
        self._bar.update(self._tasks[key], completed=p.step, status=escape(status))


def step_line(name: str, p: TrainerProgress) -> str:
    """One line for a run between evaluations: where it is, its losses, speed and time left."""
    return f"{_where(name, p)}: {'; '.join(_course(p))}"


def _where(name: str, p: TrainerProgress) -> str:
    phase = f", {p.phase}" if p.phase else ""
    return f"{name} {p.stage} (stage {p.stage_index} of {p.stages}{phase}) step {p.step}/{p.steps}"


def _course(p: TrainerProgress) -> list[str]:
    rest = [x for x in (losses_text(p.losses), f"{p.images_per_s:.0f} img/s" if p.images_per_s else "") if x]
    if p.eta_s is not None:
        rest.append(f"about {duration(p.eta_s)} left")
    return rest


def evaluation_line(name: str, p: TrainerProgress) -> str:
    """One line for an evaluation: which model it judged, what it measured, how the run goes."""
    val = f"source val {100 * p.source_val_acc:.1f}%" if p.source_val_acc is not None else ""
    if p.stage == "final":
        stages = f"{p.stages} stage{'s' if p.stages > 1 else ''} of {p.steps} steps"
        target = f", target {100 * p.target_acc:.1f}%" if p.target_acc is not None else ""
        return f"{name} final model (after {stages}): {val}{target}"
    rest = _course(p)
    return f"{_where(name, p)}: {val}" + (f"; {'; '.join(rest)}" if rest else "")
