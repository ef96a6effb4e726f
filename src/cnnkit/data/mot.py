"""MOTChallenge sequences, detections and tracking results, and the frames of a sequence or a video.

    from cnnkit.data.mot import find_sequences, read_mot_file, detections_by_frame, iter_frames, write_mot_results

    for seq in find_sequences("data/MOT17", split="train"):        # sorted by name
        dets = read_mot_file(seq.det, kind="det", length=seq.length)  # [N, 10] float64, as in the file
        by_frame = detections_by_frame(dets)                          # {frame: [K, 6] x1 y1 x2 y2 score class}
        for frame_number, rgb in enumerate(iter_frames(seq), start=1):
            boxes = by_frame.get(frame_number)                        # None: no detection in this frame
            ...
        write_mot_results(f"out/{seq.name}.txt", rows)                # frame,id,x,y,w,h,score,-1,-1,-1

Layout of a sequence folder (MOTChallenge)::

    SEQ/seqinfo.ini      [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
    SEQ/img1/000001.jpg  the frames (imDir/, imExt), numbered from 1
    SEQ/gt/gt.txt        frame,id,x,y,w,h,conf,class,visibility   (conf 0/1: consider this box or not)
    SEQ/det/det.txt      frame,-1,x,y,w,h,score,-1,-1,-1          (optional: public detections)

Boxes are (x, y) of the top-left corner, width and height in pixels; frames count from 1. Without a
seqinfo.ini a folder of frames counts as a sequence too (its img1/, or the folder itself), at 30 fps and
the size of its first frame. A MOT root is a folder of sequences, possibly under split folders
(ROOT/train/SEQ, ROOT/test/SEQ). Every problem with the input is a CnnkitError naming the file and, in a
text file, the line.
"""

from __future__ import annotations

import configparser
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from cnnkit.data.decode import IMAGE_EXTENSIONS
from cnnkit.engine.rundir import atomic_path, write_text
from cnnkit.errors import CnnkitError

KINDS = ("gt", "det", "result")
COLUMNS = 10
# Values for missing trailing columns 6-9 (frame, id, x, y, w, h always come first). gt: considered (1),
# class 1 (MOTChallenge's pedestrian, the class evaluation scores), fully visible (1); det and result: score 1.
# The last column is MOT15's world z, -1 everywhere. A 10-column MOT15 gt keeps its own -1s (class and
# visibility unknown).
PAD = {"gt": (1.0, 1.0, 1.0, -1.0), "det": (1.0, -1.0, -1.0, -1.0), "result": (1.0, -1.0, -1.0, -1.0)}
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 30.0
RESULT_FORMAT = "%d,%d,%.2f,%.2f,%.2f,%.2f,%.4f,-1,-1,-1"


@dataclass
class SeqInfo:
    """The [Sequence] section of a seqinfo.ini."""

    name: str
    frame_rate: float
    seq_length: int
    width: int
    height: int
    im_dir: str = "img1"
    im_ext: str = ".jpg"


@dataclass
class MotSequence:
    """One sequence: its frames in name order (numbers compared as numbers), frame rate and frame size."""

    name: str
    root: Path
    frames: list[Path]
    fps: float
    width: int
    height: int
    declared_length: int | None = None  # seqLength of seqinfo.ini: the length of a sequence read without frames

    @property
    def length(self) -> int:
        return len(self.frames) if self.frames else (self.declared_length or 0)

    @property
    def gt(self) -> Path | None:
        """SEQ/gt/gt.txt when present."""
        path = self.root / "gt" / "gt.txt"
        return path if path.is_file() else None

    @property
    def det(self) -> Path | None:
        """SEQ/det/det.txt (public detections) when present."""
        path = self.root / "det" / "det.txt"
        return path if path.is_file() else None


# ------------------------------------------------------------------------------------------ seqinfo.ini

_SEQINFO_KEYS = {"name": "name", "imdir": "imDir", "framerate": "frameRate", "seqlength": "seqLength",
                 "imwidth": "imWidth", "imheight": "imHeight", "imext": "imExt"}
_REQUIRED = ("frameRate", "seqLength", "imWidth", "imHeight")  # name, imDir and imExt default to the folder, img1, .jpg


