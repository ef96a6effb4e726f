"""`cnnkit track SOURCE…` (the same as `cnnkit track run SOURCE…`) and `cnnkit track val`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from cnnkit.cli.options import Device, SequenceSplit, ValOut, config_command
from cnnkit.track.state import TrackerOptions


class _SourcesFirst(TyperGroup):
    """`cnnkit track video.mp4 …` runs `track run video.mp4 …` (and `track sot clip.mp4` `track sot run
    clip.mp4`): anything that is not a subcommand (or the group's --help) starts the list of sources."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_SourcesFirst, no_args_is_help=True,
                  help="Multi-object tracking: `cnnkit track SOURCE… --weights DETECTOR --tracker bytetrack` (video files, frame "
                       "folders, MOTChallenge sequences) and `cnnkit track val` (HOTA, MOTA, IDF1 by TrackEval); single-object "
                       "tracking: `cnnkit track sot train|val|SOURCE…` (a Siamese tracker, SiamFC).")
sot_app = typer.Typer(cls=_SourcesFirst, no_args_is_help=True,
                      help="Single-object tracking with a Siamese network (SiamFC): `cnnkit track sot SOURCE… --weights W "
                           "[--init x,y,w,h]`, `cnnkit track sot train`, `cnnkit track sot val` (OTB success AUC, precision "
                           "at 20 px, frames per second).")
app.add_typer(sot_app, name="sot")

DEFAULTS = TrackerOptions()  # one source for the option defaults: the library's

Tracker = Annotated[str, typer.Option("--tracker", help="sort (Kalman + IoU + Hungarian), deepsort (+ appearance from "
                                      "--reid, gated by the Kalman distance) or bytetrack (low-score boxes in a second round)")]
Weights = Annotated[Optional[Path], typer.Option("--weights", help="detector weights (`detect train`) that find the boxes; not "
                                                 "needed with --detections or --public")]
Reid = Annotated[Optional[Path], typer.Option("--reid", help="appearance model for deepsort: `embed train` weights, or a "
                                              "classifier's (its pooled features)")]
Public = Annotated[bool, typer.Option("--public", help="track each sequence's own det/det.txt (MOTChallenge's public "
                                      "detections) instead of running a detector")]
Cmc = Annotated[str, typer.Option("--cmc", help="camera-motion compensation for moving cameras: none, sparse (optical "
                                  "flow of corners) or ecc (OpenCV's ECC); a global affine applied to every track, as BoT-SORT")]
Conf = Annotated[Optional[float], typer.Option("--conf", min=0.0, max=1.0, help="detector score threshold (default: "
                                               "--low-threshold; each tracker drops the boxes it does not use)")]
Classes = Annotated[Optional[str], typer.Option("--classes", help="track only these classes: names or ids of the "
                                                "detector's classes, or the class numbers of a detections file")]
MaxAge = Annotated[int, typer.Option("--max-age", min=1, help="frames a lost track is kept (and can be found again) "
                                     "before it is deleted")]
MinHits = Annotated[int, typer.Option("--min-hits", min=1, help="matched frames before a new track is reported")]
Iou = Annotated[float, typer.Option("--iou", min=0.0, max=1.0, help="minimum IoU between a track's predicted box and a "
                                    "detection to match them")]
DetThreshold = Annotated[float, typer.Option("--det-threshold", min=0.0, max=1.0, help="sort/deepsort: detections "
                                             "below are ignored; bytetrack: the split between high- and low-score boxes")]
LowThreshold = Annotated[float, typer.Option("--low-threshold", min=0.0, max=1.0, help="bytetrack: detections below "
                                             "are dropped")]
NewTrack = Annotated[float, typer.Option("--new-track-threshold", min=0.0, max=1.0, help="bytetrack: minimum score of an "
                                         "unmatched detection to start a track")]
Cosine = Annotated[float, typer.Option("--max-cosine-distance", min=0.0, max=2.0, help="deepsort: appearance gate "
                                       "(cosine distance to a track's gallery)")]
