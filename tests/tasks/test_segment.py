"""Segmentation pieces without training: the masks reader and its checks, the models, the losses,
whole-image inference (resized and tiled) and the overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from cnnkit.errors import CnnkitError


def _write_dataset(root: Path, sizes=((40, 30), (50, 40), (36, 36)), classes=("background", "disc", "bar"), split=True,
                   values: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(sizes):
        part = ("train" if k < len(sizes) - 1 else "val") if split else ""
        (root / "images" / part).mkdir(parents=True, exist_ok=True)
        (root / "masks" / part).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / part / f"im{k}.jpg")
        mask = rng.integers(0, values, (h, w)).astype(np.uint8)
        mask[0, :3] = 255
        Image.fromarray(mask).save(root / "masks" / part / f"im{k}.png")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_reader_pairs_images_and_masks_and_counts_pixels(tmp_path):
    from cnnkit.data.segmentation import load_segmentation

    data = load_segmentation(_write_dataset(tmp_path / "d"))
    assert data.classes == ["background", "disc", "bar"]
    assert [s.image.name for s in data.splits["train"]] == ["im0.jpg", "im1.jpg"]
    assert data.splits["val"][0].mask.name == "im2.png"
    counts = data.pixel_counts["train"]
    assert counts.sum() == 40 * 30 + 50 * 40 - 6  # the ignored pixels are not counted


def test_reader_cuts_val_from_a_flat_folder_and_infers_classes(tmp_path):
    from cnnkit.data.segmentation import load_segmentation

    root = _write_dataset(tmp_path / "d", sizes=((32, 32),) * 5, classes=(), split=False)
    data = load_segmentation(root, val_split=0.2, seed=0)
    assert len(data.splits["train"]) == 4 and len(data.splits["val"]) == 1
    assert data.classes == ["background", "class_1", "class_2"]


@pytest.mark.parametrize("damage,expected", [
    ("size", "mask is 20x30 but"),
    ("value", "class index 7 but"),
    ("rgb", "RGB colour mask"),
    ("missing", "no mask"),
])
def test_reader_refuses_bad_masks_in_one_line(tmp_path, damage, expected):
    from cnnkit.data.segmentation import load_segmentation

    root = _write_dataset(tmp_path / "d")
    mask_path = root / "masks/train/im0.png"
    if damage == "size":
        Image.fromarray(np.zeros((30, 20), np.uint8)).save(mask_path)
    elif damage == "value":
        mask = np.zeros((30, 40), np.uint8)
        mask[5, 5] = 7
        Image.fromarray(mask).save(mask_path)
    elif damage == "rgb":
        Image.fromarray(np.full((30, 40, 3), (128, 0, 0), np.uint8)).save(mask_path)
    else:
        mask_path.unlink()
    with pytest.raises(CnnkitError) as caught:
        load_segmentation(root)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert ("im0.png" in message) or ("im0.jpg" in message)
    if damage == "size":
        assert "im0.jpg is 40x30" in message


def test_palette_masks_are_index_masks(tmp_path):
    from cnnkit.data.segmentation import SegmentSample, read_mask

    index = np.array([[0, 1], [2, 255]], np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    image.save(tmp_path / "m.png")
    assert (read_mask(SegmentSample(tmp_path / "x.png", tmp_path / "m.png")) == index).all()


@pytest.mark.parametrize("model,encoder", [("unet", "resnet18"), ("fpn", "mobilenet_v3"), ("pan", "resnet18"),
                                           ("deeplabv3plus", "efficientnet_b0"), ("fcn", "resnet18"), ("unet", "vgg16")])
def test_models_map_images_to_logits_of_the_same_size(model, encoder):
    from cnnkit.models import backbone_module
    from cnnkit.models.segmenters import build_segmenter

    net = build_segmenter(model, encoder, 4).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 3, 128, 160))
    assert logits.shape == (1, 4, 128, 160)
    assert any(n.startswith(backbone_module(net) + ".") for n, _ in net.named_parameters())


def test_dilating_decoder_on_vgg_and_unknown_encoder_are_one_line():
    from cnnkit.models.segmenters import build_segmenter

    with pytest.raises(CnnkitError, match="dilates the encoder"):
        build_segmenter("deeplabv3plus", "vgg16", 3)
    with pytest.raises(CnnkitError, match="not a timm model"):
        build_segmenter("unet", "resnet_18", 3)
    with pytest.raises(CnnkitError, match="did you mean 'unet'"):
        build_segmenter("unnet", None, 3)
    with pytest.raises(CnnkitError, match="instance segmenter"):
        build_segmenter("maskrcnn", None, 3)


@pytest.mark.parametrize("kind", ["ce", "dice", "ce_dice", "focal"])
def test_losses_ignore_the_ignore_index_and_decrease(kind):
    from cnnkit.tasks.segment.task import segmentation_loss

    loss = segmentation_loss(kind, 3, 255)
    masks = torch.randint(0, 3, (2, 8, 8))
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    masked = masks.clone()
    masked[:, :4] = 255
    changed = logits.detach().clone()
    changed[:, :, :4] = torch.randn(2, 3, 4, 8) * 5  # only under ignored pixels
    assert loss(logits.detach(), masked)["loss"].item() == pytest.approx(loss(changed, masked)["loss"].item(), abs=1e-5)
    optimizer = torch.optim.Adam([logits], lr=0.3)
    first = loss(logits, masks)["loss"]
    for _ in range(20):
        optimizer.zero_grad()
        value = loss(logits, masks)["loss"]
        value.backward()
        optimizer.step()
    assert value.item() < 0.7 * first.item()


class _Local(nn.Module):
    """A translation-equivariant model (3x3 convolutions, zero padding) that records its input sizes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return self.net(x)


