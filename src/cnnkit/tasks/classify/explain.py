"""Explaining a prediction: what the network's layers respond to and where it looks for a class.

    layers = pick_layers(model, imgsz)                  # early, middle and late conv stage, e.g. features.0/2/4
    result = explain_image(model, load_image("a.png"), transform, class_names, "out/a.png",
                           layers=layers, cam_layer=layers[-1], target=None)
    result["label"], result["score"], result["target"], result["cam"]   # cam: [imgsz, imgsz] float32 in [0, 1]

One PNG per image: the input; Grad-CAM of the predicted class (or ``target``) on the last conv stage,
computed by the maintained ``pytorch_grad_cam`` (GradCAM, ClassifierOutputTarget, show_cam_on_image),
over the image the model saw; and, per chosen layer, its ``k`` strongest channels by mean activation.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cnnkit.engine.rundir import write_bytes
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.features import LAYERS_HINT, capture_outputs, check_layers, list_layers

K_MAPS = 4
DPI = 100


# ------------------------------------------------------------------ layers
def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def stage_candidates(model: nn.Module) -> list[str]:
    """Module names of the model's conv stages, in forward order.

    timm models list them in ``feature_info`` (resnet18: act1, layer1 … layer4). Otherwise: the
    children that hold convolutions, descending while a single child holds them all (tiny_cnn:
    features.0, features.2, features.4, its three blocks; torchvision resnet: conv1, layer1 … layer4).
    """
    known = {name for name, _ in model.named_modules() if name}
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info:
        names = [d.get("module") for d in info if isinstance(d, dict)]
        if names and all(name in known for name in names):
            return names
    prefix, module = "", model
    while True:
        holders = [(name, child) for name, child in module.named_children() if _has_conv(child)]
        if len(holders) == 1 and list(holders[0][1].children()):
            prefix, module = f"{prefix}{holders[0][0]}.", holders[0][1]
            continue
        return [prefix + name for name, _ in holders]


def map_layers(model: nn.Module, imgsz: int) -> dict[str, tuple[int, ...]]:
    """{name: (C, H, W)} of every module whose output is a feature map, by one blank forward."""
    return {name: shape for name, _, shape in list_layers(model, imgsz)}


def pick_layers(model: nn.Module, imgsz: int, count: int = 3) -> list[str]:
    """An early, a middle and a late conv stage (evenly spread over the stages, always the last one);
    the last is where Grad-CAM looks. Falls back to the Conv2d modules when no stage gives a map."""
    maps = map_layers(model, imgsz)
    candidates = [name for name in stage_candidates(model) if name in maps]
    if not candidates:
        candidates = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name in maps]
    if not candidates:
        raise CnnkitError(f"{type(model).__name__}: no convolutional feature maps to explain",
                          "classify explain needs a CNN (timm, torchvision or cnnkit)")
    picks = np.linspace(0, len(candidates) - 1, num=min(count, len(candidates))).round().astype(int)
    return [candidates[i] for i in dict.fromkeys(picks.tolist())]


def check_map_layers(model: nn.Module, names: Sequence[str], imgsz: int) -> list[str]:
    """The names, checked to be submodules (with a suggestion) whose output is a feature map."""
    names = check_layers(model, names)
    maps = map_layers(model, imgsz)
    for name in names:
        if name not in maps:
            raise CnnkitError(f"layer '{name}' gives no feature map [C, H, W] (it is not a conv layer or stage)", LAYERS_HINT)
    return names


def resolve_target(target: str | int | None, class_names: Sequence[str], source: str | Path | None = None) -> int | None:
    """A class index from a class name or an index (a name wins: for digits '3' is the class named 3)."""
    if target is None:
        return None
    text = str(target).strip()
    if text in class_names:
        return list(class_names).index(text)
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(class_names):
            return index
    shown = ", ".join(class_names[:20]) + (f", … ({len(class_names)} in all)" if len(class_names) > 20 else "")
    where = f" of {source}" if source else ""
    raise CnnkitError(f"--target '{text}': not a class{where}",
                      f"use a class name or an index 0-{len(class_names) - 1}; classes: {shown}")


# ------------------------------------------------------------------ maps and Grad-CAM
def strongest_maps(activation: torch.Tensor, k: int = K_MAPS) -> list[tuple[int, float, np.ndarray]]:
    """(channel, mean activation, map [H, W] float32) of the ``k`` channels of one image's feature
    map [C, H, W] with the highest mean activation, strongest first."""
    activation = activation.detach().float().cpu()
    means = activation.mean(dim=(1, 2))
    top = means.topk(min(k, activation.shape[0]))
    return [(int(c), float(m), activation[c].numpy()) for m, c in zip(top.values.tolist(), top.indices.tolist())]


@contextmanager
def _grad_ready(model: nn.Module) -> Iterator[None]:
    """Eval mode and autograd on (even inside no_grad / inference_mode), parameters not requiring
    gradients: Grad-CAM needs only d(score)/d(activation), which flows from the input instead, so
    frozen models work and no parameter .grad is left behind. Everything is restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def gradcam(model: nn.Module, layer: str, images: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    """Grad-CAM [B, H, W] float32 in [0, 1] (H, W: the input's) of class ``targets[i]`` for image i,
    on the output of module ``layer``. pytorch_grad_cam's hooks are removed when this returns."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = model.get_submodule(layer)
    device = next(model.parameters()).device
    cams = None
    with _grad_ready(model):
        # a fresh leaf on the model's device (an inference-mode tensor cannot enter autograd);
        # it requiring grad is what makes the layer's output carry a gradient when parameters do not
        x = images.detach().to(device).clone().requires_grad_(True)
        with GradCAM(model=model, target_layers=[module]) as cam:  # __exit__ releases the hooks
            cams = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    if cams is None:  # the library's __exit__ swallows an IndexError (no gradient reached the layer)
        raise RuntimeError(f"Grad-CAM got no gradient at layer '{layer}'")
    return np.asarray(cams, dtype=np.float32)


# ------------------------------------------------------------------ one image
def explain_image(model: nn.Module, image: Image.Image, transform: Callable, class_names: Sequence[str], path: str | Path,
                  layers: Sequence[str], cam_layer: str, target: int | None = None, k: int = K_MAPS,
                  mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                  title: str | None = None) -> dict:
    """Predict one image, compute its strongest maps and Grad-CAM, write the figure to ``path``
    (atomically); {"label", "score", "target", "png", "cam", "topk"}. ``target`` None: the predicted class."""
    device = next(model.parameters()).device
    x = transform(image).unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    try:
        with capture_outputs(model, layers) as captured, torch.inference_mode():
            probs = torch.softmax(model(x).float(), dim=1)[0].cpu()
            maps = {name: strongest_maps(captured[name][0], k) for name in layers if name in captured}
    finally:
        model.train(was_training)
    missing = [name for name in layers if name not in maps]
    if missing:
        raise CnnkitError(f"layer '{missing[0]}' does not run in the model's forward", LAYERS_HINT)
    predicted = int(probs.argmax())
    target_index = predicted if target is None else int(target)
    cam = gradcam(model, cam_layer, x, [target_index])[0]
    # the image as the model saw it (resized, normalisation undone), for the overlay
    seen = (x[0].detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1))
    seen = seen.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    top = probs.topk(min(5, len(class_names)))
    result = {"label": class_names[predicted], "score": float(probs[predicted]), "target": class_names[target_index],
              "target_score": float(probs[target_index]), "png": str(path), "cam": cam,
              "topk": [[class_names[i], float(s)] for s, i in zip(top.values.tolist(), top.indices.tolist())]}
    draw_explanation(path, image, seen, cam, maps, result, cam_layer, title or Path(path).stem)
    return result


def draw_explanation(path: str | Path, image: Image.Image, seen: np.ndarray, cam: np.ndarray,
                     maps: dict[str, list[tuple[int, float, np.ndarray]]], result: dict, cam_layer: str, title: str) -> Path:
    """The figure: row 0 input, Grad-CAM overlay, Grad-CAM alone, top-5 classes; one row per layer
    with its strongest channels. matplotlib Figure on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from pytorch_grad_cam.utils.image import show_cam_on_image

    ncols = max(4, max((len(v) for v in maps.values()), default=0))
    nrows = 1 + len(maps)
    fig = Figure(figsize=(2.3 * ncols, 2.5 * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_axis_off()

    def show(ax, array, label, **kwargs):
        ax.set_axis_on()
        ax.imshow(array, interpolation="nearest", **kwargs)
        ax.set_title(label, fontsize=9)

    show(axes[0, 0], np.asarray(image), f"input {image.width}x{image.height}")
    overlay = show_cam_on_image(seen, cam, use_rgb=True, image_weight=0.5)
    show(axes[0, 1], overlay, f"Grad-CAM for {result['target']} (p {result['target_score']:.2f})")
    show(axes[0, 2], cam, f"Grad-CAM at {cam_layer}", cmap="jet", vmin=0.0, vmax=1.0)
    text = "\n".join(f"{name:>12.12}  {score:.3f}" for name, score in result["topk"])
    axes[0, 3].text(0.02, 0.95, "top classes\n" + text, va="top", ha="left", family="monospace", fontsize=9,
                    transform=axes[0, 3].transAxes)
    for row, (layer, channels) in enumerate(maps.items(), start=1):
        for col, (channel, mean, array) in enumerate(channels):
            show(axes[row, col], array, f"ch {channel}  mean {mean:.2f}", cmap="viridis")
        axes[row, 0].set_ylabel(f"{layer}\n{channels[0][2].shape[0]}x{channels[0][2].shape[1]}", fontsize=9)
    fig.suptitle(f"{title}: predicted {result['label']} ({result['score']:.1%})", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return write_bytes(path, buffer.getvalue())

