"""A rich progress bar that library hooks can feed, for the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from facespeech.hooks import Progress as LibraryProgress
from facespeech.hooks import ProgressFn


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in list(metrics.items())[:3])


@contextmanager
def progress_bar(title: str) -> Iterator[tuple[ProgressFn, _Updater]]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ) as bar:
        task = bar.add_task(title, total=1.0, info="")
        updater = _Updater(bar, task, title)
        yield updater.library_hook, updater


class _Updater:
    def __init__(self, bar: Progress, task: object, title: str) -> None:
        self.bar, self.task, self.title = bar, task, title

    def update(self, stage: str, fraction: float, info: str = "") -> None:
        self.bar.update(
            self.task,
            completed=fraction,  # type: ignore[arg-type]
            description=f"{self.title}: {stage}",
            info=info,
        )

    def library_hook(self, progress: LibraryProgress) -> None:
        self.update(progress.stage, progress.fraction, _format_metrics(dict(progress.metrics)))
