"""Segmentation for real, through the command line: synthesise scenes and 16-bit cells, train, val,
predict (PNG, 16-bit, DICOM; resized and tiled); a short training must lift miou / Dice well above an
untrained model's; bad data ends in one line, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cnnkit, run_cnnkit_here, write_dicom


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from cnnkit.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("seg") / "shapes"
    synth_dataset("shapes", root, task="segment", n=60, imgsz=96, seed=5, val_fraction=0.2, progress=False)
    return root


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    from cnnkit.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("seg") / "cells"
    synth_dataset("cells", root, task="segment", n=16, imgsz=128, seed=2, val_fraction=0.25, progress=False)
    return root


def _untrained(weights: Path, data: Path, **options) -> dict:
    """Metrics of a segmenter with the trained one's architecture and classes but initial weights."""
    import torch

    from cnnkit.data.segmentation import load_segmentation
    from cnnkit.tasks.segment.api import Segmenter, evaluate_segmenter

    trained = Segmenter.load(weights)
    torch.manual_seed(0)
    fresh = Segmenter(trained.model_name, trained.class_names, trained.encoder, trained.imgsz, intensity=trained.intensity,
                      tile=trained.tile)
    dataset = load_segmentation(data, check=False)
    metrics, _ = evaluate_segmenter(fresh, dataset.splits["val"], 4, 0, torch.device("cpu"), data.parent / "untrained",
                                    "val", fresh.inference(), hd95=False)
    return metrics


def _handful(shapes: Path, root: Path, count: int) -> Path:
    """A dataset of the first ``count`` training scenes whose val split is the same scenes."""
    import shutil

    for split in ("train", "val"):
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True)
        for image in sorted((shapes / "images/train").glob("*.png"))[:count]:
            shutil.copy(image, root / "images" / split / image.name)
            shutil.copy(shapes / "masks/train" / image.name, root / "masks" / split / image.name)
    shutil.copy(shapes / "classes.txt", root / "classes.txt")
    return root


@pytest.fixture(scope="module")
def handful_unet(shapes, tmp_path_factory) -> tuple[Path, Path]:
    """(data, run dir) of a U-Net fitted to 8 scenes: a U-Net from scratch needs tens of epochs of 800 scenes
    to tell the five shapes apart (docs/segmentation.md); fitting 8 scenes in 40 short epochs shows the whole
    loop learns, in under a minute."""
    root = tmp_path_factory.mktemp("handful")
    data = _handful(shapes, root / "few", 8)
    run_dir = root / "run"
    done = run_cnnkit("segment", "train", "--data", str(data), "--model", "unet", "--encoder", "resnet18", "--imgsz", "96",
                      "--epochs", "40", "--batch", "4", "--lr", "0.003", "--augment", "none", "--workers", "0", "--out", str(run_dir))
    assert done.returncode == 0, done.stderr
    return data, run_dir


