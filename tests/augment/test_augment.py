"""Augmentation: boxes and masks stay on the pixels they describe under every geometric operation,
vanished boxes are dropped with their labels, presets and options are checked, MixUp/CutMix give
soft labels the loss accepts, and the preview is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_iou

from cnnkit.augment.presets import (MASK_IGNORE, AugmentSpec, OPERATIONS, augment_spec, batch_mixer, classify_transforms,
                                    dense_transforms, preset)
from cnnkit.errors import CnnkitError
from tests.conftest import run_cli

H, W = 96, 128
GEOMETRIC = {
    "fliplr": AugmentSpec(fliplr=1.0),
    "flipud": AugmentSpec(flipud=1.0),
    "rotation": AugmentSpec(degrees=40),
    "translate": AugmentSpec(translate=0.25),
    "scale": AugmentSpec(scale=0.4),
    "crop": AugmentSpec(crop_scale=0.3),
    "all": AugmentSpec(fliplr=0.5, flipud=0.5, degrees=30, translate=0.2, scale=0.3, crop_scale=0.4),
}


def _rectangle_sample(rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A filled white rectangle on black, its box and its instance mask."""
    x0, y0 = int(rng.integers(5, W // 2)), int(rng.integers(5, H // 2))
    # large enough that the one-pixel blur of resampling its edges stays small against its area
    x1, y1 = x0 + int(rng.integers(36, W // 2 - 5)), y0 + int(rng.integers(28, H // 2 - 5))
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[y0:y1, x0:x1] = 255
    mask = np.zeros((1, H, W), np.uint8)
    mask[0, y0:y1, x0:x1] = 1
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32), format="XYXY", canvas_size=(H, W)),
              "labels": torch.tensor([3]), "masks": tv_tensors.Mask(torch.from_numpy(mask))}
    return Image.fromarray(pixels), target


def _pixel_box(filled: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(filled, as_tuple=True)
    return torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)


def _centroid(pixels: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(pixels).float().mean(0)


@pytest.mark.parametrize("name", list(GEOMETRIC))
@pytest.mark.parametrize("imgsz", [None, 192])
def test_box_covers_the_transformed_rectangle(name, imgsz):
    transform = dense_transforms(imgsz, True, GEOMETRIC[name], mean=None)
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(25):
        torch.manual_seed(seed)
        image, target = transform(*_rectangle_sample(rng))
        filled = image[0] > 0.5
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"]) == target["masks"].shape[0]
        if filled.sum() < 20:  # the rectangle (nearly) left the picture: its box must be gone or tiny
            assert len(boxes) == 0 or float((boxes[:, 2:] - boxes[:, :2]).prod()) < 60
            continue
        assert len(boxes) == 1, f"{name} seed {seed}: the box was dropped but {int(filled.sum())} pixels remain"
        iou = float(box_iou(boxes.as_subclass(torch.Tensor).float(), _pixel_box(filled)))
        # a rotated rectangle's axis-aligned box and the box of its rotated pixels agree closely too
        assert iou >= 0.9, f"{name} seed {seed}: box IoU {iou:.3f}"
        mask = target["masks"][0].bool()
        overlap = float((mask & filled).sum()) / float((mask | filled).sum())
        # legacy nearest (torchvision's mask resize) drifts 1.2 px here: caught
        drift = float((_centroid(mask) - _centroid(filled)).norm())
        assert overlap >= 0.95 and drift <= 0.75, f"{name} seed {seed}: mask IoU {overlap:.3f}, centroid {drift:.2f} px apart"
        assert target["labels"].tolist() == [3]
        checked += 1
    assert checked >= 15


def test_semantic_mask_is_filled_with_ignore_where_rotation_uncovers_the_border():
    image = Image.fromarray(np.full((H, W, 3), 200, np.uint8))
    mask = tv_tensors.Mask(torch.ones(H, W, dtype=torch.uint8))
    torch.manual_seed(1)
    out, target = dense_transforms(None, True, AugmentSpec(degrees=45), mean=None, mask_fill=MASK_IGNORE)(image, {"masks": mask})
    uncovered = out[0] == 0
    assert uncovered.any()
    assert set(target["masks"][uncovered].unique().tolist()) <= {255}
    assert (target["masks"][~uncovered] == 1).float().mean() > 0.97


def test_boxes_pushed_out_of_the_image_are_dropped_with_their_labels_and_masks():
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0, 6, 6], [40, 30, 90, 70]]), format="XYXY", canvas_size=(H, W))
    masks = tv_tensors.Mask(torch.zeros(2, H, W, dtype=torch.uint8))
    image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    transform = dense_transforms(None, True, AugmentSpec(translate=1.0), mean=None)
    dropped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        _, target = transform(image, {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
        out = target["boxes"].as_subclass(torch.Tensor)
        assert len(out) == len(target["labels"]) == target["masks"].shape[0]
        assert (out[:, 2:] - out[:, :2] >= 1).all()
        assert (out[:, 0] >= 0).all() and (out[:, 2] <= W).all() and (out[:, 1] >= 0).all() and (out[:, 3] <= H).all()
        dropped += 2 - len(out)
    assert dropped > 0


def test_colour_operations_move_no_box():
    rng = np.random.default_rng(3)
    image, target = _rectangle_sample(rng)
    spec = AugmentSpec(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, grayscale=1.0, blur=1.0, noise=1.0, illumination=1.0)
    _, out = dense_transforms(None, True, spec, mean=None)(image, target)
    assert torch.equal(out["boxes"].as_subclass(torch.Tensor), target["boxes"].as_subclass(torch.Tensor))
    assert torch.equal(out["masks"], target["masks"])


@pytest.mark.parametrize("op, value", [("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.4), ("hue", 0.2), ("grayscale", 1.0),
                                       ("blur", 1.0), ("noise", 1.0), ("erasing", 1.0), ("illumination", 1.0),
                                       ("fliplr", 1.0), ("degrees", 30), ("crop_scale", 0.3)])
def test_every_operation_changes_the_image(op, value):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pixels[:, :32, 0] = 250  # some colour and structure, so that every operation has something to change
    image = Image.fromarray(pixels)
    plain = classify_transforms(48, False, mean=None)(image)
    changed = 0
    for seed in range(5):
        torch.manual_seed(seed)
        out = classify_transforms(48, True, augment_spec("none", **{op: value}), mean=None)(image)
        assert out.shape == plain.shape and out.dtype == torch.float32
        changed += float((out - plain).abs().mean()) > 0.005
    assert changed >= 3, f"{op} changed the image in only {changed} of 5 draws"


def test_presets_grow_stronger_and_options_override_them():
    light, medium, heavy = (preset(name) for name in ("light", "medium", "heavy"))
    assert preset("none") == AugmentSpec()
    assert len(light.active()) < len(medium.active()) < len(heavy.active())
    assert heavy.degrees > medium.degrees >= light.degrees
    assert heavy.mixup > 0 and preset("heavy", "detect").mixup == 0 and preset("heavy", "embed").cutmix == 0
    spec = augment_spec("heavy", degrees=0, erasing=None)
    assert spec.degrees == 0 and spec.erasing == heavy.erasing


@pytest.mark.parametrize("call, message", [
    (lambda: augment_spec("strong"), "unknown augmentation preset 'strong'"),
    (lambda: augment_spec("light", rotate=10), "unknown augmentation operation 'rotate'"),
    (lambda: augment_spec("light", erasing=1.5), "probability must be between 0 and 1"),
    (lambda: augment_spec("light", fliplr=-0.1), "probability must be between 0 and 1"),
    (lambda: augment_spec("light", crop_scale=0), "crop_scale must be above 0"),
    (lambda: augment_spec("light", "detect", mixup=0.2), "mixup and cutmix are for classification"),
])
def test_bad_augmentation_options_are_one_line_errors(call, message):
    with pytest.raises(CnnkitError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)
    if "unknown" in message:
        assert "valid" in error.value.hint


def test_mixup_and_cutmix_give_class_probabilities_that_the_loss_accepts():
    from cnnkit.tasks.classify.task import classification_loss

    torch.manual_seed(0)
    mixer = batch_mixer(AugmentSpec(mixup=0.4, cutmix=1.0), num_classes=5)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 5
    mixed, soft = mixer(images, labels)
    assert mixed.shape == images.shape and soft.shape == (8, 5)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    logits = torch.randn(8, 5)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(classification_loss(logits, soft), expected, atol=1e-6)
    weight = torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0])
    assert torch.isfinite(classification_loss(logits, soft, weight, 0.1, 2.0))
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    assert torch.allclose(classification_loss(logits, one_hot, weight, 0.0, 2.0), classification_loss(logits, labels, weight, 0.0, 2.0), atol=1e-6)
    assert batch_mixer(AugmentSpec(), 5) is None


def test_preview_is_reproducible_and_bad_options_exit_2(digits_root, tmp_path, monkeypatch, capsys):
    first, second, third = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for out, seed in ((first, 0), (second, 0), (third, 1)):
        code, _, err = run_cli(["augment", "preview", "--data", digits_root, "--preset", "heavy", "-n", "6", "--seed", seed,
                                "--imgsz", "48", "--out", out], monkeypatch, capsys)
        assert code == 0, err
    pictures = [np.asarray(Image.open(p)) for p in (first, second, third)]
    assert np.array_equal(pictures[0], pictures[1])
    assert pictures[0].shape != pictures[2].shape or not np.array_equal(pictures[0], pictures[2])
    for args, message in ((["--erasing", "1.5"], "probability must be between 0 and 1"),
                          (["--task", "segment", "--cutmix", "1"], "mixup and cutmix are for classification"),
                          (["-n", "0"], "-n must be at least 1"),
                          (["--data", tmp_path / "missing"], "missing")):
        code, _, err = run_cli(["augment", "preview", "--data", digits_root, "--out", third, *args], monkeypatch, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


LIME_OVER_WHITE = (140, 255, 140)  # draw_segmentation_masks at alpha 0.45: 0.55 x white + 0.45 x lime (class 1)


def _coloured(pixels: np.ndarray, rgb, tolerance: int = 40) -> int:
    return int((np.abs(pixels.astype(int) - np.array(rgb)).sum(-1) < tolerance).sum())


def test_preview_draws_boxes_and_masks(tmp_path):
    from cnnkit.augment.preview import draw_sample, preview_grid

    image, target = _rectangle_sample(np.random.default_rng(1))
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    picture = draw_sample(pixels, target)
    assert picture.shape == (H, W, 3)
    x0, y0, x1, y1 = (int(v) for v in target["boxes"][0])
    assert tuple(picture[y0, x0 + 2]) == (255, 255, 0)  # the box outline, yellow, over the white rectangle
    # the instance mask blended in (45% lime over white) on the mask's pixels (but the outline and the label
    # "3" written inside the box's corner), nowhere else
    inside = picture[y0 + 1:y1 - 1, x0 + 1:x1 - 1].reshape(-1, 3)
    assert (np.abs(inside.astype(int) - LIME_OVER_WHITE).max(axis=1) <= 1).mean() > 0.97
    outside = np.ones((H, W), bool)
    outside[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = False
    assert (picture[outside] == 0).all()
    # a semantic mask: one colour per class present (class 2 dodger blue), 255 (ignore) left undrawn
    semantic = torch.zeros(H, W, dtype=torch.uint8)
    semantic[y0:y1, x0:x1] = 2
    semantic[:4] = 255
    picture = draw_sample(pixels, {"masks": tv_tensors.Mask(semantic)})
    blue = np.round(0.55 * 255 + 0.45 * np.array([30, 144, 255])).astype(int)
    assert (np.abs(picture[y0:y1, x0:x1].reshape(-1, 3).astype(int) - blue).max(axis=1) <= 1).all()
    assert (picture[semantic.numpy() == 255] == 0).all() and (picture[semantic.numpy() == 0] == 0).all()
    path = preview_grid([(image, target)] * 3, AugmentSpec(degrees=20, fliplr=0.5), tmp_path / "grid.png", imgsz=64)
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert _coloured(grid, LIME_OVER_WHITE) > 5000 and _coloured(grid, (255, 255, 0)) > 1000  # masks and boxes in the grid


def test_every_operation_has_a_train_option():
    from dataclasses import fields

    from cnnkit.tasks.classify.config import TrainConfig

    assert set(OPERATIONS) <= {f.name for f in fields(TrainConfig)}


def test_occlusion_hides_a_random_share_of_the_image_in_pieces():
    from cnnkit.augment.presets import OCCLUDED_FRACTION, RandomOcclusion

    torch.manual_seed(0)
    image = torch.rand(3, 64, 64)
    occlude = RandomOcclusion(1.0)
    shares = [float((occlude(image) != image).any(0).float().mean()) for _ in range(60)]
    # pieces overlap and the last one overshoots, so the share hidden spreads around the drawn target
    assert min(shares) >= 0.02 and max(shares) <= OCCLUDED_FRACTION[1] + 0.2
    assert 0.2 <= float(np.mean(shares)) <= 0.45
    assert torch.equal(RandomOcclusion(0.0)(image), image)


def _write_rectangles(root, layout: str, count: int = 3) -> None:
    """A tiny dataset of white rectangles in the segmentation, YOLO or COCO layout of DESIGN.md."""
    import json

    rng = np.random.default_rng(0)
    (root / "images" / "train").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "box"}]}
    for i in range(count):
        image, target = _rectangle_sample(rng)
        image.save(root / "images" / "train" / f"{i}.png")
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        if layout == "segment":
            (root / "masks" / "train").mkdir(parents=True, exist_ok=True)
            Image.fromarray(target["masks"][0].numpy()).save(root / "masks" / "train" / f"{i}.png")
        elif layout == "yolo":
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{i}.txt").write_text(
                f"0 {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} {(y1 - y0) / H}\n")
        else:
            coco["images"].append({"id": 100 + i, "file_name": f"train/{i}.png", "width": W, "height": H})
            coco["annotations"].append({"id": i, "image_id": 100 + i, "category_id": 7, "bbox": [x0, y0, x1 - x0, y1 - y0]})
    if layout == "coco":
        (root / "annotations").mkdir()
        (root / "annotations" / "train.json").write_text(json.dumps(coco))
    if layout == "yolo":
        (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [box]\n")


@pytest.mark.parametrize("layout", ["segment", "yolo", "coco"])
def test_preview_reads_and_draws_boxes_and_masks_of_dense_layouts(layout, tmp_path, monkeypatch, capsys):
    from cnnkit.augment.preview import dense_samples

    root = tmp_path / layout
    _write_rectangles(root, layout)
    samples = dense_samples(root, "train")
    assert len(samples) == 3
    path, read_target = samples[0]
    target = read_target()
    if layout == "segment":
        assert target["masks"].shape == (H, W) and target["masks"].max() == 1
    else:
        rectangle = np.asarray(Image.open(path))[..., 0] > 127
        ys, xs = np.nonzero(rectangle)
        assert np.allclose(target["boxes"][0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=0.01)
    out = tmp_path / f"{layout}.png"
    code, _, err = run_cli(["augment", "preview", "--data", root, "--preset", "heavy", "-n", "3", "--imgsz", "64", "--out", out],
                           monkeypatch, capsys)
    assert code == 0 and out.is_file(), err
    # the unaugmented halves show the masks blended over the white rectangles, or the boxes' yellow outlines
    grid = np.asarray(Image.open(out).convert("RGB"))
    if layout == "segment":
        assert _coloured(grid, LIME_OVER_WHITE) > 5000, _coloured(grid, LIME_OVER_WHITE)
    else:
        assert _coloured(grid, (255, 255, 0)) > 1000 and _coloured(grid, LIME_OVER_WHITE) < 1000
