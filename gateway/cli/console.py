"""What every command shares on the terminal: the one stderr console, one-line failures instead
of tracebacks, and progress bars. Owns no state; imports no service."""

from __future__ import annotations

from typing import Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from gateway import demo_data
from gateway.errors import VeilgateError

__all__ = ["Guard", "console", "data_progress", "fail", "guard", "progress"]

console = Console(stderr=True, soft_wrap=True)  # one message, one line: logs and scripts grep them


def fail(message: str) -> NoReturn:
    """Say what went wrong in one line and exit with status 1."""
    console.print(f"[red]error:[/red] {escape(message)}")  # a message may quote a file: never markup
    raise typer.Exit(1)


def guard(action: str) -> Guard:
    """`with guard("rotation"):` turns a VeilgateError into "rotation failed: ..." and exit 1."""
    return Guard(action)


class Guard:
    """Turn a VeilgateError into a one-line message and exit code 1, never a traceback."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> Literal[False]:
        if isinstance(exc, VeilgateError):
            console.print(f"[red]{self.action} failed:[/red] {escape(exc.detail)}")
            raise typer.Exit(1)
        return False


def progress(*, transient: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def data_progress(bar: Progress) -> demo_data.ProgressFn:
    """One bar per dataset while synthetic data is generated."""
    tasks: dict[str, TaskID] = {}

    def update(dataset: str, done: int, total: int) -> None:
        if dataset not in tasks:
            tasks[dataset] = bar.add_task(dataset, total=total)
        bar.update(tasks[dataset], completed=done, total=total)

    return update