@pytest.mark.slow
def test_unet_fits_a_handful_of_scenes_then_val_and_predict(handful_unet, tmp_path):
    data, run_dir = handful_unet
    for name in ("config.yaml", "weights/best.safetensors", "checkpoint.pt", "history.csv", "metrics.json", "report.html",
                 "plots/history.png", "plots/val_confusion_matrix.png", "plots/val_samples.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"miou", "dice", "pixel_accuracy", "miou_fg", "dice_fg", "hd95", "per_class", "params", "gflops"} <= set(metrics)
    assert set(metrics["per_class"]) == {"background", "circle", "square", "triangle", "star", "cross"}
    assert {"iou", "dice", "hd95"} <= set(metrics["per_class"]["circle"])
    untrained = _untrained(run_dir / "weights/best.safetensors", data)
    assert metrics["miou"] >= max(0.4, untrained["miou"] + 0.3), (metrics["miou"], untrained["miou"])
    assert metrics["dice_fg"] >= untrained["dice_fg"] + 0.3, (metrics["dice_fg"], untrained["dice_fg"])
    shapes = data

    weights = str(run_dir / "weights/best.safetensors")
    val = run_cnnkit("segment", "val", "--weights", weights, "--data", str(shapes), "--out", str(tmp_path / "val"), "--workers", "0")
    assert val.returncode == 0, val.stderr
    again = json.loads((tmp_path / "val/metrics.json").read_text())
    assert again["miou"] == pytest.approx(metrics["miou"], abs=1e-6)

    out = tmp_path / "pred"
    pred = run_cnnkit_here("segment", "predict", str(shapes / "images/val"), "--weights", weights, "--out", str(out),
                      "--save-json", str(tmp_path / "pred.json"))
    assert pred.returncode == 0, pred.stderr
    results = json.loads((tmp_path / "pred.json").read_text())
    images = sorted((shapes / "images/val").glob("*.png"))
    assert len(results) == len(images) and {"file", "size", "classes", "mask"} <= set(results[0])
    agree = []
    for image in images:
        mask = np.asarray(Image.open(out / "masks" / f"{image.stem}.png"))
        truth = np.asarray(Image.open(shapes / "masks/val" / f"{image.stem}.png"))
        assert mask.shape == truth.shape and mask.dtype == np.uint8 and mask.max() < 6
        assert (out / "overlays" / f"{image.stem}.png").is_file()
        agree.append((mask == truth)[truth != 255].mean())
    assert np.mean(agree) == pytest.approx(metrics["pixel_accuracy"], abs=0.02)


@pytest.mark.slow
def test_segment_distill_learns_from_the_teachers_pixels(handful_unet, tmp_path):
    # an FPN student at 64 px from the 96-px U-Net: the teacher sees the images at its own side and its class
    # map is resized to the student's; the result is an ordinary segmenter's weights
    from safetensors import safe_open

    from cnnkit.tasks.segment.api import Segmenter

    data, teacher_dir = handful_unet
    out = tmp_path / "student"
    done = run_cnnkit("segment", "distill", "--teacher", str(teacher_dir / "weights/best.safetensors"), "--student", "fpn",
                      "--encoder", "resnet18", "--data", str(data), "--imgsz", "64", "--epochs", "12", "--batch", "4",
                      "--lr", "0.003", "--augment", "none", "--no-hd95", "--workers", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = (out / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"train_kd", "train_hard", "train_ce", "train_dice"} <= set(header), header
    kd = [float(row.split(",")[header.index("train_kd")]) for row in rows[1:]]
    assert kd[-1] < 0.5 * kd[0], kd  # the student's pixels came to agree with the teacher's
    weights = out / "weights/best.safetensors"
    with safe_open(str(weights), "pt") as handle:
        provenance = json.loads(handle.metadata()["distilled_from"])
    assert provenance["teacher_model"] == "unet (resnet18)" and provenance["temperature"] == 4.0
    student = Segmenter.load(weights)
    assert (student.model_name, student.imgsz) == ("fpn", 64)
    metrics = json.loads((out / "metrics.json").read_text())
    untrained = _untrained(weights, data)
    assert metrics["miou"] >= untrained["miou"] + 0.1, (metrics["miou"], untrained["miou"])  # measured: 0.009 -> 0.20

    classifier = run_cnnkit_here("distill", "--teacher", str(teacher_dir / "weights/best.safetensors"), "--data", str(data))
    assert classifier.returncode == 2 and "cnnkit segment distill" in classifier.stderr


@pytest.mark.slow
def test_unet_on_16_bit_cells_with_tiles_and_dicom(cells, tmp_path):
    """The medical path: 16-bit single-channel images (percentile scaling), training on windows at the
    images' own resolution, tiled val and prediction of a larger image and of a DICOM file."""
    image = np.asarray(Image.open(next((cells / "images/train").glob("*.png"))))
    assert image.dtype == np.uint16 and image.max() > 255
    run_dir = tmp_path / "run"
    done = run_cnnkit("segment", "train", "--data", str(cells), "--encoder", "resnet18", "--imgsz", "64", "--tile",
                      "--epochs", "12", "--batch", "4", "--lr", "0.003", "--workers", "0", "--out", str(run_dir))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    untrained = _untrained(run_dir / "weights/best.safetensors", cells)
    assert metrics["dice_fg"] >= max(0.5, untrained["dice_fg"] + 0.2), (metrics["dice_fg"], untrained["dice_fg"])

    # a 2x2 mosaic of val images (256 px) segmented by 64-px tiles, and one of them as a DICOM slice
    tiles = [np.asarray(Image.open(p)) for p in sorted((cells / "images/val").glob("*.png"))[:4]]
    big = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3 % len(tiles)]]]).astype(np.uint16)
    Image.fromarray(big).save(tmp_path / "big.png")
    write_dicom(tmp_path / "slice.dcm", tiles[0])
    out = tmp_path / "pred"
    pred = run_cnnkit("segment", "predict", str(tmp_path / "big.png"), str(tmp_path / "slice.dcm"), "--weights",
                      str(run_dir / "weights/best.safetensors"), "--out", str(out), "--save-json", str(tmp_path / "p.json"))
    assert pred.returncode == 0, pred.stderr
    big_mask = np.asarray(Image.open(out / "masks/big.png"))
    assert big_mask.shape == big.shape
    truth = np.asarray(Image.open(sorted((cells / "masks/val").glob("*.png"))[0]))
    dicom_mask = np.asarray(Image.open(out / "masks/slice.png"))
    for predicted in (big_mask[:128, :128], dicom_mask):
        overlap = ((predicted == 1) & (truth == 1)).sum()
        assert 2 * overlap / ((predicted == 1).sum() + (truth == 1).sum()) >= 0.5


