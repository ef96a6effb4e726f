"""Run directories (runs/TASK/NAME) and atomic file writes.

Every file a run leaves behind is written to a temporary sibling and renamed into place, so a
killed process never leaves a half-written checkpoint, metrics file or report.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes files private, and a writer may put a new file of its own in place of the temporary
        # one (safetensors' save_file does, 0600): outputs read like any file, as the umask says
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def temp_dir(parent: str | Path, name: str, suffix: str = "") -> Path:
    """A new folder in ``parent`` to build the output ``name`` in before renaming it into place, with the
    umask's mode (mkdtemp makes it 0700, which the renamed dataset or index would keep)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=suffix))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def copy_file(source: str | Path, path: str | Path) -> Path:
    import shutil

    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def next_run_dir(task: str, name: str | None, base: str | Path = "runs", prefix: str = "exp") -> Path:
    """runs/TASK/NAME when a name is given, else the first free of exp, exp2, exp3, …"""
    parent = Path(base) / task
    if name:
        return parent / name
    taken = {p.name for p in parent.iterdir()} if parent.is_dir() else set()
    if prefix not in taken:
        return parent / prefix
    numbers = [int(m.group(1)) for n in taken if (m := re.fullmatch(rf"{re.escape(prefix)}(\d+)", n))]
    return parent / f"{prefix}{max([1, *numbers]) + 1}"


def latest_run_dir(task: str, base: str | Path = "runs") -> Path | None:
    """The most recently modified run of a task that has a checkpoint (for a bare --resume)."""
    parent = Path(base) / task
    if not parent.is_dir():
        return None
    runs = [p for p in parent.iterdir() if (p / "checkpoint.pt").is_file()]
    return max(runs, key=lambda p: (p / "checkpoint.pt").stat().st_mtime) if runs else None
