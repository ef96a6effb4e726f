"""Real-world image files: phone photos whose EXIF orientation turns the stored pixels (read, probed, annotated
and drawn upright), and huge images and decompression bombs (skipped in folders, one line when named,
--max-pixels to let genuine large scans in, `data check` opening every detection image)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import run_cli
from cnnkit.data.images import (DEFAULT_MAX_PIXELS, displayed_size, load_image, load_image_in_frame, open_image,
                                pixel_limit)
from cnnkit.errors import CnnkitError

ROTATE_CW = 6  # EXIF orientation 6: the stored picture is shown turned 90 degrees clockwise
# the upright scene: 60 wide, 80 high, grey, with a red square at x 10..30, y 50..70 (lower left)
WIDTH, HEIGHT, RED_BOX = 60, 80, [10.0, 50.0, 30.0, 70.0]


def upright_scene() -> np.ndarray:
    pixels = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in RED_BOX)
    pixels[y1:y2, x1:x2] = (230, 20, 20)
    return pixels


def phone_photo(path: Path, upright: np.ndarray, orientation: int = ROTATE_CW) -> Path:
    """A JPEG as a phone writes it: the sensor's pixels (the upright picture turned 90 degrees counter-clockwise)
    and an EXIF Orientation tag telling viewers to turn them back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = Image.fromarray(np.rot90(upright, 1).copy())  # stored 80 wide x 60 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif)
    with Image.open(path) as check:  # the file is what the test means: Pillow's own view is the upright scene
        assert check.size == (upright.shape[0], upright.shape[1])
        assert ImageOps.exif_transpose(check).size == (upright.shape[1], upright.shape[0])
    return path


