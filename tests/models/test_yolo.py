"""cnnkit's YOLO-style detector: box coding, the task-aligned assigner on hand-made cases, the losses,
mosaic, and the inference path (original-pixel boxes, BatchNorm folding)."""

from __future__ import annotations

import pytest
import torch

from cnnkit.models.yolo import (
    STRIDES,
    YOLO_SCALES,
    anchor_points,
    build_yolo,
    decode_boxes,
    distances_from_logits,
    encode_boxes,
    fuse_batchnorm,
)
from cnnkit.models.yolo_loss import distribution_focal_loss, task_aligned_assign, yolo_loss

IMGSZ = 320
SHAPES = [(IMGSZ // s, IMGSZ // s) for s in STRIDES]


def test_anchor_points_cover_every_level_row_major():
    points, strides = anchor_points(SHAPES, torch.device("cpu"))
    assert points.shape == (40 * 40 + 20 * 20 + 10 * 10, 2)
    assert points[0].tolist() == [4.0, 4.0] and points[1].tolist() == [12.0, 4.0] and points[40].tolist() == [4.0, 12.0]
    assert points[1600].tolist() == [8.0, 8.0] and strides[1600].item() == 16
    assert points[-1].tolist() == [304.0, 304.0] and strides[-1].item() == 32


def test_decoding_inverts_encoding():
    torch.manual_seed(0)
    points, strides = anchor_points(SHAPES, torch.device("cpu"))
    distances = torch.rand(len(points), 4) * 10  # in strides
    boxes = decode_boxes(points, distances, strides)
    assert torch.allclose(encode_boxes(points, boxes, strides), distances, atol=1e-4)
    # a box around its cell: left/top/right/bottom distances as drawn
    box = decode_boxes(points[:1], torch.tensor([[1.0, 2.0, 3.0, 4.0]]), strides[:1])
    assert box.tolist() == [[4 - 8.0, 4 - 16.0, 4 + 24.0, 4 + 32.0]]


def test_dfl_expectation_and_loss():
    bins = 16
    logits = torch.full((1, 4 * bins), -30.0)
    for side, k in enumerate((0, 3, 7, 15)):
        logits[0, side * bins + k] = 30.0
    assert distances_from_logits(logits, bins)[0].tolist() == pytest.approx([0.0, 3.0, 7.0, 15.0], abs=1e-4)
    # the loss is smallest when the two bins around the distance share the mass as interpolation says
    target = torch.tensor([[2.25, 2.25, 2.25, 2.25]])
    right = torch.full((1, 4, bins), -30.0)
    right[..., 2], right[..., 3] = torch.log(torch.tensor(0.75)), torch.log(torch.tensor(0.25))
    wrong = torch.full((1, 4, bins), -30.0)
    wrong[..., 5] = 0.0
    assert distribution_focal_loss(right, target).item() < distribution_focal_loss(wrong, target).item()


def _predictions(gt: torch.Tensor, accurate_stride: int, num_classes: int = 3):
    """Scores 0.5 everywhere; the cells of one level predict the true box exactly, the others a small
    box around their own centre."""
    points, strides = anchor_points(SHAPES, torch.device("cpu"))
    boxes = torch.cat([points - 2, points + 2], dim=1)
    on_level = strides[:, 0] == accurate_stride
    boxes[on_level] = gt
    scores = torch.full((1, len(points), num_classes), 0.5)
    return scores, boxes[None], points, strides


def test_assigner_picks_the_level_and_cells_that_predict_the_box():
    gt = torch.tensor([100.0, 100.0, 164.0, 164.0])
    scores, boxes, points, strides = _predictions(gt, accurate_stride=16)
    result = task_aligned_assign(scores, boxes, points, strides, torch.tensor([[2]]), gt[None, None], torch.tensor([[True]]))
    chosen = result.foreground[0].nonzero()[:, 0]
    assert len(chosen) == 10  # topk
    assert (strides[chosen, 0] == 16).all()
    centres = points[chosen]
    assert ((centres > 100) & (centres < 164)).all()  # cells inside the box
    assert torch.equal(result.target_boxes[0, chosen], gt.expand(10, 4))
    targets = result.target_scores[0, chosen]
    assert (targets[:, 2] > 0).all() and (targets[:, [0, 1]] == 0).all()
    assert targets[:, 2].max().item() == pytest.approx(1.0, abs=1e-4)  # the best cell's IoU
    assert result.target_scores[0][~result.foreground[0]].sum() == 0


def test_assigner_follows_the_predictions_to_another_level():
    gt = torch.tensor([96.0, 96.0, 224.0, 224.0])
    scores, boxes, points, strides = _predictions(gt, accurate_stride=32)
    result = task_aligned_assign(scores, boxes, points, strides, torch.tensor([[0]]), gt[None, None], torch.tensor([[True]]))
    chosen = result.foreground[0].nonzero()[:, 0]
    assert len(chosen) and (strides[chosen, 0] == 32).all()


def test_assigner_resolves_shared_cells_and_ignores_padding():
    points, strides = anchor_points(SHAPES, torch.device("cpu"))
    small = torch.tensor([140.0, 140.0, 180.0, 180.0])
    large = torch.tensor([100.0, 100.0, 220.0, 220.0])
    boxes = torch.cat([points - 2, points + 2], dim=1)
    near_small = (points - 160).abs().amax(1) < 20
    boxes[near_small] = small  # the cells in the small box predict it: they overlap it most
    gt = torch.stack([large, small, torch.zeros(4)])[None]
    result = task_aligned_assign(torch.full((1, len(points), 2), 0.5), boxes[None], points, strides,
                                 torch.tensor([[0, 1, 1]]), gt, torch.tensor([[True, True, False]]))
    shared = result.foreground[0] & near_small
    assert shared.any()
    assert (result.gt_index[0][shared] == 1).all()
    assert (result.gt_index[0][result.foreground[0]] != 2).all()  # the padded box learns nothing


def test_assigner_gives_a_thin_box_candidates_and_no_box_nothing():
    points, strides = anchor_points(SHAPES, torch.device("cpu"))
    thin = torch.tensor([[[101.0, 50.0, 103.0, 250.0]]])  # 2 px wide: no cell centre inside it
    boxes = torch.cat([points - 2, points + 2], dim=1)[None]
    scores = torch.full((1, len(points), 1), 0.5)
    result = task_aligned_assign(scores, boxes, points, strides, torch.tensor([[0]]), thin, torch.tensor([[True]]))
    assert result.foreground.any()
    empty = task_aligned_assign(scores, boxes, points, strides, torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4),
                                torch.zeros(1, 0, dtype=torch.bool))
    assert not empty.foreground.any() and empty.target_scores.sum() == 0


@pytest.mark.parametrize("options", [{}, {"dfl": False, "box_loss": "giou", "cls_loss": "varifocal"}])
def test_loss_decreases_on_a_fixed_batch(options):
    torch.manual_seed(0)
    model = build_yolo("yolo_n", 2, 128, **options).train()
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    for image, (x0, y0) in zip(images, ((20, 30), (60, 10))):
        image[:, y0:y0 + 40, x0:x0 + 30] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 50.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[60.0, 10.0, 90.0, 50.0]]), "labels": torch.tensor([2])}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002)
    totals = []
    for _ in range(25):
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert set(losses) == {"loss_cls", "loss_box", "loss_dfl"}
    assert totals[-1] < 0.6 * totals[0] and min(totals[-5:]) < min(totals[:5]), totals


