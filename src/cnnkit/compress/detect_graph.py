"""Detectors as fixed-shape graphs, for `export`, `quantize` and `bench`, and the deployed graph back
as a detector that `detect val` and `detect predict` call like the eager one.

The graph takes a float RGB batch in 0..1, [B, 3, S, S] with S the weights' --imgsz (each image
letterboxed: its longer side resized to S and the rest padded with the ImageNet mean colour, which
is what the eager models pad with once they normalise; SSD stretches to S x S as it does in eager),
and returns the post-processed detections padded to ``max_det`` per image:

- ``boxes`` [B, max_det, 4] (x1, y1, x2, y2 in the S x S input's pixels),
- ``scores`` [B, max_det],
- ``labels`` [B, max_det] (int64; 1..C the classes, 0 an empty slot),
- ``masks`` [B, max_det, M, M] for Mask R-CNN: each detection's mask probabilities inside its box, as
  the mask head gives them (pasting them into the image, at its own size, is left to the caller, as
  the eager `segment val|predict` does: full-size masks would make the output as large as the image
  times max_det).

The YOLO-style detector's decoding and class-aware NMS are written with tensor operations only (one
NMS over the whole batch, boxes offset per image and class), so the graph exports through torch.export
to ONNX (NonMaxSuppression), torch.export and TorchScript, with a dynamic batch. torchvision's Faster
R-CNN, Mask R-CNN and SSD branch on data-dependent sizes inside their post-processing, which torch.export cannot
follow: they export through the TorchScript tracer (ONNX via torch.onnx's TorchScript-based exporter,
which torchvision's detection models are written for, and TorchScript), for a fixed batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.config import INSTANCE_MODELS
from cnnkit.errors import CnnkitError

OUTPUT_NAMES = ["boxes", "scores", "labels"]
GRAPH_CONF = 0.001  # low, so that mAP sees the whole precision-recall curve; predict filters at its --conf


def is_traced_family(model: str) -> bool:
    """torchvision's detectors, which only the TorchScript tracer can follow."""
    return not model.startswith("yolo")


def is_detection_graph(metadata: dict[str, Any]) -> bool:
    """Whether these weights export as a detection graph (letterboxed 0..1 input, padded detections
    out): the detectors, and Mask R-CNN (with its masks)."""
    return metadata.get("task") == "detect" or metadata.get("model") in INSTANCE_MODELS


def output_names(metadata: dict[str, Any]) -> list[str]:
    return OUTPUT_NAMES + ["masks"] if metadata.get("model") in INSTANCE_MODELS else list(OUTPUT_NAMES)


def exports_any_batch(metadata: dict[str, Any]) -> bool:
    """Whether the model of these weights can be exported with --dynamic-batch."""
    return not (is_detection_graph(metadata) and is_traced_family(str(metadata.get("model"))))


class YoloFeatures(nn.Module):
    """The YOLO-style detector's network alone: 0..1 batch in, raw outputs [B, N, 4 * reg_max + C] out.
    This is the part int8 quantization converts; decoding and NMS stay in float."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.backbone, self.neck, self.head = net.backbone, net.neck, net.head
        self.register_buffer("mean", net.mean.clone(), persistent=False)
        self.register_buffer("std", net.std.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.head(self.neck(self.backbone((x - self.mean) / self.std)))
        return torch.cat([level.flatten(2) for level in levels], dim=2).transpose(1, 2)


class YoloGraph(nn.Module):
    """YoloFeatures, then box decoding and class-aware NMS over the batch, padded to ``max_det``."""

    def __init__(self, net: nn.Module, max_det: int, iou: float, conf: float = GRAPH_CONF):
        super().__init__()
        self.features = YoloFeatures(net)
        self.num_classes, self.reg_max = net.num_classes, net.reg_max
        self.max_det, self.iou, self.conf = max_det, iou, conf

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from cnnkit.models.yolo import PRE_NMS_TOP, anchor_points, decode_boxes, distances_from_logits

        outputs = self.features(x).float()
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        shapes = [(height // stride, width // stride) for stride in (8, 16, 32)]
        points, strides = anchor_points(shapes, x.device)
        boxes = decode_boxes(points, distances_from_logits(outputs[..., : 4 * self.reg_max], self.reg_max), strides)
        limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=x.device)
        boxes = torch.minimum(boxes.clamp(min=0), limit)
        scores = outputs[..., 4 * self.reg_max:].sigmoid().flatten(1)  # [B, cells * C]
        # as in eager: the best (cell, class) pairs are the candidates (a cell may hold two classes)
        top_scores, top = scores.topk(min(PRE_NMS_TOP, scores.shape[1]), dim=1)
        cells, classes = top // self.num_classes, top % self.num_classes
        candidates = torch.gather(boxes, 1, cells.unsqueeze(-1).expand(-1, -1, 4))
        image = torch.arange(batch, device=x.device).unsqueeze(1).expand_as(classes)
        return pad_by_image(candidates.reshape(-1, 4), top_scores.reshape(-1), classes.reshape(-1) + 1,
                            image.reshape(-1), batch, self.num_classes, self.max_det, self.iou, self.conf, float(width + height))


def pad_by_image(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image: torch.Tensor, batch: int,
                 num_labels: int, max_det: int, iou: float, conf: float, extent: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One NMS over every image's candidates above ``conf`` (boxes within ``extent`` of the origin,
    shifted apart per image and label 1..num_labels, so that only boxes of the same image and class
    suppress each other), then the best ``max_det`` of each image scattered into fixed [batch, max_det]
    slots: no data-dependent Python branch."""
    from torchvision.ops import nms

    # NMS compares every pair of boxes it is given, so the batch's candidates under ``conf`` leave first
    chosen = torch.nonzero(scores > conf).squeeze(1)
    boxes, scores, labels, image = boxes[chosen], scores[chosen], labels[chosen], image[chosen]
    shift = (image * (num_labels + 1) + labels).to(boxes.dtype).unsqueeze(1) * (extent + 1)
    keep = nms(boxes + shift, scores, iou)  # sorted by score
    kept_image = image[keep]
    one_hot = (kept_image.unsqueeze(1) == torch.arange(batch, device=boxes.device).unsqueeze(0)).to(torch.int64)
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # place of each kept box within its image
    wanted = rank < max_det
    spare = batch * max_det  # one slot past the end takes everything unwanted
    slot = torch.where(wanted, kept_image * max_det + rank, torch.full_like(rank, spare))
    out_boxes = boxes.new_zeros(spare + 1, 4).index_copy(0, slot, boxes[keep])
    out_scores = scores.new_zeros(spare + 1).index_copy(0, slot, scores[keep])
    out_labels = labels.new_zeros(spare + 1).index_copy(0, slot, labels[keep])
    return (out_boxes[:spare].reshape(batch, max_det, 4), out_scores[:spare].reshape(batch, max_det),
            out_labels[:spare].reshape(batch, max_det))


class TorchvisionGraph(nn.Module):
    """A torchvision detector (Faster R-CNN, Mask R-CNN, SSD) on a tensor batch, each image's detections
    (sorted by score) padded to ``max_det`` by concatenation: shape-generic under the TorchScript tracer.
    Mask R-CNN's masks leave as the mask head gives them, [max_det, M, M] per image."""

    def __init__(self, net: nn.Module, max_det: int, iou: float, conf: float = GRAPH_CONF):
        super().__init__()
        from cnnkit.models.detectors import set_postprocess

        set_postprocess(net, conf, iou, max_det)
        self.net, self.max_det, self.iou = net, max_det, iou
        self.with_masks = getattr(getattr(net, "roi_heads", None), "mask_predictor", None) is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from cnnkit.tasks.instance.task import detect_unpasted

        images = list(x.unbind(0))
        found = detect_unpasted(self.net, images) if self.with_masks else self.net(images)
        boxes, scores, labels, masks = [], [], [], []
        for image in found:
            boxes.append(torch.cat([image["boxes"], x.new_zeros(self.max_det, 4)])[: self.max_det])
            scores.append(torch.cat([image["scores"], x.new_zeros(self.max_det)])[: self.max_det])
            labels.append(torch.cat([image["labels"], image["labels"].new_zeros(self.max_det)])[: self.max_det])
            if self.with_masks:
                mask = image["masks"][:, 0]
                masks.append(torch.cat([mask, mask.new_zeros(self.max_det, *mask.shape[1:])])[: self.max_det])
        outputs = (torch.stack(boxes), torch.stack(scores), torch.stack(labels))
        return (*outputs, torch.stack(masks)) if self.with_masks else outputs


def detection_graph(net: nn.Module, max_det: int = 100, iou: float = 0.5) -> nn.Module:
    """The export graph of a built detector (eval mode, CPU)."""
    from cnnkit.models.yolo import YoloDetector, fuse_batchnorm

    net = net.eval().cpu()
    if isinstance(net, YoloDetector):
        return YoloGraph(fuse_batchnorm(net), max_det, iou).eval()  # what `detect predict` runs
    return TorchvisionGraph(net, max_det, iou).eval()