def _seqinfo_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "seqinfo.ini" if path.is_dir() else path


def read_seqinfo(path: str | Path) -> SeqInfo:
    """SEQ/seqinfo.ini (or its folder) -> SeqInfo. frameRate, seqLength, imWidth and imHeight are required; name
    defaults to the folder's name, imDir to img1, imExt to .jpg."""
    path = _seqinfo_path(path)
    text = _read_text(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise CnnkitError(f"{path} line {exc.lineno}: expected the [Sequence] header, got {_show(exc.line)}",
                          "a seqinfo.ini starts with [Sequence]") from None
    except configparser.ParsingError as exc:
        line, content = exc.errors[0]
        raise CnnkitError(f"{path} line {line}: expected key=value, got {_show(content)}") from None
    except (configparser.DuplicateOptionError, configparser.DuplicateSectionError) as exc:
        what = getattr(exc, "option", None) or exc.section
        raise CnnkitError(f"{path} line {exc.lineno}: {what} given twice") from None
    except configparser.Error as exc:
        raise CnnkitError(f"{path}: not a valid seqinfo.ini ({' '.join(str(exc).split())})") from None
    section = next((s for s in parser.sections() if s.lower() == "sequence"), None)
    if section is None:
        raise CnnkitError(f"{path}: no [Sequence] section", "MOTChallenge's seqinfo.ini has one [Sequence] section")
    values = {_SEQINFO_KEYS[k]: v.strip() for k, v in parser.items(section) if k in _SEQINFO_KEYS}
    missing = [key for key in _REQUIRED if not values.get(key)]
    if missing:
        raise CnnkitError(f"{path}: [Sequence] has no {', '.join(missing)}",
                          "MOTChallenge's keys: name, imDir, frameRate, seqLength, imWidth, imHeight, imExt")

    def number(key: str, integer: bool) -> float:
        raw = values[key]
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0 or (integer and value != int(value)):
            line = _key_line(text, key)
            where = f"{path} line {line}" if line else str(path)
            raise CnnkitError(f"{where}: {key}={raw!r} is not a positive {'whole ' if integer else ''}number")
        return int(value) if integer else value

    ext = values.get("imExt") or ".jpg"
    return SeqInfo(name=values.get("name") or path.parent.name, frame_rate=number("frameRate", False),
                   seq_length=number("seqLength", True), width=number("imWidth", True), height=number("imHeight", True),
                   im_dir=values.get("imDir") or "img1", im_ext=ext if ext.startswith(".") else f".{ext}")


def write_seqinfo(path: str | Path, info: SeqInfo) -> Path:
    """Write SEQ/seqinfo.ini (``path`` is the file or its folder) atomically, keys in MOTChallenge's order."""
    path = _seqinfo_path(path)
    fps = int(info.frame_rate) if float(info.frame_rate).is_integer() else info.frame_rate
    write_text(path, f"[Sequence]\nname={info.name}\nimDir={info.im_dir}\nframeRate={fps}\nseqLength={info.seq_length}\n"
                     f"imWidth={info.width}\nimHeight={info.height}\nimExt={info.im_ext}\n")
    return path


def _key_line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{key}\s*[=:]", line, flags=re.IGNORECASE):
            return number
    return None


# ------------------------------------------------------------------------------------------- sequences

def _natural(name: str) -> list:
    """Sort key: numbers inside a name compare as numbers (frame 2 before frame 10)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path, suffix: str | None = None) -> list[Path]:
    """The image files directly in ``folder`` (with ``suffix`` only, if given), in name order."""
    suffixes = (suffix.lower(),) if suffix else IMAGE_EXTENSIONS
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes]
    return sorted(files, key=lambda p: _natural(p.name))


def is_video(path: str | Path) -> bool:
    """A file whose suffix is a video container OpenCV usually reads."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()


def is_sequence(folder: Path) -> bool:
    """A folder with a seqinfo.ini, an img1/ folder, or image files of its own."""
    if not folder.is_dir():
        return False
    if (folder / "seqinfo.ini").is_file() or (folder / "img1").is_dir():
        return True
    return any(p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") for p in folder.iterdir())


def read_sequence(folder: str | Path, require_frames: bool = True) -> MotSequence:
    """One sequence folder -> MotSequence. With seqinfo.ini the frames are imDir/*imExt and must number seqLength;
    without it, the images in img1/ (or in the folder itself), at 30 fps and the size of the first frame.
    ``require_frames=False`` accepts a seqinfo.ini whose frames are absent (evaluating results against gt only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CnnkitError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder",
                          "pass a MOTChallenge sequence folder (img1/, gt/gt.txt, seqinfo.ini) or a folder of frames")
    if (folder / "seqinfo.ini").is_file():
        info = read_seqinfo(folder / "seqinfo.ini")
        images = folder / info.im_dir
        frames = _frame_files(images, info.im_ext) if images.is_dir() else []
        if not frames:
            if not require_frames:
                return MotSequence(info.name, folder, [], info.frame_rate, info.width, info.height, info.seq_length)
            raise CnnkitError(f"{images}: no {info.im_ext} frames" + ("" if images.is_dir() else " (no such folder)"),
                              f"{folder / 'seqinfo.ini'} names imDir={info.im_dir} and imExt={info.im_ext}")
        if len(frames) != info.seq_length:
            raise CnnkitError(f"{images}: {len(frames)} {info.im_ext} frames, but {folder / 'seqinfo.ini'} says "
                              f"seqLength={info.seq_length}", "fix seqLength or add the missing frames")
        return MotSequence(info.name, folder, frames, info.frame_rate, info.width, info.height, info.seq_length)
    images = folder / "img1" if (folder / "img1").is_dir() else folder
    frames = _frame_files(images)
    if not frames:
        raise CnnkitError(f"{images}: no frames (no image files)",
                          f"put the frames in {folder / 'img1'} as 000001.jpg, 000002.jpg, …")
    from cnnkit.data.decode import image_errors, open_image

    with image_errors(frames[0]), open_image(frames[0]) as image:
        width, height = image.size
    return MotSequence(folder.name, folder, frames, DEFAULT_FPS, width, height)


def find_sequences(path: str | Path, split: str | None = None, require_frames: bool = True) -> list[MotSequence]:
    """Sequences under ``path``: one sequence folder, a folder of sequence folders, or a MOT root of split folders
    (ROOT/train/SEQ, ROOT/test/SEQ; ``split`` picks one, else all of them). Sorted by name."""
    root = Path(path)
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder",
                          "pass a MOTChallenge sequence, a folder of sequences, or a root with train/ and test/")
    if split is not None:
        splits = [p.name for p in _subfolders(root)]
        if split not in splits:
            raise CnnkitError(f"{root}: no split folder '{split}'",
                              f"splits there: {', '.join(splits)}" if splits else "this folder has no subfolders")
        root = root / split
    if is_sequence(root):
        return [read_sequence(root, require_frames)]
    folders = [p for p in _subfolders(root) if is_sequence(p)]
    if not folders:  # a MOT root: sequences one level further down, in split folders
        folders = [p for sub in _subfolders(root) for p in _subfolders(sub) if is_sequence(p)]
    if not folders:
        raise CnnkitError(f"{root}: no MOTChallenge sequences found",
                          "a sequence is a folder with seqinfo.ini and img1/, or a folder of frames")
    sequences = [read_sequence(p, require_frames) for p in folders]
    return sorted(sequences, key=lambda s: (_natural(s.name), str(s.root)))


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural(p.name))


# ------------------------------------------------------------------------------------------ text files

def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise CnnkitError(f"{path}: a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise CnnkitError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _show(line: str, limit: int = 60) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "…")


def _row_lines(text: str) -> list[int]:
    """1-based line numbers of the non-blank lines: row k of a file was read from line _row_lines(text)[k]."""
    return [number for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _parse_lines(text: str, path: Path, pad: tuple[float, ...]) -> np.ndarray:
    """Line by line, for files numpy's reader refuses (rows of different lengths, a trailing comma, a bad field):
    raises on the first bad line, naming it."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split(",")
        if fields == [""]:
            continue
        if len(fields) > 1 and not fields[-1].strip():  # a trailing comma
            fields.pop()
        if len(fields) < 6:
            raise CnnkitError(f"{path} line {number}: expected at least 6 comma-separated numbers, got {_show(line)}",
                              "MOTChallenge rows: frame,id,x,y,w,h,…")
        values = []
        for k, field in enumerate(fields[:COLUMNS], start=1):
            try:
                values.append(float(field))
            except ValueError:
                raise CnnkitError(f"{path} line {number}: field {k} is not a number: {_show(field)}") from None
        rows.append(values + list(pad[len(values) - 6:]))
    return np.array(rows, dtype=np.float64).reshape(-1, COLUMNS)


def read_mot_file(path: str | Path, kind: str = "gt", length: int | None = None) -> np.ndarray:
    """A gt.txt, det.txt or results file -> [N, 10] float64 rows in file order:
    frame, id, x, y, w, h, conf/score, class, visibility, z (MOTChallenge's columns; x, y top-left, pixels).

    Shorter rows are padded as MOTChallenge files vary (``PAD``): gt with 6-9 columns gets conf 1, class 1,
    visibility 1; det and result with 6-9 columns get score 1 and -1s. Columns past the tenth are ignored. An empty
    file gives shape (0, 10). With ``length``, a frame past it is an error (check_frames_in_range).
    Raises CnnkitError naming the file and line for a short row, a field that is not a number, a frame below 1
    or not whole, an id that is not a whole number (gt, result) and a negative width or height."""
    if kind not in KINDS:
        raise CnnkitError(f"kind {kind!r}: unknown MOT file kind", f"use one of {', '.join(KINDS)}")
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        return np.zeros((0, COLUMNS), dtype=np.float64)
    try:  # numpy's C reader for the usual regular file; the line-by-line one says what is wrong otherwise
        table = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, comments=None, dtype=np.float64)
        if table.shape[1] < 6:
            raise ValueError("short rows")
        table = table[:, :COLUMNS]
        rows = np.hstack([table, np.tile(np.array(PAD[kind][table.shape[1] - 6:]), (len(table), 1))])
    except ValueError:
        rows = _parse_lines(text, path, PAD[kind])
    _validate(rows, kind, path, text)
    if length is not None:
        check_frames_in_range(rows, length, path)
    return rows


def _validate(rows: np.ndarray, kind: str, path: Path, text: str) -> None:
    checks = [
        (~np.isfinite(rows).all(axis=1), "a field is not a finite number"),
        ((rows[:, 0] < 1) | (rows[:, 0] != np.round(rows[:, 0])), "frame {frame:g}: frames are whole numbers from 1"),
        ((rows[:, 4] < 0) | (rows[:, 5] < 0), "negative width or height ({w:g} x {h:g})"),
    ]
    if kind != "det":  # detections carry -1 for the id
        checks.append((rows[:, 1] != np.round(rows[:, 1]), "id {id:g} is not a whole number"))
    for bad, message in checks:
        if bad.any():
            k = int(np.argmax(bad))
            frame, track_id, _, _, w, h = rows[k, :6]
            raise CnnkitError(f"{path} line {_row_lines(text)[k]}: " + message.format(frame=frame, id=track_id, w=w, h=h))


def check_frames_in_range(rows: np.ndarray, length: int, path: str | Path) -> None:
    """Raise CnnkitError for the first row (as read from ``path``, in file order) whose frame is past ``length``."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return
    bad = rows[:, 0] > length
    if not bad.any():
        return
    k = int(np.argmax(bad))
    try:
        lines = _row_lines(Path(path).read_text(encoding="utf-8-sig"))
        where = f"line {lines[k]}" if k < len(lines) else f"row {k + 1}"
    except (OSError, UnicodeDecodeError):
        where = f"row {k + 1}"
    raise CnnkitError(f"{path} {where}: frame {rows[k, 0]:g} is past the sequence's last frame ({length} frames)",
                      "is this file from another sequence? seqinfo.ini's seqLength and the frames in img1/ set the length")


def detections_by_frame(rows: np.ndarray) -> dict[int, np.ndarray]:
    """[N, >=6] MOT rows -> {frame: [K, 6] float64 x1, y1, x2, y2, score, class} (xyxy pixels; score is column 7,
    1 when absent; class column 8, -1 when absent). Frames without rows have no key."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return {}
    n = len(rows)
    score = rows[:, 6] if rows.shape[1] > 6 else np.ones(n)
    cls = rows[:, 7] if rows.shape[1] > 7 else np.full(n, -1.0)
    x, y, w, h = rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5]
    boxes = np.stack([x, y, x + w, y + h, score, cls], axis=1)
    frames = rows[:, 0].astype(np.int64)
    order = np.argsort(frames, kind="stable")
    frames, boxes = frames[order], boxes[order]
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    return {int(frames[s]): chunk for s, chunk in zip(starts, np.split(boxes, starts[1:]))}


