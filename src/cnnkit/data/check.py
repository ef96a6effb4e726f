"""Check an ImageFolder dataset before training: counts, imbalance, sizes, modes, broken files, leaks.

Every file is read once: its bytes are hashed (exact duplicates, e.g. a train image copied into
val) and decoded by PIL from the same buffer (size, mode, truncated or unreadable files).
Problems become findings ("error" or "warning") that name the file and the fix; nothing is raised
except for a missing root, so one run lists everything that is wrong.
"""

from __future__ import annotations

import hashlib
import io
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import ImageFile
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from cnnkit.data.images import displayed_size, is_dicom_file, is_image_file, open_image
from cnnkit.data.intensity import FEW_LEVELS, eight_bit_levels, few_levels_message
from cnnkit.data.imagefolder import find_split_dirs, list_class_images
from cnnkit.data.sources import walk_files
from cnnkit.engine.rundir import write_json
from cnnkit.errors import CnnkitError

IMBALANCE_WARN = 10.0
MAX_PRINTED_FINDINGS = 50


@dataclass
class Finding:
    level: str  # "error" or "warning"
    path: str  # the file or folder concerned
    message: str  # one line: what is wrong and the fix


@dataclass
class CheckReport:
    root: str
    layout: str = "imagefolder"
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    imbalance_ratio: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, dict] = field(default_factory=dict)
    modes: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: list[dict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    detection: dict = field(default_factory=dict)  # detection layouts: boxes by size, objects per image

    def has_errors(self) -> bool:
        return any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict:
        data = asdict(self)
        # JSON has no infinity; None reads as "undefined: a class has no images".
        data["imbalance_ratio"] = {k: (None if math.isinf(v) else v) for k, v in self.imbalance_ratio.items()}
        data["errors"] = sum(f.level == "error" for f in self.findings)
        data["warnings"] = sum(f.level == "warning" for f in self.findings)
        return data

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def _add(self, level: str, path: Path | str, message: str) -> None:
        self.findings.append(Finding(level, str(path), message))


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} files/s" if speed else "? files/s", style="progress.data.speed")


