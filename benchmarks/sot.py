"""cnnkit's SiamFC single-object tracker against OpenCV's classical trackers (CSRT, KCF, MIL), in one run.

    python benchmarks/sot.py --peer-python .venv-ocv/bin/python          # data, training, the table: about 10 min
    python benchmarks/sot.py --weights runs/sot/exp/weights/best.safetensors --peer-python .venv-ocv/bin/python

1) data (in --work, reused when there): the synthetic single-object sequences (cnnkit.data.synth_sot: scale
   change, occlusion, look-alike distractors, a panning camera), --sequences of them, a third held out as the
   test set; and a synthetic MOT set (cnnkit.data.synth_mot) whose every id is a pair source for training.
2) training (unless --weights): `siamfc` on the SOT training sequences and the MOT training sequences (the MOT
   test sequences validate), through SingleObjectTracker.train, i.e. the one runner.
3) evaluation on the SOT test sequences, every tracker from the first ground-truth box, OTB one-pass
   (cnnkit.evaluate.otb: success AUC, precision at 20 px) and frames per second of the tracker calls alone
   (reading frames left out), all single-threaded (torch and OpenCV: one thread each) on the same machine in
   the same run.

CSRT and KCF ship in opencv-contrib-python(-headless) only, which would replace the opencv-python-headless cnnkit
installs: give --peer-python, an interpreter of a throwaway venv with it (``python3 -m venv .venv-ocv &&
.venv-ocv/bin/pip install opencv-contrib-python-headless numpy``). This script runs itself there in peer mode
(``--peer-run``), which needs only numpy and OpenCV. Without it, the peers this interpreter's OpenCV has
(MIL since OpenCV 4.5) are measured. The issue's target: cnnkit's success AUC at least CSRT's, at twice its
frames per second or more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

PEERS = ("CSRT", "KCF", "MIL")


# ------------------------------------------------------------------------------ peer mode: numpy and OpenCV only

def _sequence_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "gt" / "gt.txt").is_file() and (p / "img1").is_dir())


def _peer_factory(cv2, name: str):
    for where in (cv2, getattr(cv2, "legacy", None)):
        factory = getattr(where, f"Tracker{name}_create", None) if where is not None else None
        if factory is not None:
            return factory
    return None


def peer_run(root: Path, names: list[str]) -> dict:
    """{tracker: {sequence: {"boxes": [[x, y, w, h] or NaNs], "seconds", "frames"}}} for the OpenCV trackers this
    interpreter has (the others: {"missing": true})."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    out: dict = {}
    for name in names:
        factory = _peer_factory(cv2, name)
        if factory is None:
            out[name] = {"missing": True}
            continue
        out[name] = {}
        for folder in _sequence_folders(root):
            gt = np.loadtxt(folder / "gt" / "gt.txt", delimiter=",", ndmin=2)
            frames = [cv2.imread(str(p)) for p in sorted((folder / "img1").glob("*.jpg"))]
            first = tuple(int(round(v)) for v in gt[0, 2:6])
            tracker = factory()
            started = time.perf_counter()
            tracker.init(frames[0], first)
            boxes = [list(map(float, first))]
            for frame in frames[1:]:
                ok, box = tracker.update(frame)
                boxes.append([float(v) for v in box] if ok else [float("nan")] * 4)
            out[name][folder.name] = {"boxes": boxes, "seconds": time.perf_counter() - started, "frames": len(frames)}
    return out


# ----------------------------------------------------------------------------------------------- benchmark

def make_data(work: Path, sequences: int, frames: int, width: int, height: int, mot_sequences: int, seed: int) -> tuple[Path, Path]:
    """(SOT root with train/ and test/, the training root: train/ = SOT train + MOT train sequences, val/ = MOT test)."""
    from cnnkit.data.synth_mot import synth_mot
    from cnnkit.data.synth_sot import synth_sot

    sot, mot, train = work / "sot", work / "mot", work / "train_root"
    if not (sot / "test").is_dir():
        summary = synth_sot(sot, n_sequences=sequences, frames=frames, width=width, height=height, seed=seed,
                            test_fraction=1 / 3, force=True, progress=False)
        print(f"synth sot: {summary['sequences']} sequences of {frames} frames ({width}x{height}), "
              f"{summary['occluded_sequences']} with the target under 70% visible at some point, box areas changing "
              f"up to {summary['max_area_ratio']}x, {summary['seconds']} s")
    if not (mot / "train").is_dir():
        summary = synth_mot(mot, n_sequences=mot_sequences, frames=150, width=width, height=height, objects=10,
                            seed=seed + 1, test_fraction=0.25, force=True, progress=False)
        print(f"synth mot: {summary['sequences']} sequences, {summary['ids']} ids, {summary['seconds']} s")
    if not train.is_dir():
        for split, sources in (("train", [sot / "train", mot / "train"]), ("val", [mot / "test"])):
            (train / split).mkdir(parents=True)
            for source in sources:
                for seq in sorted(source.iterdir()):
                    os.symlink(seq.resolve(), train / split / seq.name, target_is_directory=True)
    return sot, train


