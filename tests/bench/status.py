"""Live status while a scenario runs: a person waits minutes, so show what is happening."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Step(Protocol):
    def update(self, completed: float | None = None, note: str = "") -> None: ...

    def finish(self, note: str = "") -> None: ...


class Status(Protocol):
    def step(self, description: str, total: float | None = None) -> Step: ...


class _NullStep:
    def update(self, completed: float | None = None, note: str = "") -> None:
        pass

    def finish(self, note: str = "") -> None:
        pass


class NullStatus:
    """For tests: no output."""

    def step(self, description: str, total: float | None = None) -> Step:
        return _NullStep()


class _RichStep:
    def __init__(self, progress: Progress, task: TaskID, total: float | None) -> None:
        self._progress = progress
        self._task = task
        self._total = total

    def update(self, completed: float | None = None, note: str = "") -> None:
        self._progress.update(self._task, completed=completed, note=note)

    def finish(self, note: str = "") -> None:
        total = self._total if self._total is not None else 1
        self._progress.update(self._task, total=total, completed=total, note=note)
        self._progress.stop_task(self._task)


class LiveStatus:
    """One block of progress lines per scenario; finished steps stay on screen."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/green]"),
            TextColumn("{task.description:<34}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            refresh_per_second=8,
        )

    def __enter__(self) -> LiveStatus:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def step(self, description: str, total: float | None = None) -> Step:
        task = self._progress.add_task(description, total=total, note="")
        return _RichStep(self._progress, task, total)
