"""cnnkit's multi-object trackers against roboflow's `trackers` (Apache-2.0) on the same public detections.

    python benchmarks/track.py [--data ROOT] [--sequences 8] [--frames 150] [--imgsz 640] [--seed 0] [--objects 12]
                               [--reid WEIGHTS | --reid-epochs 8] [--results benchmarks/results/track.jsonl]

The data: cnnkit's synthetic MOT benchmark (`cnnkit data synth mot`, generated into $CNNKIT_HOME/datasets/
mot_bench unless --data names a MOTChallenge root), whose test/ sequences (never seen by the re-ID model) are
tracked with their noisy public detections (det/det.txt: missed, jittered and false boxes, low scores under
occlusion) by
- cnnkit: sort, bytetrack and deepsort (appearance from a re-ID embedder that cnnkit trains on crops of the
  train/ sequences' identities, `cnnkit data convert --to identities` then `cnnkit embed train`, unless
  --reid gives one), every option at its default;
- roboflow `trackers` 2.6 (pip install trackers; a benchmark-only peer): SORTTracker, ByteTrackTracker,
  OCSORTTracker and BoTSORTTracker (with its camera-motion compensation on the frames), defaults, frame rate
  from seqinfo.ini;
and every result is scored by TrackEval (HOTA, MOTA, IDF1, ID switches). Then the ratios the issue sets:
cnnkit's ByteTrack IDF1 against theirs, cnnkit's best HOTA against their best, and DeepSORT's ID switches
against SORT's. Association speed is timed on the detections alone (frames not decoded; DeepSORT's
embeddings computed beforehand), 1 thread.

roboflow's package pulls the GUI build of OpenCV (opencv-python) beside cnnkit's headless one; install it and
then `pip install --force-reinstall --no-deps opencv-python-headless` so cnnkit keeps its own cv2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

PEERS = ("SORTTracker", "ByteTrackTracker", "OCSORTTracker", "BoTSORTTracker")
OURS = ("sort", "bytetrack", "deepsort")


def bench_data(args) -> Path:
    if args.data:
        return Path(args.data)
    from cnnkit.data.builtin import cache_dir
    from cnnkit.data.synth_mot import synth_mot

    dense = f"_o{args.objects}" if args.objects != 12 else ""
    root = cache_dir() / "datasets" / f"mot_bench_n{args.sequences}_f{args.frames}_{args.imgsz}_s{args.seed}{dense}"
    if not root.exists():
        synth_mot(root, n_sequences=args.sequences, frames=args.frames, width=args.imgsz, height=round(args.imgsz * 9 / 32) * 2,
                  objects=args.objects, seed=args.seed)
    return root


def reid_weights(args, root: Path, work: Path) -> Path:
    """A re-ID embedder trained on the identities of the train/ sequences (crops per track id)."""
    if args.reid:
        return Path(args.reid)
    from cnnkit import Embedder
    from cnnkit.data.convert_mot import mot_to_identities

    weights = work / "reid" / "weights" / "best.safetensors"
    if weights.exists():
        return weights
    identities = work / "identities"
    if not identities.exists():
        mot_to_identities(root, identities, split="train")
    Embedder("small_cnn", dim=64, imgsz=args.reid_imgsz).train(data=str(identities), epochs=args.reid_epochs, imgsz=args.reid_imgsz,
                                                               out=str(work / "reid"), workers=0)
    return weights


def run_peer(name: str, sequences, out: Path) -> dict[str, Path]:
    """One of roboflow's trackers over every sequence's public detections -> MOTChallenge files."""
    import supervision as sv
    import trackers

    from cnnkit.data import mot

    files = {}
    for seq in sequences:
        by_frame = mot.detections_by_frame(mot.read_mot_file(seq.root / "det" / "det.txt", "det"))
        tracker = getattr(trackers, name)(frame_rate=seq.fps)
        rows = []
        frames = mot.iter_frames(seq) if name == "BoTSORTTracker" else (None for _ in range(seq.length))
        for number, frame in enumerate(frames, start=1):
            d = by_frame.get(number, np.zeros((0, 6)))
            detections = sv.Detections(xyxy=d[:, :4].astype(np.float32), confidence=d[:, 4].astype(np.float32),
                                       class_id=np.zeros(len(d), dtype=int))
            found = tracker.update(detections, frame=frame[:, :, ::-1].copy()) if frame is not None else tracker.update(detections)
            keep = found.tracker_id >= 0  # -1: not yet confirmed
            for (x1, y1, x2, y2), track_id, score in zip(found.xyxy[keep], found.tracker_id[keep],
                                                       (found.confidence[keep] if found.confidence is not None else np.ones(keep.sum()))):
                rows.append([number, track_id + 1, x1, y1, x2 - x1, y2 - y1, score, -1, -1, -1])
        files[seq.name] = out / f"{seq.name}.txt"
        mot.write_mot_results(files[seq.name], np.array(rows, dtype=np.float64).reshape(-1, 10))
    return files


def association_fps(make, sequences, embed=None) -> float:
    """Frames per second of ``make()``'s update loop over the public detections alone."""
    from cnnkit.data import mot
    from cnnkit.track import Detections

    frames = total = 0.0
    for seq in sequences:
        by_frame = mot.detections_by_frame(mot.read_mot_file(seq.root / "det" / "det.txt", "det"))
        prepared = []
        for number in range(1, seq.length + 1):
            d = by_frame.get(number, np.zeros((0, 6)))
            prepared.append(Detections(d[:, :4].copy(), d[:, 4].copy(), np.full(len(d), -1),
                                       embed[seq.name][number] if embed is not None else None))
        tracker = make()
        started = time.perf_counter()
        for dets in prepared:
            tracker.update(dets)
        total += time.perf_counter() - started
        frames += seq.length
    return frames / max(total, 1e-9)


