"""The libraries' Python warnings (pydicom, PyTorch, …) as cnnkit's own one-line warnings, on the command line.

Left alone, a warning prints the library's source path and line (``…/pydicom/valuerep.py:440:
UserWarning: …`` plus the code line), twice for a DataLoader, and never says which of a thousand
files it is about. The CLI entry runs every command inside ``routed_warnings()``: each warning becomes
``cnnkit: warning: FILE: first sentence (library)``, once per message; the file is the one being read
when the warning was raised (readers mark it with ``reading(path)``); known harmless ones are dropped.
``--debug`` keeps Python's own output, with the whole message.
"""

from __future__ import annotations

import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cnnkit.console import warn

# nothing a user can or needs to act on: the library reads the file correctly anyway
HARMLESS = (
    re.compile(r"bytes of excess padding to be removed"),  # pydicom: odd-length pixel data padded by the writer
    re.compile(r"Expected explicit VR, but found implicit VR"),  # pydicom: a meta header that misnames the encoding
)
# said in cnnkit's words, with the option that changes it
REWORDED = (
    (re.compile(r"This DataLoader will create (\d+) worker processes in total\. Our suggested max number of worker "
                r"in current system is (\d+)"),
     r"--workers \1 is more than the \2 CPUs this process may use: loading may be slower, or stall; lower --workers"),
)

_current = threading.local()  # per thread: segmentation checks read files in a thread pool


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Mark ``path`` as the file this thread reads, so that a library's warning can name it."""
    previous = getattr(_current, "path", None)
    _current.path = path
    try:
        yield
    finally:
        _current.path = previous


@contextmanager
def routed_warnings() -> Iterator[None]:
    """Inside: Python warnings go to cnnkit's warn() (see the module's docstring); restored after."""
    previous = warnings.showwarning
    warnings.showwarning = _show
    try:
        yield
    finally:
        warnings.showwarning = previous


def one_line(message: str, filename: str = "") -> str | None:
    """The line cnnkit prints for a library warning, or None for a harmless one."""
    text = " ".join(str(message).split())
    if any(pattern.search(text) for pattern in HARMLESS):
        return None
    for pattern, replacement in REWORDED:
        found = pattern.search(text)
        if found:
            return found.expand(replacement)
    text = re.split(r"(?<=[^\s.])\.\s+(?=[A-Z(<])", text)[0].rstrip(".")  # the first sentence: the rest is advice and links
    library = re.search(r"site-packages[/\\]([A-Za-z_]\w*)", filename)
    if library and library.group(1) != "cnnkit":
        text += f" ({library.group(1)})"
    where = getattr(_current, "path", None)
    return f"{where}: {text}" if where is not None else text


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    text = one_line(str(message), str(filename))
    if text is not None:
        warn(text, once_key=f"library warning: {text}")