def test_window_starts_cover_the_side_flush_with_the_end():
    from cnnkit.tasks.segment.task import window_starts

    assert window_starts(100, 128, 96) == [0]
    assert window_starts(300, 128, 96) == [0, 96, 172]
    for length in (129, 255, 1000):
        starts = window_starts(length, 64, 48)
        assert starts[-1] + 64 == length and all(b - a <= 48 for a, b in zip(starts, starts[1:]))


def test_sliding_window_matches_the_whole_image_away_from_tile_borders():
    from cnnkit.tasks.segment.task import sliding_window

    model = _Local().eval()
    image = torch.randn(3, 150, 210)
    with torch.no_grad():
        whole = torch.softmax(model(image[None]), 1)[0]
        tiled = sliding_window(model, image, 64, overlap=0.5)
    assert tiled.shape == (3, 150, 210)
    assert torch.allclose(tiled.sum(0), torch.ones(150, 210), atol=1e-5)
    # the model sees 1 px around each pixel: only pixels on a tile's edge differ (zero padding there),
    # and with overlap the blend weights them down next to interior copies of the same pixel
    inner = (tiled - whole)[:, 1:-1, 1:-1].abs()
    assert (inner < 0.05).float().mean() > 0.97


def test_sliding_window_memory_is_bounded_by_the_window():
    from cnnkit.tasks.segment.task import sliding_window

    model = _Local().eval()
    image = torch.zeros(3, 1024, 768)
    probs = sliding_window(model, image, 128, overlap=0.25, batch=4)
    assert probs.shape == (3, 1024, 768)
    assert all(shape[0] <= 4 and shape[2:] == (128, 128) for shape in model.seen)
    assert sum(shape[0] for shape in model.seen) == 11 * 8  # rows at 0, 96, …, 864 and 896; columns 0, 96, …, 576 and 640


def test_images_smaller_than_the_window_are_padded_and_cropped_back():
    from cnnkit.tasks.segment.task import sliding_window

    model = _Local().eval()
    torch.manual_seed(1)
    small, wide = torch.randn(3, 40, 50), torch.randn(3, 40, 70)
    with torch.no_grad():
        probs = sliding_window(model, small, 64)
        direct = torch.softmax(model(small[None]), 1)[0]
        wide_probs = sliding_window(model, wide, 64)
        wide_direct = torch.softmax(model(wide[None]), 1)[0]
    assert probs.shape == (3, 40, 50) and wide_probs.shape == (3, 40, 70)
    assert model.seen[0] == (1, 3, 64, 64) and model.seen[2] == (2, 3, 64, 64)  # one window; two side by side
    # zeros added below and right are what the convolutions' own zero padding sees at the image's edge, so the
    # cropped-back window is the image's own segmentation, pixel for pixel (a crop from the wrong corner is not)
    torch.testing.assert_close(probs, direct, atol=1e-5, rtol=1e-5)
    # the same across two windows (at 0 and 6), away from the columns where one window ends
    inner = (wide_probs - wide_direct).abs()
    assert (inner < 1e-5).float().mean() > 0.97