def evaluate_peers(peer_python: str | None, test_root: Path) -> dict:
    """OpenCV trackers on the test sequences: in --peer-python (opencv-contrib), else in this interpreter."""
    if peer_python:
        done = subprocess.run([peer_python, __file__, "--peer-run", str(test_root), "--peers", ",".join(PEERS)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"peer run failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout)
    return peer_run(test_root, list(PEERS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/bench_sot", help="data, the training run and the results (reused)")
    parser.add_argument("--sequences", type=int, default=36, help="SOT sequences; a third are the test set")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--mot-sequences", type=int, default=8, help="synthetic MOT sequences for training pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs per epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads while training")
    parser.add_argument("--weights", help="a trained `siamfc` weights file: skip training")
    parser.add_argument("--peer-python", help="a Python with opencv-contrib-python-headless (CSRT, KCF)")
    parser.add_argument("--peer-run", help=argparse.SUPPRESS)
    parser.add_argument("--peers", default=",".join(PEERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_run:  # inside the peer interpreter: no cnnkit here
        print(json.dumps(peer_run(Path(args.peer_run), args.peers.split(","))))
        return

    import cv2
    import numpy as np
    import torch

    from cnnkit.evaluate.otb import otb_scores, plot_curves
    from cnnkit.tasks.track.sot import SingleObjectTracker

    # OpenCV's thread pool, once started (generating the data), hangs the training's forked loader workers; and
    # every tracker is measured on one thread anyway
    cv2.setNumThreads(1)
    work = Path(args.work)
    sot_root, train_root = make_data(work, args.sequences, args.frames, args.width, args.height, args.mot_sequences, args.seed)
    train_seconds = None
    if args.weights:
        weights = Path(args.weights)
    else:
        torch.set_num_threads(args.train_threads)
        run_dir = work / "run"
        started = time.perf_counter()
        run = SingleObjectTracker("siamfc").train(str(train_root), epochs=args.epochs, pairs=args.pairs, batch=args.batch,
                                                  workers=args.workers, device="cpu", out=str(run_dir), eval_sequences=0,
                                                  resume=(run_dir / "checkpoint.pt").is_file())
        train_seconds = time.perf_counter() - started
        weights = run.dir / "weights" / "best.safetensors"
        print(f"training: {train_seconds:.0f} s ({args.epochs} epochs x {args.pairs} pairs, batch {args.batch}, "
              f"{args.train_threads} thread(s) + {args.workers} loader worker(s))")

    # every tracker single-threaded, on the same test sequences, one after the other in this run
    torch.set_num_threads(1)
    test_root = sot_root / "test"
    sot = SingleObjectTracker.load(weights)
    ours = sot.val(str(sot_root), split="test", out=work / "val", device="cpu")
    peers = evaluate_peers(args.peer_python, test_root)

    gt = {p.name: np.loadtxt(p / "gt" / "gt.txt", delimiter=",", ndmin=2)[:, 2:6] for p in _sequence_folders(test_root)}
    table = {"cnnkit siamfc": {"success_auc": ours["success_auc"], "precision_20px": ours["precision_20px"], "fps": ours["fps"],
                               "success_curve": ours["success_curve"], "precision_curve": ours["precision_curve"]}}
    for name, result in peers.items():
        if result.get("missing"):
            print(f"OpenCV Tracker{name}: not in this OpenCV (give --peer-python with opencv-contrib-python-headless)")
            continue
        scores = otb_scores({seq: (np.array(r["boxes"], dtype=np.float64), gt[seq]) for seq, r in result.items()})
        fps = sum(r["frames"] for r in result.values()) / sum(r["seconds"] for r in result.values())
        table[f"OpenCV {name}"] = {"success_auc": scores["success_auc"], "precision_20px": scores["precision_20px"],
                                   "fps": round(fps, 1), "success_curve": scores["success_curve"],
                                   "precision_curve": scores["precision_curve"]}

    print(f"\n{len(gt)} test sequences x {args.frames} frames ({args.width}x{args.height}), one thread each, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}, OpenCV {cv2.__version__} (cnnkit side)")
    print(f"{'tracker':<16}{'success AUC':>12}{'prec@20px':>11}{'frames/s':>10}")
    for name, row in table.items():
        print(f"{name:<16}{row['success_auc']:>12.4f}{row['precision_20px']:>11.4f}{row['fps']:>10.1f}")
    summary = {"table": table, "train_seconds": train_seconds, "weights": str(weights), "args": vars(args)}
    if "OpenCV CSRT" in table:
        csrt, mine = table["OpenCV CSRT"], table["cnnkit siamfc"]
        auc_ratio, fps_ratio = mine["success_auc"] / max(csrt["success_auc"], 1e-9), mine["fps"] / max(csrt["fps"], 1e-9)
        met = auc_ratio >= 1.0 and fps_ratio >= 2.0
        print(f"cnnkit / CSRT: success AUC x{auc_ratio:.3f}, frames/s x{fps_ratio:.2f} "
              f"(target: AUC x1 or more at x2 the frames/s or more: {'met' if met else 'NOT met'})")
        summary.update({"auc_ratio": round(auc_ratio, 4), "fps_ratio": round(fps_ratio, 3), "target_met": met})
    plot = plot_curves(table, work / "otb_curves.png")
    (work / "sot_bench.json").write_text(json.dumps(summary, indent=1))
    print(f"curves: {plot}  table: {work / 'sot_bench.json'}")


if __name__ == "__main__":
    main()