def write_mot_results(path: str | Path, rows: np.ndarray) -> Path:
    """Write tracking results atomically: [N, >=6] rows frame, id, x, y, w, h[, score] (top-left xywh pixels) as
    ``frame,id,x,y,w,h,score,-1,-1,-1`` lines sorted by frame, then id (score 1 where the rows have none)."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(0, 7) if rows.size == 0 else rows
    assert rows.ndim == 2 and rows.shape[1] >= 6, f"rows must be [N, >=6], got {rows.shape}"
    table = np.column_stack([np.rint(rows[:, :2]), rows[:, 2:6], rows[:, 6] if rows.shape[1] > 6 else np.ones(len(rows))])
    table = table[np.lexsort((table[:, 1], table[:, 0]))]
    buffer = io.StringIO()
    np.savetxt(buffer, table, fmt=RESULT_FORMAT)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return Path(path)


# ---------------------------------------------------------------------------------------------- frames

class VideoFrames:
    """The frames of a sequence (a MotSequence, or its folder) or of a video file read with OpenCV, in order, as
    RGB uint8 [H, W, 3]. ``fps``, ``width``, ``height`` and ``name`` describe the source; ``length`` is the
    frame count (a video's as its header says, None when it does not say). Iterating again starts over."""

    def __init__(self, source: MotSequence | str | Path):
        self.sequence: MotSequence | None = None
        self.video: Path | None = None
        if isinstance(source, MotSequence):
            self.sequence = source
        else:
            path = Path(source)
            if path.is_dir():
                self.sequence = read_sequence(path)
            elif path.is_file():
                self.video = path
            else:
                raise CnnkitError(f"{path}: no such file or folder", "pass a video file or a sequence folder")
        if self.sequence is not None:
            seq = self.sequence
            self.name, self.fps, self.width, self.height, self.length = seq.name, seq.fps, seq.width, seq.height, seq.length
            if not seq.frames:
                raise CnnkitError(f"{seq.root}: the sequence has no frames")
            return
        import cv2

        capture = self._open()
        try:
            ok, first = capture.read()
            if not ok or first is None:
                raise CnnkitError(f"{self.video}: no frame could be read from this video",
                                  "check the file plays; mp4 (H.264/MPEG-4) and avi are read")
            fps = capture.get(cv2.CAP_PROP_FPS)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.name = self.video.stem
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.height, self.width = first.shape[:2]
        self.length = count if count > 0 else None

    def _open(self):
        import cv2

        capture = cv2.VideoCapture(str(self.video))
        if not capture.isOpened():
            capture.release()
            raise CnnkitError(f"{self.video}: OpenCV cannot open this video",
                              "check the file plays; mp4 (H.264/MPEG-4) and avi are read")
        return capture

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        if self.sequence is not None:
            for path in self.sequence.frames:
                yield self._read_frame(path)
            return
        capture = self._open()
        try:
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    def _read_frame(self, path: Path) -> np.ndarray:
        import cv2

        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:  # a format OpenCV does not decode (gif), or a broken file: Pillow says which
            from cnnkit.data.decode import read_picture

            rgb = np.asarray(read_picture(path))
        else:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if rgb.shape[:2] != (self.height, self.width):
            raise CnnkitError(f"{path}: frame is {rgb.shape[1]}x{rgb.shape[0]}, the sequence {self.width}x{self.height}",
                              "all frames of a sequence have the size seqinfo.ini (or its first frame) gives")
        return rgb


def iter_frames(source: MotSequence | str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 [H, W, 3] frames of a sequence or a video, in order (see VideoFrames for fps and size)."""
    return iter(VideoFrames(source))