def red_extent(pixels: np.ndarray) -> list[float]:
    """xyxy box of the red pixels of an HxWx3 picture (uint8, or float in [0, 1])."""
    pixels = np.asarray(pixels, dtype=np.float32)
    pixels = pixels / 255.0 if pixels.max() > 1.5 else pixels
    ys, xs = np.nonzero((pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.35))
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A 1-bit PNG of width x height black pixels, written chunk by chunk: a few KB on disk that a decoder
    would blow up to width * height bytes. (Pillow's own encoder takes seconds for 20000 x 20000.)"""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def assert_user_error(result, *names) -> str:
    """Exit 2 and one stderr line `cnnkit: …` naming every name, no traceback."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cnnkit: "), (code, err)
    assert "internal error" not in err and "Traceback" not in err
    assert all(str(name) in lines[0] for name in names), lines[0]
    return lines[0]


def write_png(path: Path, size=(24, 16), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def coco_dataset(root: Path, images: list[tuple[str, int, int]], boxes: dict[str, list[float]] | None = None) -> Path:
    """annotations/train.json over images/NAME with the recorded (name, width, height), one 'thing' box each."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    boxes = boxes or {}
    entries = [{"id": k, "file_name": name, "width": w, "height": h} for k, (name, w, h) in enumerate(images, 1)]
    annotations = [{"id": k, "image_id": k, "category_id": 1, "iscrowd": 0,
                    "bbox": (lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]])(boxes.get(name, [1, 1, 5, 5]))}
                   for k, (name, _, _) in enumerate(images, 1)]
    coco = {"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    return root


def voc_dataset(root: Path, images: list[tuple[str, int, int]], boxes: dict[str, list[float]] | None = None) -> Path:
    """Annotations/STEM.xml (recorded size, one 'thing' box, 1-based pixels) over JPEGImages/NAME."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    boxes = boxes or {}
    for name, width, height in images:
        x1, y1, x2, y2 = boxes.get(name, [1, 1, 5, 5])
        (root / "Annotations" / f"{Path(name).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size><object><name>thing</name><bndbox><xmin>{x1 + 1:g}</xmin><ymin>{y1 + 1:g}</ymin>"
            f"<xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object></annotation>")
    return root


def detection_sample(root: Path, index: int = 0):
    """(image [3, H, W] float, target boxes [N, 4]) of the dataset's index-th train image, as training sees it."""
    from cnnkit.augment.presets import dense_transforms
    from cnnkit.data.detection import load_detection
    from cnnkit.tasks.detect.task import DetectionSet

    data = load_detection(root)
    images = data.splits["train"]
    sample = DetectionSet(images, {cat: k + 1 for k, (cat, _) in enumerate(data.categories)},
                          dense_transforms(None, False, mean=None, std=None))[index]
    return sample


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """20000 x 20000 pixels (400 MP, over twice Pillow's limit: its DecompressionBombError) in about 50 KB."""
    return png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", 20000, 20000)


# ------------------------------------------------------------------------------------------- orientation
def test_load_image_and_probes_show_a_phone_photo_upright(tmp_path):
    photo = phone_photo(tmp_path / "photo.jpg", upright_scene())
    image = load_image(photo)
    assert image.size == (WIDTH, HEIGHT)
    assert iou(red_extent(np.asarray(image)), RED_BOX) > 0.9
    with open_image(photo, check_limit=False) as header:  # size probes agree without decoding
        assert displayed_size(header) == (WIDTH, HEIGHT)


def test_read_intensity_turns_a_16_bit_png_and_a_jpeg_upright(tmp_path):
    from cnnkit.data.medical import read_intensity

    photo = phone_photo(tmp_path / "photo.jpg", upright_scene())
    assert iou(red_extent(read_intensity(photo).pixels), RED_BOX) > 0.9
    # a 16-bit PNG with an eXIf chunk: the intensities keep 16 bits and are turned like the photo
    scene = np.zeros((HEIGHT, WIDTH), np.uint16)
    scene[50:70, 10:30] = 4000
    exif = Image.Exif()
    exif[0x0112] = ROTATE_CW
    Image.fromarray(np.rot90(scene, 1).copy()).save(tmp_path / "deep.png", exif=exif)
    values = read_intensity(tmp_path / "deep.png")
    assert values.bits == 16 and values.pixels.shape == (HEIGHT, WIDTH)
    ys, xs = np.nonzero(values.pixels == 4000)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [10, 50, 30, 70]


@pytest.mark.parametrize("layout", ["coco", "voc"])
def test_boxes_recorded_on_the_displayed_photo_land_on_the_object(tmp_path, layout):
    """CVAT and Label Studio record the displayed size (60x80) of a photo stored 80x60: the boxes are on the
    upright picture, where training must see them (the old per-axis rescale put them at IoU ~0)."""
    root = tmp_path / layout
    folder = root / ("images" if layout == "coco" else "JPEGImages")
    phone_photo(folder / "photo.jpg", upright_scene())
    (coco_dataset if layout == "coco" else voc_dataset)(root, [("photo.jpg", WIDTH, HEIGHT)], {"photo.jpg": RED_BOX})
    image, target, _ = detection_sample(root)
    assert tuple(image.shape[-2:]) == (HEIGHT, WIDTH)
    box = target["boxes"][0].tolist()
    assert iou(box, RED_BOX) > 0.99
    assert iou(red_extent(image.permute(1, 2, 0).numpy()), box) > 0.9  # the red square is under its box


def test_boxes_recorded_on_the_unturned_photo_stay_on_it(tmp_path):
    """A tool that ignored the orientation records the stored size (80x60) and boxes on the stored pixels:
    training reads the picture unturned, so that the boxes still cover the object."""
    root = tmp_path / "coco"
    phone_photo(root / "images" / "photo.jpg", upright_scene())
    stored_box = red_extent(np.rot90(upright_scene(), 1))
    coco_dataset(root, [("photo.jpg", HEIGHT, WIDTH)], {"photo.jpg": stored_box})
    image, target, _ = detection_sample(root)
    assert tuple(image.shape[-2:]) == (WIDTH, HEIGHT)
    assert iou(red_extent(image.permute(1, 2, 0).numpy()), target["boxes"][0].tolist()) > 0.9


def test_a_recorded_size_that_fits_neither_picture_is_an_error_never_a_stretch(tmp_path, monkeypatch, capsys):
    root = tmp_path / "coco"
    for name in ("upright.jpg", "unturned.jpg", "wrong.jpg"):
        phone_photo(root / "images" / name, upright_scene())
    write_png(root / "images" / "small.png", (30, 40))  # a copy resized to half after labelling (recorded 60x80)
    coco_dataset(root, [("upright.jpg", WIDTH, HEIGHT), ("unturned.jpg", HEIGHT, WIDTH), ("wrong.jpg", 100, 50),
                        ("small.png", WIDTH, HEIGHT)])
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    report = json.loads(out)
    by_file = {}
    for finding in report["findings"]:
        by_file.setdefault(Path(finding["path"]).name, []).append(finding)
    assert code == 2 and report["errors"] == 1, report["findings"]
    wrong = by_file["wrong.jpg"][0]
    assert wrong["level"] == "error" and "records 100x50" in wrong["message"] and "60x80" in wrong["message"]
    assert "EXIF orientation" in wrong["message"]
    assert by_file["unturned.jpg"][0]["level"] == "warning" and "unturned" in by_file["unturned.jpg"][0]["message"]
    assert by_file["small.png"][0]["level"] == "warning" and "scaled by 0.5" in by_file["small.png"][0]["message"]
    assert "upright.jpg" not in by_file
    # training skips that image with a warning naming it, instead of stretching its boxes
    assert detection_sample(root, 2) is None
    assert "wrong.jpg" in capsys.readouterr().err
    with pytest.raises(CnnkitError, match="records 100x50"):
        load_image_in_frame(root / "images" / "wrong.jpg", 100, 50)


def test_detect_predict_draws_on_the_upright_photo_and_skips_a_bomb(bomb, tmp_path, monkeypatch, capsys):
    import torch

    from cnnkit.tasks.detect.api import Detector
    from cnnkit.engine.checkpoint import save_state_dict

    torch.manual_seed(0)
    classes = ["a", "b", "c"]
    det = Detector("yolo_n", class_names=classes, imgsz=64)
    meta = {"task": "detect", "model": det.model_name, "backbone": det.backbone, "class_names": classes, "num_classes": 3,
            "category_ids": [0, 1, 2], "imgsz": 64, "anchors": None, "yolo": det.yolo.to_dict(), "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0]}
    weights = save_state_dict(det.model.state_dict(), tmp_path / "yolo_n.safetensors", meta)
    phone_photo(tmp_path / "in" / "photo.jpg", upright_scene())
    (tmp_path / "in" / "bomb.png").write_bytes(bomb.read_bytes())
    saved = tmp_path / "found.json"
    code, out, err = run_cli(["detect", "predict", tmp_path / "in", "--weights", weights, "--conf", "1", "--device", "cpu",
                              "--out", tmp_path / "out", "--save-json", saved], monkeypatch, capsys)
    assert code == 0, err
    assert [Path(r["file"]).name for r in json.loads(saved.read_text())] == ["photo.jpg"]
    assert "bomb.png" in err and "pixel limit" in err and "1 of 2 images skipped" in err, err
    drawn = sorted((tmp_path / "out").rglob("*.png"))
    assert len(drawn) == 1
    pixels = np.asarray(Image.open(drawn[0]).convert("RGB"))
    assert pixels.shape[:2] == (HEIGHT, WIDTH)  # upright, not the sensor's 80x60
    assert iou(red_extent(pixels), RED_BOX) > 0.9


# ------------------------------------------------------------------------------------------- pixel limit
@pytest.fixture
def weights(tmp_path) -> Path:
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.tiny_cnn import TinyCNN

    meta = {"task": "classify", "model": "tiny_cnn", "class_names": ["a", "b"], "num_classes": 2, "imgsz": 16,
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "cnnkit_version": "test"}
    return save_weights(TinyCNN(2), tmp_path / "w.safetensors", meta)


def test_the_default_limit_is_pillows_and_the_option_records_it():
    from cnnkit.config import MAX_PIXELS
    from cnnkit.tasks.classify.config import TrainConfig
    from cnnkit.tasks.detect.config import DetectConfig
    from cnnkit.tasks.segment.config import SegmentConfig

    assert MAX_PIXELS == DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    for config in (TrainConfig, DetectConfig, SegmentConfig):
        assert config().to_dict()["max_pixels"] == MAX_PIXELS
    with pytest.raises(CnnkitError, match="--max-pixels"):
        TrainConfig(max_pixels=-1).validate()


def test_a_bomb_is_one_line_naming_it_and_the_option(bomb):
    size = bomb.stat().st_size
    assert size < 200_000
    for read in (load_image, lambda p: load_image_in_frame(p, 20000, 20000)):
        with pytest.raises(CnnkitError) as caught:
            read(bomb)
        assert str(bomb) in caught.value.message and "pixel limit" in caught.value.message
        assert "--max-pixels" in caught.value.hint and "--tile" in caught.value.hint
    with open_image(bomb, check_limit=False) as header:  # a size probe reads the header alone
        assert displayed_size(header) == (20000, 20000)
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS  # Pillow's own guard left as it was


def test_segmentation_pixels_of_a_bomb_are_a_user_error(bomb, tmp_path):
    """load_pixels probes the mode first, and 16-bit files go through read_intensity: both one line."""
    from cnnkit.data.medical import read_intensity
    from cnnkit.tasks.segment.task import Intensity, load_pixels

    for read in (lambda: load_pixels(bomb, None, Intensity()), lambda: read_intensity(bomb)):
        with pytest.raises(CnnkitError, match="pixel limit"):
            read()


def test_a_raised_limit_reads_past_pillows_own(tmp_path, monkeypatch):
    """--max-pixels above twice Pillow's limit: Pillow's DecompressionBombError must not overrule it."""
    big = write_png(tmp_path / "big.png", (100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow now refuses 10 000 pixels itself
    with pixel_limit(0):
        assert load_image(big).size == (100, 100)
    with pixel_limit(20000):
        assert load_image(big).size == (100, 100)
    with pixel_limit(5000), pytest.raises(CnnkitError, match="pixel limit of 0.005 MP"):
        load_image(big)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_the_limit_reaches_data_loader_workers(tmp_path):
    import torch

    from cnnkit.data.loaders import ImageDataset, collate_skipping_none

    small, large = write_png(tmp_path / "small.png", (10, 10)), write_png(tmp_path / "large.png", (40, 40))
    dataset = ImageDataset([(small, 0), (large, 1)], transform=lambda image: torch.tensor(image.size))
    with pixel_limit(1000):
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_skipping_none)
        sizes, labels, _ = next(iter(loader))
    assert sizes.tolist() == [[10, 10]] and labels.tolist() == [0]


def test_predict_skips_a_bomb_in_a_folder_with_a_warning_and_a_count(bomb, weights, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    write_png(folder / "good.png")
    (folder / "bomb.png").write_bytes(bomb.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    saved = tmp_path / "found.json"
    code, out, err = run_cli(["classify", "predict", folder, "--weights", weights, "--device", "cpu", "--save-json", saved],
                             monkeypatch, capsys)
    assert code == 0, err
    assert "internal error" not in err and "Traceback" not in err
    assert [Path(r["file"]).name for r in json.loads(saved.read_text())] == ["good.png"]
    warned = [line for line in err.splitlines() if "bomb.png" in line]
    assert len(warned) == 1 and warned[0].startswith("cnnkit: warning: ") and "pixel limit" in warned[0], err
    assert "2 of 3 files skipped" in err, err


def test_predict_on_a_named_bomb_is_one_line_and_max_pixels_0_lets_a_large_scan_in(bomb, weights, tmp_path, monkeypatch,
                                                                                  capsys):
    line = assert_user_error(run_cli(["classify", "predict", bomb, "--weights", weights], monkeypatch, capsys), bomb)
    assert "pixel limit" in line and "--max-pixels" in line
    scan = png_bomb(tmp_path / "scan.png", 1500, 1500)  # 2.25 MP: over a 1 MP cap, decoded cheaply without one
    line = assert_user_error(run_cli(["classify", "predict", scan, "--weights", weights, "--max-pixels", "1000000"],
                                     monkeypatch, capsys), scan)
    assert "1 MP" in line
    saved = tmp_path / "found.json"
    code, out, err = run_cli(["classify", "predict", scan, "--weights", weights, "--max-pixels", "0", "--device", "cpu",
                              "--save-json", saved], monkeypatch, capsys)
    assert code == 0 and [r["file"] for r in json.loads(saved.read_text())] == [str(scan)], err


def test_train_skips_a_bomb_and_records_the_limit(bomb, tmp_path, monkeypatch, capsys):
    root = tmp_path / "ds"
    seed = 0
    for split, n in (("train", 4), ("val", 2)):
        for name in ("a", "b"):
            for i in range(n):
                seed += 1
                write_png(root / split / name / f"{i}.png", (12, 12), seed=seed)
    (root / "train" / "a" / "bomb.png").write_bytes(bomb.read_bytes())
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["classify", "train", "--data", root, "--model", "tiny_cnn", "--epochs", "1", "--imgsz", "16",
                              "--batch", "4", "--workers", "0", "--out", out_dir], monkeypatch, capsys)
    assert code == 0, err
    assert "internal error" not in err
    assert any("bomb.png" in line and "pixel limit" in line and "skipped" in line for line in err.splitlines()), err
    import yaml

    assert yaml.safe_load((out_dir / "config.yaml").read_text())["max_pixels"] == DEFAULT_MAX_PIXELS


def test_detection_training_skips_a_bomb(bomb, tmp_path, capsys):
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "images" / "bomb.png").write_bytes(bomb.read_bytes())
    coco_dataset(root, [("bomb.png", 20000, 20000)])
    assert detection_sample(root) is None
    assert "pixel limit" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["coco", "voc"])
def test_data_check_opens_every_detection_image(bomb, tmp_path, monkeypatch, capsys, layout):
    root = tmp_path / layout
    folder = root / ("images" if layout == "coco" else "JPEGImages")
    write_png(folder / "good.png", (24, 16))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    (folder / "bomb.png").write_bytes(bomb.read_bytes())
    images = [("good.png", 24, 16), ("empty.png", 24, 16), ("text.png", 24, 16), ("bomb.png", 20000, 20000)]
    (coco_dataset if layout == "coco" else voc_dataset)(root, images)
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    report = json.loads(out)
    errors = {Path(f["path"]).name: f["message"] for f in report["findings"] if f["level"] == "error"}
    assert code == 2 and set(errors) == {"empty.png", "text.png", "bomb.png"}, report["findings"]
    assert "0 bytes" in errors["empty.png"] and "cannot read image" in errors["text.png"]
    assert "pixel limit" in errors["bomb.png"] and "--max-pixels" in errors["bomb.png"]
