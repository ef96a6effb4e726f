"""Where cnnkit talks to people: a rich console on stderr (stdout stays for results and JSON)."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True, highlight=False)
T = TypeVar("T")
_warned: set[str] = set()


def warn(message: str, once_key: str | None = None) -> None:
    """Print ``cnnkit: warning: …`` on stderr; with once_key, only the first time in this process."""
    if once_key is not None:
        if once_key in _warned:
            return
        _warned.add(once_key)
    # plain print: this may run inside a DataLoader worker where rich's live display is not ours
    print(f"cnnkit: warning: {message}", file=sys.stderr, flush=True)


def warn_skipped(skipped: int, total: int, what: str = "files") -> None:
    """After a verb went through many inputs: how many of them it skipped (each named in a warning before)."""
    if skipped:
        warn(f"{skipped} of {total} {what} skipped (unreadable, empty, or over the pixel limit: see above)")


class Skips:
    """The inputs a verb going through many files could not read. A file named on the command line stops the
    verb with its one-line error; one found in a folder or glob is skipped with a warning naming it, and
    ``report`` says how many at the end.

        skips = Skips()
        for path, named in files:
            image = skips.read(path, named, lambda: load_image(path))  # None: skipped
        skips.report(len(files))
    """

    def __init__(self) -> None:
        self.files: set[object] = set()

    def read(self, path: object, named: bool, read: Callable[[], T]) -> T | None:
        from cnnkit.errors import CnnkitError

        try:
            return read()
        except CnnkitError as exc:
            if named:
                raise
            warn(f"{exc.message} (skipped)")
            self.files.add(path)
            return None

    def report(self, total: int, what: str = "files") -> None:
        warn_skipped(len(self.files), total, what)


def progress_bar(transient: bool = False, auto_refresh: bool = True) -> Progress:
    """The one progress-bar style: description, bar, done/total, throughput, elapsed and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        auto_refresh=auto_refresh,
        # in a log file or CI a live bar only leaves blank lines; the summary lines say enough
        disable=not console.is_terminal,
    )