def _read(path: Path) -> tuple[str | None, tuple[int, int] | None, str | None, str | None, tuple[int, int, int] | None]:
    """(content hash, size, mode, error, 8-bit view of a 16-bit image: (levels, low, high)) for one file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, None, None, f"cannot read file: {exc.strerror or exc}", None
    if not data:
        return None, None, None, "empty file (0 bytes)", None
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        if is_dicom_file(path):  # read as the loader reads it (pydicom); the mode column says DICOM
            from cnnkit.data.medical import read_intensity

            height, width = read_intensity(path).pixels.shape[:2]
            return digest, (width, height), "DICOM", None, None
        with open_image(io.BytesIO(data), path) as image:  # over the pixel limit: the loader would skip it
            size = displayed_size(image)  # as the loader turns it (EXIF orientation)
            image.load()
            return digest, size, image.mode, None, eight_bit_levels(image)
    except CnnkitError as exc:
        return digest, None, None, str(exc).removeprefix(f"{path}: "), None
    except Exception as exc:  # noqa: BLE001 - a checker reports every decoder failure, whatever its type
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated image ({reason})"
        return digest, None, None, f"cannot decode image: {reason}", None


def _stats(values: list[int]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]checking[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays clean for --json
        transient=True,
    )


def check_imagefolder(root: str | Path, progress: bool = True) -> CheckReport:
    """Scan ROOT/{train,val,test}/CLASS/* (or ROOT/CLASS/* as one train split) and report problems."""
    root = Path(root)
    if not root.exists():
        raise CnnkitError(f"{root}: no such dataset folder", "pass the folder that holds train/ and val/")
    if not root.is_dir():
        raise CnnkitError(f"{root}: not a folder", "expected ROOT/train/CLASS/image.png")
    report = CheckReport(root=str(root))
    split_dirs = find_split_dirs(root)
    if not split_dirs:
        split_dirs = {"train": root}
    elif "train" not in split_dirs:
        report._add("error", root, f"has {', '.join(split_dirs)}/ but no train/ folder; add ROOT/train/CLASS/…")

    # Layout pass: which files belong where, before any file is opened.
    per_split: dict[str, dict[str, list[Path]]] = {}
    for split, split_dir in split_dirs.items():
        per_split[split] = list_class_images(split_dir)
        if not per_split[split]:
            report._add("error", split_dir, "no class folders; expected SPLIT/CLASS/image.png")
        for name, files in per_split[split].items():
            class_dir = split_dir / name
            if not files:
                report._add("error", class_dir, "empty class folder (no images); add images or remove the folder")
            for other in walk_files(class_dir):
                if not other.name.startswith(".") and not is_image_file(other):
                    report._add("warning", other, "not an image (the loader skips it); move it out of the folder")

    train_classes = list(per_split.get("train", {}))
    extra = sorted({c for s, classes in per_split.items() if s != "train" for c in classes} - set(train_classes))
    report.classes = train_classes + extra
    if "train" in per_split:
        for split in ("val", "test"):
            for name in per_split.get(split, {}):
                if name not in train_classes:
                    report._add("error", split_dirs[split] / name,
                                f"class '{name}' is in {split} but not in train; add train images or remove the folder")
        if "val" in per_split:
            for name in train_classes:
                if name not in per_split["val"]:
                    report._add("warning", split_dirs["train"] / name,
                                f"class '{name}' has no val folder; its accuracy will not be measured")

    for split, classes in per_split.items():
        report.counts[split] = {name: len(files) for name, files in classes.items()}
        counts = list(report.counts[split].values())
        if counts:
            ratio = math.inf if min(counts) == 0 else max(counts) / min(counts)
            report.imbalance_ratio[split] = ratio
            if IMBALANCE_WARN < ratio < math.inf:
                report._add("warning", split_dirs[split],
                            f"class imbalance {ratio:.1f}:1 in {split}; classify train's default --balance auto adjusts the "
                            "logits for it (logit_adjust); --balance weights, oversample or undersample (and --loss focal) "
                            "are the alternatives")

    # File pass: each file read once, hashed and decoded.
    jobs = [(split, path) for split, classes in per_split.items() for files in classes.values() for path in files]
    by_hash: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    widths: dict[str, list[int]] = defaultdict(list)
    heights: dict[str, list[int]] = defaultdict(list)
    modes: dict[str, dict[str, int]] = {split: {} for split in per_split}
    few_levels: dict[str, list[tuple[Path, int, int, int]]] = defaultdict(list)  # 16-bit images with a narrow range
    saved_flag = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must be an error, not a grey half-image
    bar = _progress() if progress and jobs else None
    try:
        task = bar.add_task("check", total=len(jobs)) if bar else None
        if bar:
            bar.start()
        for split, path in jobs:
            digest, size, mode, error, view = _read(path)
            if view is not None and view[0] < FEW_LEVELS:
                few_levels[split].append((path, *view))
            if digest:
                by_hash[digest].append((split, path))
            if error:
                report._add("error", path, f"{error}; re-export or remove the file")
            else:
                widths[split].append(size[0])
                heights[split].append(size[1])
                modes[split][mode] = modes[split].get(mode, 0) + 1
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
        ImageFile.LOAD_TRUNCATED_IMAGES = saved_flag

    for split in per_split:
        if few_levels[split]:
            report._add("warning", split_dirs[split], few_levels_message(split, few_levels[split], len(widths[split])))
        report.modes[split] = dict(sorted(modes[split].items(), key=lambda kv: -kv[1]))
        report.sizes[split] = (
            {"width": _stats(widths[split]), "height": _stats(heights[split])} if widths[split] else {}
        )

    for digest, entries in by_hash.items():
        if len(entries) < 2:
            continue
        files = [str(p) for _, p in entries]
        splits = sorted({s for s, _ in entries}, key=lambda s: ("train", "val", "test").index(s))
        if len(splits) > 1:
            report.duplicates.append({"hash": digest, "splits": splits, "files": files})
            first = _short(str(entries[0][1]), report.root)
            for split, path in entries:
                if split != splits[0]:
                    report._add("error", path, f"same bytes as {first} in {splits[0]} (data leak); "
                                               f"remove one copy so {split} scores are honest")
        else:
            first = _short(str(entries[0][1]), report.root)
            for _, path in entries[1:]:
                report._add("warning", path, f"exact duplicate of {first} in {splits[0]}; remove one copy")
    return report


def _short(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root)) or "."
    except ValueError:
        return path


def print_report(report: CheckReport, console: Console | None = None) -> None:
    """Counts table, imbalance, sizes and modes, findings (errors red, warnings yellow), verdict."""
    console = console or Console()
    splits = list(report.counts)
    table = Table(title=Text(f"{report.root} ({report.layout})"), title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right", style="bold")
    for name in report.classes:
        cells = [report.counts[s].get(name) for s in splits]
        row = ["-" if c is None else str(c) for c in cells]
        table.add_row(Text(name), *row, str(sum(c or 0 for c in cells)))
    totals = [sum(report.counts[s].values()) for s in splits]
    table.add_section()
    table.add_row("total", *map(str, totals), str(sum(totals)), style="bold")
    console.print(table)

    ratios = ", ".join(f"{s} {'inf' if math.isinf(r) else f'{r:.1f}'}:1" for s, r in report.imbalance_ratio.items())
    console.print(f"imbalance (largest/smallest class): {ratios or 'n/a'}")

    stats = Table(title="image sizes and modes", title_justify="left")
    for column in ("split", "width min/median/max", "height min/median/max", "modes"):
        stats.add_column(column)
    for split in splits:
        size = report.sizes.get(split) or {}
        fmt = lambda d: f"{d['min']} / {d['median']:g} / {d['max']}" if d else "-"  # noqa: E731
        mode_text = ", ".join(f"{m} {n}" for m, n in report.modes.get(split, {}).items()) or "-"
        stats.add_row(split, fmt(size.get("width")), fmt(size.get("height")), mode_text)
    console.print(stats)

    if report.detection:
        boxes = Table(title="boxes by COCO area (small < 32², medium < 96² px)", title_justify="left")
        for column in ("class", "small", "medium", "large"):
            boxes.add_column(column, justify="left" if column == "class" else "right")
        for name, sizes in report.detection["boxes_by_size"].items():
            boxes.add_row(Text(name), *(str(sizes.get(size, 0)) for size in ("small", "medium", "large")))
        console.print(boxes)
        per_image = ", ".join(f"{split} {d['min']} / {d['median']:g} / {d['max']}"
                              for split, d in report.detection["objects_per_image"].items() if d)
        console.print(f"objects per image (min / median / max): {per_image or 'n/a'}")
        ignored = ", ".join(f"{split} " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
                            for split, counts in report.detection.get("ignored", {}).items())
        if ignored:
            console.print(f"ignored objects (not in the counts, not trained on, neither hit nor miss in scoring): {ignored}")

    print_findings(report, f"{sum(totals)} {'boxes' if report.detection else 'images'}", console)


def print_findings(report: CheckReport, counted: str, console: Console) -> None:
    """The errors and warnings (the first MAX_PRINTED_FINDINGS), then the verdict over ``counted``."""
    errors = [f for f in report.findings if f.level == "error"]
    warnings = [f for f in report.findings if f.level == "warning"]
    for finding in (errors + warnings)[:MAX_PRINTED_FINDINGS]:
        style = "red" if finding.level == "error" else "yellow"
        line = Text(f"{finding.level}: ", style=f"bold {style}")
        line.append(f"{_short(finding.path, report.root)}: {finding.message}", style=style)
        console.print(line)
    hidden = len(report.findings) - MAX_PRINTED_FINDINGS
    if hidden > 0:
        console.print(f"… and {hidden} more findings (use the JSON report for all of them)")
    if errors:
        console.print(f"[bold red]FAIL[/]: {len(errors)} error(s), {len(warnings)} warning(s) in {counted}")
    elif warnings:
        console.print(f"[bold yellow]OK with warnings[/]: {len(warnings)} warning(s) in {counted}")
    else:
        console.print(f"[bold green]OK[/]: {counted}, {len(report.classes)} classes, no problems found")
