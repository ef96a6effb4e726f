"""Finding input files (folders walked, glob patterns) and naming one output per input.

    walk_files(Path("scans"))                 # every file below, sorted; link loops cut
    glob_files("scans/**/*.dcm")              # glob semantics without following loops
    output_names(["a/IM1.dcm", "b/IM1.dcm"], ".png")   # ["a/IM1.png", "b/IM1.png"]

Folders are walked here and nowhere else. Python's recursive ``glob.glob`` follows directory links,
so one link to a parent folder (common in mounted datasets and PACS exports) made a ``**`` pattern
run forever; ``Path.rglob`` does not follow links at all, so data reached through a linked
sub-folder was silently missing. ``walk_files`` follows a directory link only when it leads outside
the folder being walked (a link back inside lists nothing new, or loops), and enters every real
folder once.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, NamedTuple, Sequence

from cnnkit.errors import CnnkitError


class SourceFile(NamedTuple):
    path: Path
    named: bool  # named directly on the command line (a bad one is an error, not a skipped file)
    relative: PurePosixPath  # below the folder or glob root it came from; a named file: its name


def expand_source_files(sources: Sequence[str | Path], accept: Callable[[Path], bool], what: str = "images",
                        expected: str = "expected .jpg/.png/… files") -> list[SourceFile]:
    """Files, folders (walked) and glob patterns, in the order given; folders and globs contribute
    the files ``accept`` takes. CnnkitError for a missing path, a pattern matching nothing, or no file at all."""
    files: list[SourceFile] = []
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            files += [SourceFile(p, False, PurePosixPath(p.relative_to(path).as_posix()))
                      for p in walk_files(path) if accept(p)]
        elif path.is_file():
            files.append(SourceFile(path, True, PurePosixPath(path.name)))
        elif has_magic(text):
            matched = glob_files(text)
            if not matched:
                raise CnnkitError(f"{text}: the pattern matches no files")
            root = glob_root(text)
            files += [SourceFile(p, False, PurePosixPath(_relative(p, root))) for p in matched if accept(p)]
        else:
            raise CnnkitError(f"{text}: no such file or folder")
    if not files:
        raise CnnkitError(f"no {what} found in {', '.join(map(str, sources))}", expected)
    return files


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a match spelled differently from the pattern's prefix: its name alone
        return path.name


def walk_files(root: str | Path) -> list[Path]:
    """Every file below ``root`` (paths start with ``root`` as given), sorted as ``sorted(rglob)`` sorts.

    Hidden files are included (callers filter by suffix); unreadable folders are skipped, as rglob does."""
    root = Path(root)
    top = os.path.realpath(root)
    seen: set[str] = set()
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            path = folder / entry.name
            try:
                if entry.is_dir():  # follows a link
                    if entry.is_symlink() and _inside(os.path.realpath(path), top):
                        continue  # reached anyway by the walk, or a loop
                    stack.append(path)
                elif entry.is_file():
                    found.append(path)
            except OSError:  # a broken or unreadable entry
                continue
    return sorted(found)


def _inside(real: str, top: str) -> bool:
    try:
        return os.path.commonpath([real, top]) == top
    except ValueError:  # different drives
        return False


def has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def glob_files(pattern: str) -> list[Path]:
    """The files a glob pattern matches, as ``glob.glob(pattern, recursive=True)`` would list them
    (``**`` = any number of folders, hidden names only when the pattern names them), sorted, but
    with ``**`` expanded by ``walk_files``: no endless descent through a link loop, no file twice."""
    parts = _split(pattern)
    if "**" not in parts:
        return sorted(p for p in map(Path, glob.glob(pattern)) if p.is_file())
    cut = parts.index("**")
    head, tail = parts[:cut], parts[cut:]
    head_text = _join(head)
    bases = [Path(p) for p in sorted(glob.glob(head_text))] if has_magic(head_text) else [Path(head_text)]
    found: list[Path] = []
    for base in bases:
        if base.is_dir():
            found += [path for path in walk_files(base) if _match(tail, path.relative_to(base).parts)]
    return sorted(dict.fromkeys(found))


def glob_root(pattern: str) -> Path:
    """The folder a glob pattern's matches lie below: its leading components without wildcards."""
    parts = _split(pattern)
    literal = []
    for part in parts[:-1]:  # the last component names the files
        if has_magic(part):
            break
        literal.append(part)
    return Path(_join(literal))


def _split(pattern: str) -> list[str]:
    return pattern.replace(os.sep, "/").split("/")


def _join(parts: Sequence[str]) -> str:
    """Components back to a path: [] -> ".", [""] (the root of "/x") -> "/"."""
    return "/".join(parts) or ("/" if parts else ".")


def _match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Do path components match pattern components, with glob's rules: ``**`` is zero or more
    components, a wildcard does not match a leading dot, neither does ``**``."""
    if not pattern:
        return not parts
    first, rest = pattern[0], pattern[1:]
    if first == "**":
        for k in range(len(parts) + 1):
            if k and parts[k - 1].startswith("."):
                return False
            if _match(rest, parts[k:]):
                return True
        return False
    if not parts or (parts[0].startswith(".") and not first.startswith(".")):
        return False
    return fnmatch.fnmatch(parts[0], first) and _match(rest, parts[1:])


# ==================================================================== one output per input
def output_names(relatives: Sequence[str | PurePosixPath], endings: str | Iterable[str]) -> list[str]:
    """Unique relative output names, one per input, for inputs given by their path relative to the
    source they came from (a folder or a glob's root; a file named directly: its name).

    The rule (docs/architecture.md): the input's relative path with its suffix replaced by the
    ending (``a/IM0001.dcm`` -> ``a/IM0001.png``; an ending may carry a tag, ``_0003.png`` for a
    volume's slice); inputs whose names would still collide, compared without case as macOS and
    Windows compare them, keep their suffix when that tells them apart (``x.jpg`` -> ``x.jpg.png``,
    ``x.png`` -> ``x.png.png``); any left colliding (the same relative path from two sources, e.g. two
    files named directly) get ``-2``, ``-3``, … in input order, the first keeping its name
    (``x.png``, ``x-2.png``). Deterministic for the same inputs in the same order."""
    from cnnkit.data.decode import stem_of  # knows .nii.gz and DICOM files without a suffix

    # never outside the output folder, whatever a caller passes
    relatives = [PurePosixPath(*[p for p in PurePosixPath(str(r).replace(os.sep, "/")).parts if p not in ("/", "..")] or ["_"])
                 for r in relatives]
    endings = [endings] * len(relatives) if isinstance(endings, str) else list(endings)
    short = [str(r.parent / stem_of(Path(r.name))) + e for r, e in zip(relatives, endings)]
    full = [str(r) + e for r, e in zip(relatives, endings)]
    spellings: dict[str, set[str]] = {}  # short name -> the different full names wanting it
    for s, f in zip(short, full):
        spellings.setdefault(s.casefold(), set()).add(f.casefold())
    names = [s if len(spellings[s.casefold()]) == 1 else f for s, f in zip(short, full)]
    taken: set[str] = set()
    unique = []
    for name, ending in zip(names, endings):
        candidate, n = name, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{name[:len(name) - len(ending)]}-{n}{ending}" if ending else f"{name}-{n}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique
