"""Single-object tracking with a Siamese network: SiamFC's tracking loop (Bertinetto et al. 2016), given any
network with ``features(images)`` and ``match(kernel, features)`` (cnnkit.models.siamese.SiamFC).

    tracker = SiamTracker(net)                    # net.spec gives the crop sizes and the stride
    tracker.init(first_rgb, (x, y, w, h))         # the target's box in the first frame
    for rgb in frames:
        (x, y, w, h), score = tracker.update(rgb)

Each frame: 1) three search crops around the last position, SiamFC's context-padded square times
1.0375^{-1, 0, 1}, resized to the network's search side (pixels outside the frame take the frame's mean colour);
2) one batch through the network, matched against the exemplar's features (computed once, at init);
3) the response maps upsampled x16 (bicubic), the two off-scale ones penalised (x0.9745); the best scale's map,
normalised to sum 1, blended with a cosine window (weight 0.176): a prior against jumps; 4) its peak, read back
through the upsampling, the stride and the crop's scale, moves the centre; the size follows the best scale,
damped (learning rate 0.59). Parameters are SiamFC's published ones (huanglianghua/siamfc-pytorch, MIT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.errors import CnnkitError


def context_side(w: float, h: float, context: float = 0.5) -> float:
    """SiamFC's exemplar square: sqrt((w + p)(h + p)) with p = context * (w + h), pixels."""
    pad = context * (w + h)
    return math.sqrt((w + pad) * (h + pad))


