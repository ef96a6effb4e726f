"""`cnnkit data synth cells`: 16-bit images, semantic masks, instance ids and COCO RLE that agree, determinism."""

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.synth import synth_dataset
from conftest import run_cli

N, SIZE = 8, 128


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "cells"
    summary = synth_dataset("cells", root, n=N, imgsz=SIZE, seed=0, progress=False)
    return root, summary


def _stems(root):
    """{split: [file stem, ...]} of the images written."""
    return {split: sorted(p.stem for p in (root / "images" / split).glob("*.png")) for split in ("train", "val")}


def test_layout(cells):
    root, summary = cells
    assert summary["images"] == {"train": 6, "val": 2} and summary["classes"] == ["cell"]
    assert (root / "classes.txt").read_text() == "background\ncell\n"
    stems = _stems(root)
    for split, names in stems.items():
        assert len(names) == summary["images"][split]
        assert (root / "annotations" / f"{split}.json").is_file()
        for folder in ("masks", "instances"):
            assert sorted(p.stem for p in (root / folder / split).glob("*.png")) == names
    assert not (root / "labels").exists() and not (root / "data.yaml").exists()
    assert not [p for p in root.parent.iterdir() if p.name != "cells"]  # the temporary sibling is gone


def test_images_are_16_bit_with_12_bit_counts(cells):
    root, _ = cells
    for path in sorted((root / "images").rglob("*.png")):
        mode, image = _read(path)
        assert mode == "I;16" and image.dtype == np.uint16 and image.shape == (SIZE, SIZE)
        # /65535 would show it nearly black; 8-bit clipping would saturate the cells
        assert 0 < image.min() and image.max() > 1000 and image.max() <= 4095


# pycocotools decodes (annToMask) through a numpy 1 __array__ protocol that numpy 2 warns about, once per mask
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_masks_instances_and_coco_agree(cells):
    from pycocotools.coco import COCO

    root, summary = cells
    total = 0
    for split in ("train", "val"):
        coco = COCO(str(root / "annotations" / f"{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cell"]
        assert len(coco.getImgIds()) == summary["images"][split]
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            assert info["file_name"].startswith(f"{split}/") and (info["width"], info["height"]) == (SIZE, SIZE)
            mode, ids = _read(root / "instances" / info["file_name"])
            _, mask = _read(root / "masks" / info["file_name"])
            assert ids.dtype == np.uint16 and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1} and np.array_equal(mask == 1, ids > 0)
            count = int(ids.max())
            assert 1 <= count <= 40 and set(np.unique(ids)) == set(range(count + 1))  # contiguous ids 1..K
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert len(anns) == count
            for k, ann in enumerate(anns, start=1):  # annotations in id order
                visible = ids == k
                assert np.array_equal(coco.annToMask(ann).astype(bool), visible)
                assert ann["category_id"] == 1 and ann["iscrowd"] == 0 and ann["area"] == visible.sum()
                x, y, w, h = ann["bbox"]
                rows, cols = np.nonzero(visible)
                assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
            total += count
    assert total == summary["objects"]


def test_cells_touch(cells):
    root, _ = cells
    touching = 0
    for path in sorted((root / "instances").rglob("*.png")):
        _, ids = _read(path)
        right = (ids[:, 1:] != ids[:, :-1]) & (ids[:, 1:] > 0) & (ids[:, :-1] > 0)
        down = (ids[1:] != ids[:-1]) & (ids[1:] > 0) & (ids[:-1] > 0)
        touching += bool(right.any() or down.any())
    assert touching >= 2


def test_deterministic_and_independent_of_n(tmp_path, cells):
    root, _ = cells
    again = tmp_path / "again"
    synth_dataset("cells", again, n=N, imgsz=SIZE, seed=0, progress=False)
    assert _files(again) == _files(root)
    # the first images do not depend on --n (which split they land in may)
    fewer = tmp_path / "fewer"
    synth_dataset("cells", fewer, n=3, imgsz=SIZE, seed=0, progress=False)
    where = {name: split for split, names in _stems(root).items() for name in names}
    for split, names in _stems(fewer).items():
        for name in names:
            for folder in ("images", "instances"):
                assert (fewer / folder / split / f"{name}.png").read_bytes() == \
                       (root / folder / where[name] / f"{name}.png").read_bytes()
    other = tmp_path / "other"
    synth_dataset("cells", other, n=N, imgsz=SIZE, seed=1, progress=False)
    assert _files(other)["annotations/train.json"] != _files(root)["annotations/train.json"]


def test_cli(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cells"
    code, _, err = run_cli(["data", "synth", "cells", "--n", "3", "--imgsz", "64", "--out", out, "--val-fraction", "0.34"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert "2 train + 1 val images" in err and "instances/" in err
    code, _, err = run_cli(["data", "synth", "cells", "--task", "detect", "--n", "2", "--out", tmp_path / "x"], monkeypatch, capsys)
    assert code == 2 and "--task detect" in err and "segmentation" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
