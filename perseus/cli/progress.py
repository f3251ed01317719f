"""A rich progress bar for long solver runs, shown only on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def fraction_progress(description: str) -> Iterator[Callable[[float], None]]:
    """Yield a callback taking the fraction done (0..1); draws a bar on a TTY, stays silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda _fraction: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), transient=True
    ) as bar:
        task = bar.add_task(description, total=1.0)
        yield lambda fraction: bar.update(task, completed=fraction)
