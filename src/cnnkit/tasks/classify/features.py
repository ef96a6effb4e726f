"""Feature extraction: pooled embeddings [N, D] and, on request, intermediate maps [N, C, H, W].

    arrays = extract_features(model, files, labels, transform, batch=64, workers=2, device=dev,
                              layers=["features.3"])
    save_npz("feats.npz", arrays)   # features [N, D] float32, files [N], labels [N], layer:NAME [N, C, H, W] float16

Pooled features are the classifier's input: timm models and cnnkit's own (which follow timm's
interface) give them through ``forward_head(forward_features(x), pre_logits=True)``; torchvision
models through a hook on the input of their last ``nn.Linear``, their classifier.
"""

from __future__ import annotations

import difflib
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine.callbacks import progress_bar
from cnnkit.engine.rundir import atomic_path
from cnnkit.errors import CnnkitError

LAYERS_HINT = "`--layers list` shows the names"


def _has_timm_head(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def _classifier_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CnnkitError(f"{type(model).__name__}: no Linear classifier layer to take pooled features from",
                          "use a timm or cnnkit model, or --layers NAME for a named layer's output")
    return linears[-1]


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] -> the classifier's input [B, D] (D = 128 for tiny_cnn, 512 for resnet18)."""
    if _has_timm_head(model):
        return model.forward_head(model.forward_features(images), pre_logits=True).flatten(1)
    captured: list[torch.Tensor] = []
    handle = _classifier_linear(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


@contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks filling {name: output} on every forward; a module run several times in one
    forward (a shared ReLU) keeps its last output."""
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable:
        def record(_module, _args, output):
            if isinstance(output, torch.Tensor):
                # a copy: an in-place op later in the forward (ReLU(inplace=True)) would overwrite the original
                outputs[name] = output.detach().to(dtype=torch.float16, copy=True)
        return record

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def list_layers(model: nn.Module, imgsz: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, module type, output shape (C, H, W)) for every module whose output is a feature map,
    found by one forward of a blank [1, 3, imgsz, imgsz] image; in module order."""
    names = [name for name, _ in model.named_modules() if name]
    was_training = model.training
    model.eval()
    try:
        with capture_outputs(model, names) as outputs, torch.inference_mode():
            device = next(model.parameters()).device
            model(torch.zeros(1, 3, imgsz, imgsz, device=device))
    finally:
        model.train(was_training)
    return [(name, type(model.get_submodule(name)).__name__, tuple(outputs[name].shape[1:]))
            for name in names if name in outputs and outputs[name].ndim == 4]


def check_layers(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The names, checked to be submodules of the model; CnnkitError naming the first unknown one."""
    known = {name for name, _ in model.named_modules() if name}
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = (f"did you mean {', '.join(close)}? " if close else "") + LAYERS_HINT
            raise CnnkitError(f"unknown layer '{name}'", hint)
    return list(names)


def folder_labels(files: Sequence[Path], sources: Sequence[str | Path], class_names: Sequence[str]) -> list[int] | None:
    """Class index per file when every file sits in a class folder (its parent folder, or the first
    folder under a source folder, is named like one of ``class_names``); None otherwise."""
    index = {name: i for i, name in enumerate(class_names)}
    source_dirs = [Path(s) for s in sources if Path(s).is_dir()]
    labels: list[int] = []
    for path in files:
        name = path.parent.name
        if name not in index:  # SOURCE/CLASS/any/depth/image.png
            parts = [path.relative_to(d).parts for d in source_dirs if path.is_relative_to(d)]
            name = next((p[0] for p in parts if len(p) > 1 and p[0] in index), None)
        if name is None:
            return None
        labels.append(index[name])
    return labels


def extract_features(model: nn.Module, files: Sequence[Path], labels: Sequence[int] | None, transform: Callable,
                     batch: int, workers: int, device: torch.device, layers: Sequence[str] | None = None,
                     progress: bool = True, intensity: Any = None) -> dict[str, np.ndarray]:
    """{"features": float32 [N, D], "files": str [N], "labels": int64 [N] (given labels only),
    "layer:NAME": float16 [N, C, H, W] per layer}, N = the readable files, in the order given.

    Unreadable files are skipped with a warning (by ImageDataset); every array stays row-aligned with
    ``files`` through the dataset's sample index.
    """
    layers = check_layers(model, layers or [])
    files = [Path(f) for f in files]
    if not files:
        raise CnnkitError("no images to extract features from")
    dataset = ImageDataset([(path, -1) for path in files], transform, intensity)  # the model's intensity spec
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate_skipping_none,
                        pin_memory=device.type == "cuda")
    model.to(device).eval()
    n = len(files)
    kept = np.zeros(n, dtype=bool)
    out: dict[str, np.ndarray] = {}
    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    started = last_draw = time.perf_counter()
    done = 0
    with capture_outputs(model, layers) as captured, torch.inference_mode(), (bar if bar is not None else nullcontext()):
        task = bar.add_task("features", total=n, info="", rate="") if bar is not None else None
        for step, items in enumerate(loader):
            done = min(n, (step + 1) * batch)  # the sampler is sequential: batch i holds indices i*batch …
            if items is not None:
                images, _, indices = items
                feats = pooled_features(model, images.to(device, non_blocking=True))
                rows = indices.numpy()
                kept[rows] = True
                _put(out, "features", n, rows, feats.float(), np.float32)
                for name in layers:
                    if name not in captured:
                        raise CnnkitError(f"layer '{name}' does not run when features are extracted",
                                          f"it is not on the way to the pooled features (a classifier layer?); {LAYERS_HINT}")
                    _put(out, f"layer:{name}", n, rows, captured.pop(name), np.float16)
            now = time.perf_counter()
            # redrawn from this loop, at most 4 times a second: a refresh thread would compete for the CPU
            if bar is not None and (now - last_draw >= 0.25 or done == n):
                bar.update(task, completed=done, rate=f"{done / max(now - started, 1e-9):.0f} img/s",
                           info=f"{done - int(kept.sum())} skipped" if done > kept.sum() else "")
                bar.refresh()
                last_draw = now
    if not kept.any():
        raise CnnkitError(f"none of the {n} images could be read", "see the warnings above")
    arrays = {key: (value if kept.all() else value[kept]) for key, value in out.items()}
    arrays["files"] = np.array([str(path) for path, k in zip(files, kept) if k])
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)[kept]
    return arrays


def _put(out: dict[str, np.ndarray], key: str, n: int, rows: np.ndarray, values: torch.Tensor, dtype: type) -> None:
    """Write a batch into ``out[key]`` at its sample rows, allocating it as [n, …] on the first batch
    (so skipped files cost no concatenation, only a final selection)."""
    values = values.cpu().numpy()
    if key not in out:
        out[key] = np.zeros((n, *values.shape[1:]), dtype=dtype)
    out[key][rows] = values


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays to a compressed .npz atomically (temporary sibling, then rename); creates the folder."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # a file handle, not a path: np.savez would append .npz to the temporary name
        np.savez_compressed(handle, **arrays)
    return Path(path)