def peer_association_fps(name: str, sequences) -> float:
    import supervision as sv
    import trackers

    from cnnkit.data import mot

    frames = total = 0.0
    for seq in sequences:
        if name == "BoTSORTTracker":
            return float("nan")  # its camera-motion step needs the frames: timed with them, not comparable
        by_frame = mot.detections_by_frame(mot.read_mot_file(seq.root / "det" / "det.txt", "det"))
        prepared = [by_frame.get(n, np.zeros((0, 6))) for n in range(1, seq.length + 1)]
        prepared = [sv.Detections(xyxy=d[:, :4].astype(np.float32), confidence=d[:, 4].astype(np.float32),
                                  class_id=np.zeros(len(d), dtype=int)) for d in prepared]
        tracker = getattr(trackers, name)(frame_rate=seq.fps)
        started = time.perf_counter()
        for dets in prepared:
            tracker.update(dets)
        total += time.perf_counter() - started
        frames += seq.length
    return frames / max(total, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a MOTChallenge root with train/ and test/ (default: generate one)")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--imgsz", type=int, default=640, help="frame width (height 9/16 of it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objects", type=int, default=12, help="objects on screen on average (24: dense scenes, more "
                        "crossings and occlusions)")
    parser.add_argument("--ours", default=",".join(OURS), help="cnnkit trackers to run (deepsort trains or takes --reid)")
    parser.add_argument("--reid", help="re-ID weights for deepsort (default: train one on the train/ identities)")
    parser.add_argument("--reid-epochs", type=int, default=8)
    parser.add_argument("--reid-imgsz", type=int, default=48)
    parser.add_argument("--work", default="runs/bench_track")
    parser.add_argument("--results", default="benchmarks/results/track.jsonl")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from cnnkit.data import mot
    from cnnkit.evaluate.mot import evaluate_mot
    from cnnkit.tasks.track import task as track_task
    from cnnkit.tasks.track.api import Tracker
    from cnnkit.track import make_tracker

    root = bench_data(args)
    work = Path(args.work)
    sequences = mot.find_sequences(root, split="test")
    ours = [n for n in args.ours.split(",") if n]
    reid = reid_weights(args, root, work) if "deepsort" in ours else None
    results: dict[str, dict[str, Path]] = {}
    speed: dict[str, float] = {}
    for name in ours:
        tracker = Tracker(name, reid=reid if name == "deepsort" else None)
        results[f"cnnkit {name}"] = tracker.track([s.root for s in sequences], work / "results" / name, public=True, video=False)
    # DeepSORT's appearance features, computed once, so that its association alone is timed
    embed_fn = Tracker("deepsort", reid=reid)._embed if reid is not None else None
    embeddings = {}
    for seq in sequences if reid is not None else []:
        by_frame = mot.detections_by_frame(mot.read_mot_file(seq.root / "det" / "det.txt", "det"))
        embeddings[seq.name] = {n: (track_task.appearance(embed_fn, frame, by_frame[n][:, :4]) if n in by_frame else None)
                                for n, frame in enumerate(mot.iter_frames(seq), start=1)}
    for name in ours:
        speed[f"cnnkit {name}"] = association_fps(lambda: make_tracker(name), sequences, embeddings if name == "deepsort" else None)
    for name in PEERS:
        results[f"roboflow {name}"] = run_peer(name, sequences, work / "results" / name)
        speed[f"roboflow {name}"] = peer_association_fps(name, sequences)
    lengths = {s.name: s.length for s in sequences}
    table = evaluate_mot({s.name: s.root / "gt" / "gt.txt" for s in sequences}, lengths, results)

    print(f"\n{len(sequences)} test sequences of {root}, {sum(lengths.values())} frames, public detections; TrackEval")
    print(f"{'tracker':28s} {'HOTA':>6s} {'MOTA':>6s} {'IDF1':>6s} {'IDSW':>5s} {'assoc fps':>10s}")
    for name, scores in table.items():
        print(f"{name:28s} {scores['hota']:6.3f} {scores['mota']:6.3f} {scores['idf1']:6.3f} {scores['id_switches']:5d} "
              f"{speed[name]:10.0f}")
    ours_best = max((n for n in table if n.startswith("cnnkit")), key=lambda n: table[n]["hota"])
    theirs_best = max((n for n in table if n.startswith("roboflow")), key=lambda n: table[n]["hota"])
    ratios = {
        "bytetrack_idf1": table["cnnkit bytetrack"]["idf1"] / table["roboflow ByteTrackTracker"]["idf1"],
        "best_hota": table[ours_best]["hota"] / table[theirs_best]["hota"],
    }
    if "cnnkit deepsort" in table:
        ratios["deepsort_idsw_vs_sort"] = table["cnnkit deepsort"]["id_switches"] / max(table["cnnkit sort"]["id_switches"], 1)
    print(f"\ncnnkit ByteTrack IDF1 / roboflow ByteTrack IDF1: {ratios['bytetrack_idf1']:.3f}")
    print(f"cnnkit best HOTA ({ours_best}) / roboflow best HOTA ({theirs_best}): {ratios['best_hota']:.3f}")
    if "deepsort_idsw_vs_sort" in ratios:
        print(f"DeepSORT ID switches / SORT ID switches: {ratios['deepsort_idsw_vs_sort']:.3f} "
              f"({table['cnnkit deepsort']['id_switches']} against {table['cnnkit sort']['id_switches']})")
    # names, not this machine's paths
    row = {"date": datetime.date.today().isoformat(), "data": args.data or f"$CNNKIT_HOME/datasets/{root.name}",
           "sequences": len(sequences), "frames": sum(lengths.values()),
           "reid": args.reid or (f"trained by the script on the train/ identities (--reid-epochs {args.reid_epochs})" if reid else None),
           "ratios": ratios, "fps": speed,
           "table": {n: {k: v for k, v in s.items() if k != "per_sequence"} for n, s in table.items()}}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