def test_loss_without_objects_reaches_every_parameter():
    model = build_yolo("yolo_n", 3, 64).train()
    losses = model([torch.rand(3, 64, 64)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    sum(losses.values()).backward()
    assert losses["loss_box"].item() == 0 and losses["loss_cls"].item() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_raw_outputs_and_loss_shapes():
    model = build_yolo("yolo_n", 3, IMGSZ)
    raw, shapes = model.raw_outputs(torch.rand(2, 3, IMGSZ, IMGSZ))
    # one row per cell of the three levels (40², 20², 10²), each 4 x 16 DFL bins then 3 class logits
    assert model.reg_max == 16 and raw.shape == (2, 2100, 4 * 16 + 3) and [tuple(s) for s in shapes] == SHAPES
    outputs = raw.detach().requires_grad_()
    losses = yolo_loss(outputs, SHAPES, [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([3])},
                                         {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], 3, 16)
    assert set(losses) == {"loss_cls", "loss_box", "loss_dfl"}
    assert all(v.shape == () and torch.isfinite(v) and v > 0 for v in losses.values()), losses  # batch means, not per image
    sum(losses.values()).backward()
    box_grad, cls_grad = outputs.grad.split([4 * 16, 3], dim=-1)
    # the image with a box trains box bins and classes; the empty one only learns "no object" in its class logits
    assert box_grad[0].abs().sum() > 0 and cls_grad[0].abs().sum() > 0
    assert box_grad[1].abs().sum() == 0 and cls_grad[1].abs().sum() > 0
    # the box bins that learn belong to cells inside the box (10..60 px): level 0's cells are 8 px apart
    cells = box_grad[0].abs().sum(-1).nonzero().flatten()
    level0 = cells[cells < 1600]
    assert len(level0) and ((level0 % 40) * 8 + 4 >= 10).all() and ((level0 % 40) * 8 + 4 <= 60).all()


def test_inference_returns_boxes_in_the_input_pixels_and_folding_keeps_outputs():
    torch.manual_seed(0)
    model = build_yolo("yolo_n", 4, 160, score_thresh=0.0, max_det=50).eval()
    images = [torch.rand(3, 240, 400), torch.rand(3, 100, 80)]  # resized to 160 on the longer side inside
    with torch.no_grad():
        found = model(images)
        fused = fuse_batchnorm(model)(images)
    for image, det, det_fused in zip(images, found, fused):
        h, w = image.shape[-2:]
        assert det["boxes"].shape == (50, 4) and det["scores"].shape == (50,)
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all() and (det["boxes"] >= 0).all()
        assert det["labels"].min() >= 1 and det["labels"].max() <= 4
        assert torch.allclose(det["scores"], det_fused["scores"], atol=1e-4)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fuse_batchnorm(model).modules()) == 0


def test_scales_grow_and_cost_is_counted():
    from cnnkit.models.detectors import model_cost

    costs = {name: model_cost(build_yolo(name, 5, 128), 128) for name in YOLO_SCALES}
    assert costs["yolo_n"][0] < costs["yolo_s"][0] < costs["yolo_m"][0]
    assert 0 < costs["yolo_n"][1] < costs["yolo_s"][1] < costs["yolo_m"][1]
    params, gflops = model_cost(build_yolo("yolo_n", 5, 256), 256)
    assert params == costs["yolo_n"][0] and gflops == pytest.approx(4 * costs["yolo_n"][1], rel=0.05)


def test_timm_backbone_and_bad_backbones():
    from cnnkit.errors import CnnkitError

    from cnnkit.models import backbone_module

    model = build_yolo("yolo_n", 2, 128, backbone="resnet18")
    assert backbone_module(model) == "backbone.body"
    assert model([torch.rand(3, 128, 128)], [{"boxes": torch.tensor([[5.0, 5.0, 50.0, 50.0]]), "labels": torch.tensor([1])}])
    with pytest.raises(CnnkitError, match="--backbone resnet_nope"):
        build_yolo("yolo_n", 2, 128, backbone="resnet_nope")
    with pytest.raises(CnnkitError, match="no pretrained weights"):
        build_yolo("yolo_n", 2, 128, pretrained=True)


def test_mosaic_moves_boxes_with_their_pixels():
    from cnnkit.tasks.detect.task import mosaic

    torch.manual_seed(1)
    samples = []
    for k in range(4):
        image = torch.zeros(3, 96, 128)
        x0, y0 = 10 + 20 * k, 20 + 5 * k
        image[:, y0:y0 + 30, x0:x0 + 40] = 1.0
        samples.append((image, {"boxes": torch.tensor([[x0, y0, x0 + 40, y0 + 30]], dtype=torch.float32),
                                "labels": torch.tensor([k + 1])}))
    for _ in range(20):
        image, target = mosaic(samples, 128)
        assert image.shape == (3, 128, 128)
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 128)).all()
        for box in target["boxes"].round().long():
            patch = image[0, box[1]:box[3], box[0]:box[2]]
            assert patch.numel() and patch.mean() > 0.95  # the white rectangle is where its box says


def test_mosaic_set_turns_off_for_the_last_epochs():
    from cnnkit.tasks.detect.task import MosaicSet

    base = [(torch.zeros(3, 64, 64), {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}, i)
            for i in range(4)]
    mosaic_set = MosaicSet(base, 64, 1.0, epochs=10, close_epochs=2)
    mosaic_set.set_epoch(7)
    assert mosaic_set[0][1]["boxes"].shape[0] >= 1 and mosaic_set.active
    mosaic_set.set_epoch(8)
    assert not mosaic_set.active and mosaic_set[2] is base[2]


def test_one_class_at_a_small_size_builds_with_probability_priors():
    """At 64 px the stride-32 level has 4 cells, fewer than the 5 objects the prior spreads: the prior
    must stay a probability (it was log of a negative number)."""
    import math

    from cnnkit.models.yolo import build_yolo

    model = build_yolo("yolo_n", num_classes=1, imgsz=64)
    biases = [branch[-1].bias for branch in model.head.cls]
    assert all(torch.isfinite(b).all() for b in biases)
    assert all(float(b.max()) <= math.log(0.5 / 0.5) + 1e-6 for b in biases)