def test_resized_inference_returns_each_image_at_its_own_size():
    from cnnkit.tasks.segment.task import Inference, segment_probabilities

    model = _Local().eval()
    with torch.no_grad():
        out = segment_probabilities(model, [torch.randn(3, 50, 80), torch.randn(3, 64, 64)], Inference(64))
    assert [tuple(p.shape) for p in out] == [(3, 50, 80), (3, 64, 64)]
    assert all(shape[2:] == (64, 64) for shape in model.seen)


def test_overlay_paints_classes_and_leaves_background():
    from cnnkit.tasks.segment.task import overlay, palette

    colours = palette(3)
    assert len({tuple(c) for c in colours}) == 3 and tuple(colours[0]) == (0, 0, 0)
    pixels = np.full((10, 10, 3), 100, np.uint8)
    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 2:6] = 1
    mask[8, 8] = 255
    out = overlay(pixels, mask, colours)
    assert (out[0, 0] == 100).all() and (out[8, 8] == 100).all()
    assert not (out[3, 3] == 100).all()


def test_a_classifiers_backbone_moves_into_the_encoder(tmp_path):
    """--backbone-from with a cnnkit classifier of the encoder's architecture, and --transfer linear
    keeps it frozen: the encoder of the trained segmenter holds the classifier's tensors."""
    import timm

    from cnnkit.engine.checkpoint import load_weights, save_weights
    from cnnkit.tasks.segment.api import Segmenter

    torch.manual_seed(1)
    classifier = timm.create_model("resnet18", num_classes=7)
    source = tmp_path / "clf.safetensors"
    save_weights(classifier, source, {"task": "classify", "model": "resnet18", "imgsz": 64, "class_names": list("abcdefg")})
    data = _write_dataset(tmp_path / "d", sizes=((64, 64),) * 3)
    seg = Segmenter("unet", encoder="resnet18", imgsz=64)
    run = seg.train(data=str(data), epochs=1, batch=2, workers=0, backbone_from=str(source), transfer="linear",
                    out=str(tmp_path / "run"), hd95=False)
    state, _ = load_weights(run.dir / "weights/best.safetensors")
    assert torch.equal(state["encoder.model.conv1.weight"], classifier.state_dict()["conv1.weight"])
    assert torch.equal(state["encoder.model.layer4.1.bn2.running_var"], classifier.state_dict()["layer4.1.bn2.running_var"])


def _nifti(path: Path, volume: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), str(path))
    return path


def test_nifti_volumes_are_one_sample_per_slice_and_predict_writes_each_slice(tmp_path):
    from cnnkit.data.segmentation import load_segmentation
    from cnnkit.tasks.segment.api import Segmenter
    from cnnkit.tasks.segment.task import Intensity, SegmentSet, collate_segmentation
    from cnnkit.augment.presets import dense_transforms

    rng = np.random.default_rng(0)
    root = tmp_path / "ct"
    for split, count in (("train", 2), ("val", 1)):
        for k in range(count):
            volume = rng.normal(40, 300, (48, 40, 3)).astype(np.int16)  # Hounsfield-like values, 3 slices
            labels = (rng.random((48, 40, 3)) > 0.7).astype(np.uint8)
            _nifti(root / "images" / split / f"case{k}.nii.gz", volume)
            _nifti(root / "masks" / split / f"case{k}.nii.gz", labels)
    (root / "classes.txt").write_text("background\nlesion\n")
    data = load_segmentation(root)
    assert len(data.splits["train"]) == 6 and {s.slice_index for s in data.splits["train"]} == {0, 1, 2}
    assert data.splits["val"][2].name == "case0_0002"
    dataset = SegmentSet(data.splits["train"], dense_transforms(None, False), Intensity("window", (-160.0, 240.0)))
    image, mask, index = dataset[4]
    assert image.shape == (3, 48, 40) and mask.shape == (48, 40) and set(mask.unique().tolist()) <= {0, 1}
    assert collate_segmentation([dataset[0], dataset[1]])[0].shape == (2, 3, 48, 40)

    seg = Segmenter("unet", ["background", "lesion"], encoder="resnet18", imgsz=64)
    results = seg.predict(root / "images/val/case0.nii.gz", out=tmp_path / "pred", device="cpu")
    assert [r["slice"] for r in results] == [0, 1, 2]
    for k in range(3):
        written = np.asarray(Image.open(tmp_path / "pred/masks" / f"case0_{k:04d}.png"))
        assert written.shape == (48, 40)