def crop_square(image: np.ndarray, centre: tuple[float, float], side: float, out: int,
                fill: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """The square of ``side`` pixels centred on ``centre`` (x, y; continuous coordinates: pixel i spans
    [i, i + 1)) resized to ``out`` x ``out`` (bilinear; one warp), [H, W, 3] uint8 -> [out, out, 3] uint8; what
    lies outside the image takes ``fill``."""
    scale = side / out
    cx, cy = centre
    # dst pixel u (centre u + 0.5) -> src continuous cx - side/2 + (u + 0.5) * scale -> src index that minus 0.5
    matrix = np.array([[scale, 0.0, cx - side / 2 + 0.5 * scale - 0.5],
                       [0.0, scale, cy - side / 2 + 0.5 * scale - 0.5]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in fill))


def to_tensor(crops: list[np.ndarray] | np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """RGB uint8 crops [N, S, S, 3] -> normalised float [N, 3, S, S]."""
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(list(crops)) if isinstance(crops, list) else crops))
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def check_box(box, width: int, height: int, what: str = "the initial box") -> tuple[float, float, float, float]:
    """(x, y, w, h) as floats when the box has a positive size and its centre lies inside the width x height
    frame (boxes cut by the border, as ground truth often is, are accepted); else one-line CnnkitError."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise CnnkitError(f"{what} {box!r} is not four numbers x,y,w,h") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise CnnkitError(f"{what} {x:g},{y:g},{w:g},{h:g} has no area", "give x,y,w,h with a positive width and height")
    if not (0 <= x + w / 2 < width and 0 <= y + h / 2 < height):
        raise CnnkitError(f"{what} {x:g},{y:g},{w:g},{h:g} lies outside the {width}x{height} frame",
                          "give x,y,w,h in pixels of the first frame, top-left corner first")
    return x, y, w, h


@dataclass
class SiamOptions:
    """SiamFC's tracking parameters (the paper's, as siamfc-pytorch sets them)."""

    context: float = 0.5  # exemplar square: (w + p)(h + p), p = context * (w + h)
    scales: int = 3  # search scales a frame
    scale_step: float = 1.0375  # ratio between neighbouring scales
    scale_penalty: float = 0.9745  # off-scale responses multiplied by this
    scale_lr: float = 0.59  # damping of the size update
    window_influence: float = 0.176  # weight of the cosine window against the response
    response_up: int = 16  # response upsampling factor


class SiamTracker:
    """SiamFC tracking (see the module docstring) with ``model``: ``features`` and ``match`` as SiamFC's, and
    ``spec`` (exemplar and search sides, stride). ``mean``/``std``: the input normalisation it was trained with."""

    def __init__(self, model, options: SiamOptions | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 device: str | torch.device = "cpu", channels_last: bool = True):
        self.model = model.to(device).eval()
        self.options = options or SiamOptions()
        self.spec = model.spec
        self.mean, self.std = mean, std
        self.device = torch.device(device)
        self.channels_last = channels_last
        if channels_last:  # measurably faster convolutions on CPUs (oneDNN), harmless elsewhere
            self.model.to(memory_format=torch.channels_last)
        n = self.options.scales
        self.scale_factors = self.options.scale_step ** np.linspace(-(n // 2), n // 2, n)
        self.kernel: torch.Tensor | None = None
        self.window: np.ndarray | None = None

    def _embed(self, crops: list[np.ndarray]) -> torch.Tensor:
        batch = to_tensor(crops, self.mean, self.std).to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.model.features(batch)

    @torch.inference_mode()
    def init(self, frame: np.ndarray, box) -> None:
        """Start on ``frame`` (RGB uint8 [H, W, 3]) with the target at ``box`` (x, y, w, h; top-left, pixels)."""
        x, y, w, h = check_box(box, frame.shape[1], frame.shape[0])
        self.centre = np.array([x + w / 2, y + h / 2], dtype=np.float64)
        self.size = np.array([w, h], dtype=np.float64)
        self.z_side = context_side(w, h, self.options.context)
        self.x_side = self.z_side * self.spec.search / self.spec.exemplar
        self.min_side, self.max_side = 0.2 * self.z_side, 5.0 * self.z_side
        self.fill = cv2.mean(frame)[:3]  # numpy's mean over a uint8 frame is ~50x slower
        self.kernel = self._embed([crop_square(frame, self.centre, self.z_side, self.spec.exemplar, self.fill)])
        self.frame_size = (frame.shape[1], frame.shape[0])
        self.window = None

    @torch.inference_mode()
    def update(self, frame: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
        """The target's box (x, y, w, h) in ``frame`` (RGB uint8 [H, W, 3]) and the response's peak as a
        probability (the sigmoid of its logit at the chosen scale)."""
        assert self.kernel is not None, "init() first"
        opt, spec = self.options, self.spec
        # 1) search crops at every scale, 2) one batch through the network
        crops = [crop_square(frame, self.centre, self.x_side * f, spec.search, self.fill) for f in self.scale_factors]
        logits = self.model.match(self.kernel, self._embed(crops))[:, 0].float().cpu().numpy()  # [S, R, R]
        # 3) upsampled, off-scale maps penalised, best scale chosen
        side = logits.shape[-1] * opt.response_up
        responses = np.stack([cv2.resize(r, (side, side), interpolation=cv2.INTER_CUBIC) for r in logits])
        ranked = responses - responses.min()
        penalty = np.full(len(responses), opt.scale_penalty)
        penalty[len(responses) // 2] = 1.0
        best = int(np.argmax(ranked.reshape(len(responses), -1).max(axis=1) * penalty))
        response = ranked[best]
        response = response / max(float(response.sum()), 1e-12)
        if self.window is None or self.window.shape[0] != side:
            hann = np.hanning(side)
            self.window = np.outer(hann, hann) / np.outer(hann, hann).sum()
        response = (1 - opt.window_influence) * response + opt.window_influence * self.window
        # 4) peak -> displacement in the frame; size follows the chosen scale, damped
        row, col = np.unravel_index(int(np.argmax(response)), response.shape)
        shift = (np.array([col, row], dtype=np.float64) - (side - 1) / 2) * spec.stride / opt.response_up
        self.centre += shift * self.x_side * self.scale_factors[best] / spec.search
        self.centre = np.clip(self.centre, 0, np.array(self.frame_size, dtype=np.float64) - 1e-3)
        scale = (1 - opt.scale_lr) + opt.scale_lr * self.scale_factors[best]
        scale = float(np.clip(scale, self.min_side / self.z_side, self.max_side / self.z_side))
        self.size *= scale
        self.z_side *= scale
        self.x_side *= scale
        score = float(logits[best].max())
        w, h = self.size
        return (float(self.centre[0] - w / 2), float(self.centre[1] - h / 2), float(w), float(h)), 1 / (1 + math.exp(-score))
