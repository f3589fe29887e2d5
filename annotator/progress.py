"""The one progress display of long work (``run``, ``predict``, ``train-student``) and the one quiet switch, on stderr.

* stderr is a terminal: a live bar (counts, the work's own text, elapsed and remaining time);
* stderr is not a terminal (CI, a log file): one plain line every ``interval`` seconds, so a log shows progress
  without control characters;
* ``annotator -q`` or ``enabled=False``: nothing.

``annotator -q`` is read from the ``annotator`` logger (:func:`annotator.cli.configure_logging` sets it to ERROR), so
"quiet" has one meaning for log lines, notes and progress alike.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

REFRESH_S = 0.2
"""A live bar is redrawn at most this often (and at the last item)."""


def quiet() -> bool:
    """``annotator -q``: only errors go to stderr (the ``annotator`` logger is set above WARNING)."""
    return not logging.getLogger("annotator").isEnabledFor(logging.WARNING)


class ProgressDisplay:
    """``with ProgressDisplay("predict", "rows") as p: ... p.update(done, total)``; see the module docstring."""

    def __init__(
        self, description: str, unit: str, *, enabled: bool = True, interval: float = 5.0, info: str = ""
    ) -> None:
        self.console = Console(stderr=True, quiet=quiet())
        shown = enabled and not self.console.quiet
        self.plain = shown and not self.console.is_terminal
        self.description, self.unit, self.interval = description, unit, interval
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not shown or self.plain,
            refresh_per_second=4,
        )
        self.task = self.bar.add_task(description, total=None, info=info)
        self._drawn = 0.0
        self._line = time.monotonic()

    def __enter__(self) -> ProgressDisplay:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Show the live bar (on a terminal); ``with ProgressDisplay(...)`` starts and stops it."""
        self.bar.start()

    def stop(self) -> None:
        """Take the live bar off the screen (before a final message); idempotent."""
        self.bar.stop()

    def update(
        self, completed: int, total: int | None = None, info: str = "", *, unit: str | None = None, force: bool = False
    ) -> None:
        """``completed`` of ``total`` (None: unknown) done; ``info``: the work's own text (rich markup).
        ``force``: draw now (and print the plain line) whatever the time since the last one."""
        now = time.monotonic()
        if not force and now - self._drawn < REFRESH_S and completed != total:
            return
        self._drawn = now
        self.bar.update(self.task, completed=completed, total=total, info=info)
        if self.plain and (force or now - self._line >= self.interval):
            self._line = now
            of = f"/{total:,}" if total else ""
            self.console.print(f"{self.description}: {completed:,}{of} {unit or self.unit}  {info}".rstrip())
