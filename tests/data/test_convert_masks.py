"""`cnnkit data convert --to masks`: COCO instances (polygons, RLE, crowd) and colour masks (VOC palette, a
palette file) -> index masks the segmentation loader reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.check_segmentation import check_segmentation
from cnnkit.data.convert_masks import VOC_CLASSES, convert_to_masks, read_palette, voc_colours
from cnnkit.data.segmentation import load_segmentation
from tests.conftest import run_cli

BOUNDARY = (224, 224, 192)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def test_coco_polygons_agree_with_pycocotools_smaller_on_top(tmp_path, monkeypatch, capsys):
    from pycocotools.coco import COCO

    from cnnkit.data.synth import synth_dataset

    source, out = tmp_path / "det", tmp_path / "seg"
    synth_dataset("shapes", source, task="detect", n=8, imgsz=64, progress=False)
    code, _, err = run_cli(["data", "convert", source, "--to", "masks", "--out", out], monkeypatch, capsys)
    assert code == 0, err
    assert "coco -> masks: 8 images" in err and "6 classes" in err
    assert (out / "classes.txt").read_text().split() == ["background", "circle", "square", "triangle", "star", "cross"]
    assert json.loads((out / "categories.json").read_text()) == {str(k): k for k in range(1, 6)}  # ids 1..5

    overlaps = 0
    for split in ("train", "val"):
        coco = COCO(str(source / "annotations" / f"{split}.json"))
        for image_id, info in coco.imgs.items():
            expected = np.zeros((info["height"], info["width"]), np.uint8)
            smallest = np.full(expected.shape, np.inf)
            covered = np.zeros(expected.shape, np.int64)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
                pixels = coco.annToMask(ann).astype(bool)
                area = pixels.sum()
                covered += pixels
                # the smallest instance wins a pixel; for equal areas the later one, as painting in order does
                wins = pixels & (area <= smallest)
                expected[wins], smallest[wins] = ann["category_id"], area  # ids 1..5 are the class indices here
            overlaps += int((covered > 1).sum())
            assert (out / "images" / info["file_name"]).is_file()
            mask = _read(out / "masks" / split / f"{Path(info['file_name']).stem}.png")
            np.testing.assert_array_equal(mask, expected)
    assert overlaps > 0  # the shapes do overlap, so the order was tested
    data = load_segmentation(out)
    assert data.classes[1:] == ["circle", "square", "triangle", "star", "cross"]
    assert sum(len(s) for s in data.splits.values()) == 8


def _hand_made_coco(root: Path) -> Path:
    """One 30x20 image: a large cat, a small dog listed before it, a crowd region as uncompressed RLE,
    a bird as compressed RLE; a second image without annotations. Category ids 9, 2, 5 out of order."""
    from pycocotools import mask as mask_utils

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", (30, 20), (10, 20, 30)).save(root / "images" / "a.jpg")
    Image.new("RGB", (30, 20)).save(root / "images" / "empty.png")
    bird = np.zeros((20, 30), np.uint8)
    bird[15:19, 20:29] = 1
    rle = mask_utils.encode(np.asfortranarray(bird))
    crowd = np.zeros((20, 30), np.uint8)
    crowd[0:3, 0:5] = 1
    crowd[4:6, 4:6] = 1  # inside the dog: the dog keeps it
    counts, value, run = [], 0, 0  # uncompressed RLE: column-major runs starting with zeros
    for pixel in crowd.ravel(order="F"):
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 20},
                       {"id": 2, "file_name": "empty.png", "width": 30, "height": 20}],
            "categories": [{"id": 9, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "bird"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": [[4, 4, 8, 4, 8, 8, 4, 8]]},
                {"id": 2, "image_id": 1, "category_id": 9, "iscrowd": 0, "segmentation": [[2, 2, 16, 2, 16, 14, 2, 14]]},
                {"id": 3, "image_id": 1, "category_id": 9, "iscrowd": 1, "segmentation": {"size": [20, 30], "counts": counts}},
                {"id": 4, "image_id": 1, "category_id": 5, "iscrowd": 0,
                 "segmentation": {"size": [20, 30], "counts": rle["counts"].decode("ascii")}},
            ]}
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    return root


def test_coco_rle_crowd_ids_and_empty_images(tmp_path):
    from pycocotools import mask as mask_utils

    source = _hand_made_coco(tmp_path / "coco")
    result = convert_to_masks(source, tmp_path / "seg", copy=True, progress=False)
    assert (result.objects, result.crowd, result.images) == (3, 1, {"train": 2})
    out = tmp_path / "seg"
    assert (out / "classes.txt").read_text().split() == ["background", "dog", "bird", "cat"]  # ids 2, 5, 9
    assert json.loads((out / "categories.json").read_text()) == {"1": 2, "2": 5, "3": 9}
    assert not (out / "images" / "train" / "a.jpg").samefile(source / "images" / "a.jpg")  # --copy

    mask = _read(out / "masks" / "train" / "a.png")
    coco = json.loads((source / "annotations" / "train.json").read_text())
    polygons = {ann["id"]: mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 20, 30))).astype(bool)
                for ann in coco["annotations"] if isinstance(ann["segmentation"], list)}
    dog, cat = polygons[1], polygons[2]
    crowd = mask_utils.decode(mask_utils.frPyObjects(coco["annotations"][2]["segmentation"], 20, 30)).astype(bool)
    assert (mask[dog] == 1).all()  # the small dog on the large cat, though listed first
    assert (mask[cat & ~dog] == 3).all()
    assert (mask[crowd & ~dog & ~cat] == 255).all() and (crowd & ~dog & ~cat).sum() > 0
    assert (mask[15:19, 20:29] == 2).all() and (mask == 2).sum() == 36  # compressed RLE bird
    bird = np.zeros_like(dog)
    bird[15:19, 20:29] = True
    assert not mask[~(dog | cat | crowd | bird)].any()  # everything else background
    assert not _read(out / "masks" / "train" / "empty.png").any()
    data = load_segmentation(out, val_split=0.5)
    assert data.classes == ["background", "dog", "bird", "cat"]


def _colour_dataset(root: Path, colours: dict[str, np.ndarray]) -> Path:
    for name, rgb in colours.items():
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        (root / "masks" / "train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", rgb.shape[1::-1], (50, 50, 50)).save(root / "images" / "train" / f"{name}.jpg")
        Image.fromarray(rgb, "RGB").save(root / "masks" / "train" / f"{name}.png")
    return root


def _voc_mask() -> np.ndarray:
    from cnnkit.tasks.segment.task import palette

    colours = palette(21)
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[2:6, 2:6] = colours[15]  # person
    rgb[7:10, 9:14] = colours[7]  # car
    rgb[1, :] = BOUNDARY
    return rgb


def test_voc_colours_to_indices_boundary_ignored(tmp_path, monkeypatch, capsys):
    source = _colour_dataset(tmp_path / "rgb", {"a": _voc_mask(), "b": np.zeros((12, 16, 3), np.uint8)})
    # a VOC SegmentationClass-style palette PNG (VOC's colours in its palette, the boundary at index 255)
    pmask = Image.fromarray(np.pad(np.full((4, 4), 3, np.uint8), 4), "P")
    pmask.putpalette([v for c in voc_colours() for v in c] + [0, 0, 0] * 234 + list(BOUNDARY))
    pmask.putpixel((0, 0), 255)
    Image.new("RGB", (12, 12)).save(source / "images" / "train" / "p.png")
    pmask.save(source / "masks" / "train" / "p.png")
    out = tmp_path / "seg"
    code, _, err = run_cli(["data", "convert", source, "--to", "masks", "--palette", "voc", "--out", out], monkeypatch, capsys)
    assert code == 0, err
    assert "masks -> masks: 3 images" in err and "21 classes" in err
    p = _read(out / "masks" / "train" / "p.png")
    assert (p[4:8, 4:8] == 3).all() and p[0, 0] == 255 and (p == 0).sum() == 144 - 17
    mask = _read(out / "masks" / "train" / "a.png")
    assert (mask[2:6, 2:6] == 15).all() and (mask[7:10, 9:14] == 7).all() and (mask[1] == 255).all()
    assert (mask == 0).sum() == 12 * 16 - 16 - 15 - 16
    assert (out / "classes.txt").read_text().split() == list(VOC_CLASSES)
    assert (out / "images" / "train" / "a.jpg").samefile(source / "images" / "train" / "a.jpg")  # hard link
    assert load_segmentation(out).classes[15] == "person"
    assert check_segmentation(source, progress=False).has_errors()  # the source: colour masks are errors
    assert not check_segmentation(out, progress=False).has_errors()

    # without --palette a P-mode mask is copied as its grey indices
    (tmp_path / "only_p" / "images").mkdir(parents=True)
    (tmp_path / "only_p" / "masks").mkdir()
    Image.new("RGB", (12, 12)).save(tmp_path / "only_p" / "images" / "p.png")
    pmask.save(tmp_path / "only_p" / "masks" / "p.png")
    result = convert_to_masks(tmp_path / "only_p", tmp_path / "plain", progress=False)
    np.testing.assert_array_equal(_read(tmp_path / "plain" / "masks" / "p.png"), np.asarray(pmask))
    assert result.recoloured == 0 and result.classes == []

def test_unknown_colour_is_one_line_or_ignored(tmp_path, monkeypatch, capsys):
    rgb = _voc_mask()
    rgb[0, :5] = (1, 2, 3)
    source = _colour_dataset(tmp_path / "rgb", {"odd": rgb})
    out = tmp_path / "seg"
    code, _, err = run_cli(["data", "convert", source, "--to", "masks", "--palette", "voc", "--out", out], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "odd.png: colour (1, 2, 3) (5 px) is not in the palette voc" in lines[0]
    assert "(128, 0, 0) aeroplane" in lines[0] and "--unknown ignore" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".seg.*"))  # nothing half-written

    code, _, err = run_cli(["data", "convert", source, "--to", "masks", "--palette", "voc", "--unknown", "ignore", "--out", out],
                           monkeypatch, capsys)
    assert code == 0, err
    assert "colours not in the palette voc, mapped to 255 (ignore): (1, 2, 3) 5 px" in err
    assert (_read(out / "masks" / "train" / "odd.png")[0, :5] == 255).all()

    code, _, err = run_cli(["data", "convert", source, "--to", "masks", "--out", out], monkeypatch, capsys)
    assert code == 2 and "exists and is not empty" in err
    code, _, err = run_cli(["data", "convert", source, "--to", "masks", "--out", tmp_path / "x"], monkeypatch, capsys)
    assert code == 2 and "no palette" in err and "--palette voc" in err
    code, _, err = run_cli(["data", "convert", source, "--to", "yolo", "--palette", "voc", "--out", tmp_path / "y"],
                           monkeypatch, capsys)
    assert code == 2 and "--to masks only" in err


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_palette_file(tmp_path, suffix):
    if suffix == ".txt":
        text = "# name r g b\nbackground 0 0 0\nroad 128 64 128\ntraffic sign 220 220 0\n"
    else:
        text = json.dumps({"background": [0, 0, 0], "road": [128, 64, 128], "traffic sign": [220, 220, 0]})
    (tmp_path / f"palette{suffix}").write_text(text)
    palette = read_palette(tmp_path / f"palette{suffix}")
    assert palette.names == ["background", "road", "traffic sign"] and palette.colours[2] == (220, 220, 0)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (128, 64, 128)
    rgb[6:, 6:] = (220, 220, 0)
    source = _colour_dataset(tmp_path / "rgb", {"x": rgb})
    result = convert_to_masks(source, tmp_path / "seg", palette=tmp_path / f"palette{suffix}", progress=False)
    assert result.recoloured == 1
    mask = _read(tmp_path / "seg" / "masks" / "train" / "x.png")
    assert (mask[:4] == 1).all() and (mask[6:, 6:] == 2).all() and (mask == 0).sum() == 28
    assert load_segmentation(tmp_path / "seg").classes == ["background", "road", "traffic sign"]

    (tmp_path / "bad.txt").write_text("background 0 0 0\nroad 0 0 0\n")
    with pytest.raises(Exception, match=r"bad.txt:2: colour \(0, 0, 0\) is also class 0"):
        read_palette(tmp_path / "bad.txt")