def test_bad_segmentation_data_is_one_line(shapes, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(shapes, root)
    victim = sorted((root / "masks/train").glob("*.png"))[0]
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(victim)
    done = run_cnnkit_here("segment", "train", "--data", str(root), "--epochs", "1", "--imgsz", "64", "--out", str(tmp_path / "r1"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert victim.name in done.stderr and "30x20" in done.stderr and "96x96" in done.stderr

    Image.fromarray(np.full((96, 96), 9, np.uint8)).save(victim)
    done = run_cnnkit_here("segment", "train", "--data", str(root), "--epochs", "1", "--imgsz", "64", "--out", str(tmp_path / "r2"))
    assert done.returncode == 2 and "class index 9" in done.stderr and "Traceback" not in done.stderr

    empty = tmp_path / "empty"
    (empty / "images/train").mkdir(parents=True)
    (empty / "masks/train").mkdir(parents=True)
    done = run_cnnkit_here("segment", "train", "--data", str(empty), "--epochs", "1", "--out", str(tmp_path / "r3"))
    assert done.returncode == 2 and "no images" in done.stderr and "Traceback" not in done.stderr

    done = run_cnnkit_here("segment", "train", "--data", str(shapes), "--imgsz", "100", "--out", str(tmp_path / "r4"))
    assert done.returncode == 2 and "multiple of 32" in done.stderr


def test_dicom_without_pixels_is_one_line_at_predict(shapes, tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "empty.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "OT"
    ds.save_as(str(tmp_path / "empty.dcm"), enforce_file_format=True)
    weights = _tiny_weights(shapes, tmp_path)
    done = run_cnnkit_here("segment", "predict", str(tmp_path / "empty.dcm"), "--weights", str(weights), "--out", str(tmp_path / "p"))
    assert done.returncode == 2 and "no pixel data" in done.stderr and "empty.dcm" in done.stderr
    assert "Traceback" not in done.stderr


def _tiny_weights(shapes: Path, tmp_path: Path) -> Path:
    """Weights of an untrained segmenter for the shapes classes, written as a run would."""
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.segmenters import build_segmenter

    classes = (shapes / "classes.txt").read_text().split()
    net = build_segmenter("unet", "resnet18", len(classes))
    path = tmp_path / "w.safetensors"
    save_weights(net, path, {"task": "segment", "model": "unet", "encoder": "resnet18", "imgsz": 64,
                                          "class_names": classes})
    return path