Gallery = Annotated[int, typer.Option("--gallery-size", min=1, help="deepsort: appearance features kept per track")]


def _options(max_age, min_hits, iou, det_threshold, low_threshold, new_track_threshold, max_cosine_distance, gallery_size):
    return TrackerOptions(max_age=max_age, min_hits=min_hits, iou_threshold=iou, det_threshold=det_threshold,
                          low_threshold=low_threshold, new_track_threshold=new_track_threshold,
                          max_cosine_distance=max_cosine_distance, gallery_size=gallery_size)


def _split(split: str, roots: list[Path]) -> str | None:
    """--split -> the split folder to read (None: every sequence)."""
    from cnnkit.errors import CnnkitError

    if split == "all":
        return None
    if split == "auto":
        return "test" if any((Path(root) / "test").is_dir() for root in roots) else None
    if split not in ("train", "test"):
        raise CnnkitError(f"--split {split!r}", "valid: train, test, all, auto")
    return split


@app.command("run")
def track_run(
    sources: list[Path] = typer.Argument(..., metavar="SOURCE...", help="video files, folders of frames (name order), "
                                         "MOTChallenge sequences or folders of them"),
    weights: Weights = None,
    tracker: Tracker = "bytetrack",
    out: Path = typer.Option(Path("runs/track/exp"), "--out", help="writes OUT/NAME.txt (MOTChallenge rows) and OUT/NAME.mp4"),
    detections: Optional[Path] = typer.Option(None, "--detections", help="a MOTChallenge det.txt for the one SOURCE "
                                              "(frame,-1,x,y,w,h,score,…) tracked instead of running a detector"),
    public: Public = False,
    reid: Reid = None,
    classes: Classes = None,
    conf: Conf = None,
    cmc: Cmc = "none",
    max_age: MaxAge = DEFAULTS.max_age,
    min_hits: MinHits = DEFAULTS.min_hits,
    iou: Iou = DEFAULTS.iou_threshold,
    det_threshold: DetThreshold = DEFAULTS.det_threshold,
    low_threshold: LowThreshold = DEFAULTS.low_threshold,
    new_track_threshold: NewTrack = DEFAULTS.new_track_threshold,
    max_cosine_distance: Cosine = DEFAULTS.max_cosine_distance,
    gallery_size: Gallery = DEFAULTS.gallery_size,
    video: bool = typer.Option(True, "--video/--no-video", help="write OUT/NAME.mp4 with boxes, ids and trails"),
    split: SequenceSplit = "all",
    batch: int = typer.Option(4, "--batch", min=1, help="frames per detector batch"),
    device: Device = "auto",
) -> None:
    """Track objects through videos, frame folders or MOTChallenge sequences: OUT/NAME.txt and OUT/NAME.mp4
    (--split picks one split of a MOTChallenge root)."""
    from cnnkit.tasks.track.api import Tracker as TrackerClass

    options = _options(max_age, min_hits, iou, det_threshold, low_threshold, new_track_threshold, max_cosine_distance, gallery_size)
    TrackerClass(tracker, detector=weights, reid=reid, options=options, conf=conf, classes=classes, cmc=cmc, device=device,
                 batch=batch).track(sources, out, detections=detections, public=public, video=video,
                                                         split=_split(split, sources))