def letterbox_options(metadata: dict[str, Any]) -> tuple[bool, bool]:
    """(stretch, like_torchvision) of letterbox() for the model these metadata describe: what its eager
    model does to an image, for deployment and for parity and calibration batches alike."""
    model = str(metadata.get("model"))
    return model in ("ssd", "ssdlite"), is_traced_family(model)


def letterbox(image: torch.Tensor, size: int, stretch: bool = False, like_torchvision: bool = False) -> tuple[torch.Tensor, float, float]:
    """(image [3, size, size], x scale, y scale): the longer side resized to ``size`` and the rest padded
    with the ImageNet mean colour, or with ``stretch`` both sides resized to ``size``. Downscaling is
    antialiased, as the YOLO-style detectors' own loader does; ``like_torchvision`` resizes exactly as
    torchvision's GeneralizedRCNNTransform does instead (bilinear without antialiasing, the scale
    computed in float32 and the size floored), so that a deployed Faster R-CNN, Mask R-CNN or SSD sees
    the pixels its eager model sees."""
    from cnnkit.models.yolo import IMAGENET_MEAN

    h, w = image.shape[-2:]
    if like_torchvision:
        if stretch:
            image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
        else:
            sides = torch.tensor([h, w], dtype=torch.float32)
            scale = float(torch.min(size / sides.min(), size / sides.max()))
            image = F.interpolate(image[None].float(), scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                                  align_corners=False)[0]
        new_h, new_w = image.shape[-2:]
    else:
        if stretch:
            new_h, new_w = size, size
        else:
            factor = size / max(h, w)
            new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
        if (new_h, new_w) != (h, w):
            image = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False,
                                  antialias=new_h < h or new_w < w)[0]
    canvas = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1).repeat(1, size, size)
    canvas[:, :new_h, :new_w] = image
    return canvas, new_w / w, new_h / h


class DeployedDetector(nn.Module):
    """A deployed detection graph (ONNX, torch.export, TorchScript, int8) called like torchvision's
    detectors: a list of 0..1 images [3, H, W] in, per-image dicts of boxes (the image's pixels),
    scores and labels out, at the ``score_thresh`` and ``detections_per_img`` set on it; a Mask R-CNN
    graph's dicts also hold "masks" [N, 1, M, M], un-pasted (as tasks.instance.detect_unpasted gives)."""

    def __init__(self, graph: nn.Module, metadata: dict[str, Any]):
        super().__init__()
        self.graph = graph
        deployed = metadata.get("deployed", {})
        self.imgsz = int(metadata["imgsz"])
        self.stretch, self.like_torchvision = letterbox_options(metadata)
        self.max_det, self.iou = int(deployed.get("max_det", 100)), float(deployed.get("iou", 0.5))
        self.nms_thresh = self.iou
        self.score_thresh, self.detections_per_img = GRAPH_CONF, self.max_det

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if abs(self.nms_thresh - self.iou) > 1e-9:
            raise CnnkitError(f"--iou {self.nms_thresh}: this file's NMS was exported with IoU {self.iou}",
                              f"use --iou {self.iou}, or export again from the weights with the IoU you want")
        if self.detections_per_img > self.max_det:
            raise CnnkitError(f"--max-det {self.detections_per_img}: this file was exported with at most {self.max_det} "
                              "detections per image", f"use --max-det {self.max_det} or less, or export again")
        boxed = [letterbox(image.cpu(), self.imgsz, self.stretch, self.like_torchvision) for image in images]
        outputs = self.graph(torch.stack([b[0] for b in boxed]))
        masks = outputs[3] if len(outputs) > 3 else [None] * len(images)
        found = []
        for (_, sx, sy), image, b, s, k, m in zip(boxed, images, *outputs[:3], masks):
            keep = (k > 0) & (s > self.score_thresh)  # as torchvision's and the eager YOLO's post-processing
            b = b[keep][: self.detections_per_img] / torch.tensor([sx, sy, sx, sy])
            h, w = image.shape[-2:]
            b = torch.minimum(b.clamp(min=0), torch.tensor([w, h, w, h], dtype=b.dtype))
            found.append({"boxes": b, "scores": s[keep][: self.detections_per_img],
                          "labels": k[keep][: self.detections_per_img].long()})
            if m is not None:  # inside its box: the box's scaling back to the image carries it along
                found[-1]["masks"] = m[keep][: self.detections_per_img].float().unsqueeze(1)
        return found
