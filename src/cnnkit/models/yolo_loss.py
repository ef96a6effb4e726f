"""Training targets and losses of the YOLO-style detector (``models/yolo.py``).

Label assignment is dynamic: which cells learn a given true box depends on how well they already
predict it. Task-aligned assignment (Feng et al. 2021, TOOD): for a true box of class c, every cell
whose centre lies inside it (or within a stride of its centre) is a candidate with the alignment

    t = score(c) ** alpha * IoU(predicted box, true box) ** beta          (alpha 1, beta 6)

and its ``topk`` best candidates become positives. A cell claimed by several boxes keeps the one it
overlaps most. A positive's classification target is t rescaled so that the box's best cell gets
the box's best IoU: the class score learns to predict localisation quality, which is what ranks
detections for NMS and mAP.

Losses, each summed and divided by the sum of the classification targets:
    cls  BCE (or varifocal: negatives weighted by alpha * p ** gamma, positives by their target)
    box  1 - CIoU (or GIoU), torchvision.ops, weighted by the positive's target
    dfl  distribution focal loss: the two bins around the true distance, by linear interpolation
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnkit.models.yolo_ops import anchor_points, decode_boxes, distances_from_logits, encode_boxes

TOPK, ALPHA, BETA = 10, 1.0, 6.0
GAIN_BOX, GAIN_CLS, GAIN_DFL = 7.5, 0.5, 1.5
VARIFOCAL_ALPHA, VARIFOCAL_GAMMA = 0.75, 2.0
EPS = 1e-9


@dataclass
class Assignment:
    foreground: torch.Tensor     # [B, N] bool: the cell learns a box
    gt_index: torch.Tensor       # [B, N] which true box (meaningful where foreground)
    target_boxes: torch.Tensor   # [B, N, 4] xyxy pixels
    target_scores: torch.Tensor  # [B, N, C] the rescaled alignment at the box's class, else 0


def pairwise_iou(gt_boxes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """[B, M, 4] x [B, N, 4] -> [B, M, N] IoU (torchvision's box_iou, batched)."""
    lt = torch.maximum(gt_boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(gt_boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_gt = (gt_boxes[..., 2:] - gt_boxes[..., :2]).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_gt[:, :, None] + area[:, None, :] - inter + EPS)


@torch.no_grad()
def task_aligned_assign(scores: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, gt_labels: torch.Tensor,
                        gt_boxes: torch.Tensor, gt_valid: torch.Tensor, topk: int = TOPK, alpha: float = ALPHA,
                        beta: float = BETA) -> Assignment:
    """``scores`` [B, N, C] class probabilities and ``boxes`` [B, N, 4] predicted xyxy of every cell,
    ``points`` [N, 2] the cell centres and ``strides`` [N, 1] their levels' strides; true boxes padded to M per image: ``gt_labels`` [B, M]
    (0-based), ``gt_boxes`` [B, M, 4], ``gt_valid`` [B, M]."""
    batch, cells, num_classes = scores.shape
    if gt_boxes.shape[1] == 0:
        return Assignment(torch.zeros(batch, cells, dtype=torch.bool, device=scores.device),
                          torch.zeros(batch, cells, dtype=torch.long, device=scores.device),
                          torch.zeros(batch, cells, 4, device=scores.device), torch.zeros_like(scores))
    x, y, reach = points[:, 0], points[:, 1], strides[:, 0]
    inside = (x > gt_boxes[..., 0:1]) & (x < gt_boxes[..., 2:3]) & (y > gt_boxes[..., 1:2]) & (y < gt_boxes[..., 3:4])
    # and the cells nearest the box's centre on every level, so that a box thinner than a stride still has candidates
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    near = ((x - centre[..., 0:1]).abs() < reach) & ((y - centre[..., 1:2]).abs() < reach)
    inside = (inside | near) & gt_valid[..., None]                                      # [B, M, N]
    ious = pairwise_iou(gt_boxes, boxes).clamp(min=0)                                    # [B, M, N]
    labels = gt_labels.clamp(min=0)
    class_scores = scores.gather(2, labels[:, None, :].expand(batch, cells, -1)).transpose(1, 2)  # [B, M, N]
    align = class_scores.pow(alpha) * ious.pow(beta) * inside
    top = align.topk(min(topk, cells), dim=-1).indices
    candidate = torch.zeros_like(inside).scatter_(-1, top, True) & inside
    # a cell claimed by several boxes keeps the one it overlaps most
    claimed = candidate.sum(1)
    if (claimed > 1).any():
        best = torch.where(candidate, ious, torch.full_like(ious, -1.0)).argmax(1)      # [B, N]
        best_mask = F.one_hot(best, gt_boxes.shape[1]).transpose(1, 2).bool()
        candidate = torch.where((claimed > 1)[:, None, :], candidate & best_mask, candidate)
    foreground = candidate.any(1)
    gt_index = candidate.to(torch.uint8).argmax(1)
    target_labels = labels.gather(1, gt_index)
    target_boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
    align = align * candidate
    best_align = align.amax(-1, keepdim=True)
    best_iou = (ious * candidate).amax(-1, keepdim=True)
    # early on IoU ** 6 makes every alignment tiny (1e-16 for a 12-px box under a 120-px first guess): an
    # absolute epsilon here would zero the targets, and with them the box loss's weight, for good
    quality = (align / best_align.clamp(min=1e-30) * best_iou).amax(1)                 # [B, N]
    target_scores = F.one_hot(target_labels, num_classes).to(scores.dtype) * (quality * foreground)[..., None]
    return Assignment(foreground, gt_index, target_boxes, target_scores)


def pad_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image boxes and labels -> (labels [B, M], boxes [B, M, 4], valid [B, M]), M the most boxes."""
    most = max((len(t["labels"]) for t in targets), default=0)
    labels = torch.zeros(len(targets), most, dtype=torch.long, device=device)
    boxes = torch.zeros(len(targets), most, 4, device=device)
    valid = torch.zeros(len(targets), most, dtype=torch.bool, device=device)
    for i, target in enumerate(targets):
        n = len(target["labels"])
        labels[i, :n] = target["labels"].to(device) - 1  # the detection task's labels are 1..C
        boxes[i, :n] = target["boxes"].to(device).float()
        valid[i, :n] = True
    return labels, boxes, valid


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Summed BCE against the soft targets; varifocal re-weights it (Zhang et al. 2021, VarifocalNet)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if kind == "varifocal":
        probs = logits.detach().sigmoid()
        weight = torch.where(targets > 0, targets, VARIFOCAL_ALPHA * probs.pow(VARIFOCAL_GAMMA))
        loss = loss * weight
    return loss.sum()


def distribution_focal_loss(logits: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """[P, 4, R] bin logits, [P, 4] true distances in strides (within 0..R-1) -> [P]: cross-entropy
    towards the two bins around each distance, weighted by closeness (Li et al. 2020)."""
    bins = logits.shape[-1]
    distances = distances.clamp(0, bins - 1 - 0.01)
    left = distances.floor().long()
    right_weight = distances - left
    flat = logits.reshape(-1, bins)
    loss = (F.cross_entropy(flat, left.reshape(-1), reduction="none") * (1 - right_weight).reshape(-1)
            + F.cross_entropy(flat, (left + 1).reshape(-1), reduction="none") * right_weight.reshape(-1))
    return loss.view(-1, 4).mean(-1)


def yolo_loss(outputs: torch.Tensor, shapes: list[tuple[int, int]], targets: list[dict[str, torch.Tensor]], num_classes: int,
              reg_max: int, box_loss: str = "ciou", cls_loss: str = "bce") -> dict[str, torch.Tensor]:
    """The weighted loss parts of a batch: raw head outputs [B, N, 4 * reg_max + C] on the levels'
    ``shapes``; targets in the network's input pixels, labels 1..C."""
    from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

    outputs = outputs.float()
    points, strides = anchor_points(shapes, outputs.device)
    box_logits, cls_logits = outputs.split([4 * reg_max, num_classes], dim=-1)
    pred_boxes = decode_boxes(points, distances_from_logits(box_logits, reg_max), strides)
    gt_labels, gt_boxes, gt_valid = pad_targets(targets, outputs.device)
    assigned = task_aligned_assign(cls_logits.detach().sigmoid(), pred_boxes.detach(), points, strides, gt_labels, gt_boxes, gt_valid)
    normaliser = assigned.target_scores.sum().clamp(min=1.0)
    losses = {"loss_cls": GAIN_CLS * classification_loss(cls_logits, assigned.target_scores, cls_loss) / normaliser}
    foreground = assigned.foreground
    zero = box_logits.sum() * 0.0  # keeps every parameter in the graph (DDP) when no cell is positive
    if foreground.any():
        weight = assigned.target_scores.sum(-1)[foreground]
        iou_loss = complete_box_iou_loss if box_loss == "ciou" else generalized_box_iou_loss
        per_box = iou_loss(pred_boxes[foreground], assigned.target_boxes[foreground], reduction="none")
        losses["loss_box"] = GAIN_BOX * (per_box * weight).sum() / normaliser
        if reg_max > 1:
            cell = foreground.nonzero()[:, 1]
            true_distances = encode_boxes(points[cell], assigned.target_boxes[foreground], strides[cell])
            per_box = distribution_focal_loss(box_logits[foreground].view(-1, 4, reg_max), true_distances)
            losses["loss_dfl"] = GAIN_DFL * (per_box * weight).sum() / normaliser
        else:
            losses["loss_dfl"] = zero
    else:
        losses["loss_box"], losses["loss_dfl"] = zero, zero
    return losses