@app.command("val")
def track_val(
    data: Path = typer.Option(..., "--data", help="MOTChallenge sequences with gt/gt.txt (a root with train/ and test/, "
                              "a folder of sequences, or one)"),
    weights: Weights = None,
    public: Public = False,
    tracker: str = typer.Option("sort,bytetrack", "--tracker", help="comma-separated trackers to compare: sort, deepsort "
                                "(needs --reid), bytetrack"),
    reid: Reid = None,
    out: Path = typer.Option(Path("runs/track/val"), "--out", help="metrics.json, report.html, plots/ and results/TRACKER/SEQ.txt"),
    split: SequenceSplit = "auto",
    classes: Classes = None,
    conf: Conf = None,
    cmc: Cmc = "none",
    max_age: MaxAge = DEFAULTS.max_age,
    min_hits: MinHits = DEFAULTS.min_hits,
    iou: Iou = DEFAULTS.iou_threshold,
    det_threshold: DetThreshold = DEFAULTS.det_threshold,
    low_threshold: LowThreshold = DEFAULTS.low_threshold,
    new_track_threshold: NewTrack = DEFAULTS.new_track_threshold,
    max_cosine_distance: Cosine = DEFAULTS.max_cosine_distance,
    gallery_size: Gallery = DEFAULTS.gallery_size,
    video: bool = typer.Option(False, "--video/--no-video", help="also write each tracker's annotated videos"),
    device: Device = "auto",
) -> None:
    """Run each tracker on every sequence and score them with TrackEval: HOTA, MOTA, IDF1, ID switches (metrics.json,
    report.html with a per-tracker chart and frames with ids drawn)."""
    from cnnkit.errors import CnnkitError
    from cnnkit.tasks.track.api import Tracker as TrackerClass

    names = [t.strip() for t in tracker.split(",") if t.strip()]
    if not names:
        raise CnnkitError("--tracker is empty", "e.g. --tracker sort,bytetrack")
    if weights is None and not public:
        raise CnnkitError("no boxes to track", "give --weights DETECTOR or --public (each sequence's det/det.txt)")
    options = _options(max_age, min_hits, iou, det_threshold, low_threshold, new_track_threshold, max_cosine_distance, gallery_size)
    first = TrackerClass(names[0] if names[0] != "deepsort" or reid else "sort", detector=weights, reid=reid, options=options,
                         conf=conf, classes=classes, cmc=cmc, device=device)
    first.val(data, names, public=public, out=out, split=_split(split, [data]), video=video)


# ==================================================================== single object


def _sot_train_command():
    from cnnkit.tasks.track.sot_config import SotConfig

    @config_command(sot_app, "train", SotConfig, "Train a Siamese single-object tracker (SiamFC) on pairs of crops of one "
                    "object: MOTChallenge sequences (every id) or a detection dataset.")
    def sot_train(cfg, explicit: set[str]) -> None:
        from cnnkit.runner import train
        from cnnkit.tasks.track.sot import SOT_RECIPE

        train(cfg, explicit, SOT_RECIPE)


_sot_train_command()


@sot_app.command("run")
def sot_run(
    sources: list[Path] = typer.Argument(..., metavar="SOURCE...", help="video files, folders of frames or MOTChallenge "
                                         "sequences (without --init: each starts from its first gt row)"),
    weights: Path = typer.Option(..., "--weights", help="`track sot train` weights"),
    init: Optional[str] = typer.Option(None, "--init", metavar="X,Y,W,H", help="the target's box in the first frame "
                                       "(pixels, top-left corner; for one source)"),
    out: Path = typer.Option(Path("runs/sot/track"), "--out", help="writes OUT/NAME.txt (one box a frame) and OUT/NAME.mp4"),
    video: bool = typer.Option(True, "--video/--no-video", help="write OUT/NAME.mp4 with the box drawn"),
    split: SequenceSplit = "all",
    device: Device = "auto",
) -> None:
    """Follow one object through each source with a Siamese tracker: OUT/NAME.txt and OUT/NAME.mp4."""
    from cnnkit.tasks.track.sot import SingleObjectTracker

    SingleObjectTracker.load(weights).track(sources, init=init, out=out, video=video, split=_split(split, sources),
                                            device=device)


@sot_app.command("val")
def sot_val(
    weights: Path = typer.Option(..., "--weights", help="`track sot train` weights"),
    data: Path = typer.Option(..., "--data", help="sequences with gt/gt.txt: every id is tracked from its first box"),
    split: SequenceSplit = "auto",
    out: ValOut = None,
    device: Device = "auto",
) -> None:
    """OTB one-pass evaluation: success AUC, precision at 20 px and frames per second (metrics.json, report.html)."""
    from cnnkit.tasks.track.sot import SingleObjectTracker

    SingleObjectTracker.load(weights).val(data, split=_split(split, [data]), out=out, device=device)
