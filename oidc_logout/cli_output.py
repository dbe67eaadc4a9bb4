"""How ``oidc-logout`` speaks: tables and a progress bar for people (``rich``), JSON for
machines (``--json``), and errors as one line plus a hint on stderr.

Every value that comes from the database or an RP (client ids, URIs, error texts) is printed
as plain text, never as ``rich`` markup."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


class Output:
    """stdout for results, stderr for errors and progress."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # Not a terminal (a pipe, a file, a test): wide enough that rows are not wrapped.
        self.out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def line(self, text: str = "") -> None:
        self.out.print(Text(text))

    def note(self, text: str) -> None:
        """A line on stderr (warnings, what the command is waiting for)."""
        self.err.print(Text(f"oidc-logout: {text}"))

    def error(self, message: str, hint: str | None = None) -> None:
        self.err.print(Text(f"oidc-logout: error: {message}"))
        if hint:
            self.err.print(Text(f"hint: {hint}"))

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(*(Text("" if v is None else str(v)) for v in row))
        self.out.print(table)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[ProgressBar]:
        """A bar with counts and rate on stderr, when stderr is a terminal and not --json."""
        bar = ProgressBar(self.err, description, total, live=self.err.is_terminal and not self.json_mode)
        try:
            yield bar
        finally:
            bar.close()


class ProgressBar:
    def __init__(self, console: Console, description: str, total: int, *, live: bool) -> None:
        self.started = time.monotonic()
        self.total = total
        self._progress: Progress | None = None
        if live and total > 0:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[detail]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, detail="", rate="")
            self._progress.start()

    def update(self, done: int, detail: str, total: int | None = None) -> None:
        """``total`` may grow (a chunked termination writes its rows while we watch)."""
        if self._progress is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        extra: dict[str, Any] = {} if total is None else {"total": total}
        self._progress.update(
            self._task, completed=done, detail=detail, rate=f"{done / elapsed:,.0f}/s", **extra
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


__all__ = ["Output", "ProgressBar"]
