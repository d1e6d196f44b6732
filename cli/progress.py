"""Progress bars for long CLI operations (rich), quiet when standard output is not a terminal:
a script, a pipe or a log file gets the result lines only, not a stream of redrawn bars."""

from __future__ import annotations

from contextlib import nullcontext

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn


def bar(console: Console, *columns: ProgressColumn | str) -> Progress:
    """A `Progress` with the description, a bar, done/total, `columns`, and the elapsed time;
    disabled (draws nothing) unless `console` is a terminal."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *columns, TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal)


def working(console: Console, what: str):
    """A spinner saying `what` for a long step with no count to show (a dump, a verification);
    nothing unless `console` is a terminal."""
    return console.status(what) if console.is_terminal else nullcontext()
