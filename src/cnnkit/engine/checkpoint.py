"""Weights as safetensors with metadata; resume state as checkpoint.pt read with weights_only=True.

Neither format can run code when loaded, so a downloaded cnnkit file is safe to open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.engine.rundir import atomic_path
from cnnkit.errors import CnnkitError

FORMAT = "cnnkit"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def deployable_state(model: nn.Module, training_only: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The state dict a weights file holds: all of it but the ``training_only`` submodules (a task's, such
    as distillation's hint regressor), which the checkpoint keeps for --resume."""
    model = unwrap(model)
    skip = tuple(f"{name}." for name in training_only)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)} if skip else model.state_dict()


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write the model's weights as safetensors; metadata values are stored JSON-encoded."""
    return save_state_dict(deployable_state(model), path, metadata)


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    seen: set[int] = set()
    for key, value in state.items():  # safetensors refuses tensors that share memory (QAT's shared observers)
        if value.numel() and value.data_ptr() in seen:
            state[key] = value.clone()
        seen.add(value.data_ptr())
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a cnnkit weights file; CnnkitError if the file is missing or not one of ours."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such weights file", "pass the weights/best.safetensors of a run")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception:
        raise CnnkitError(
            f"{path}: not a cnnkit weights file (not safetensors)",
            "pass weights/best.safetensors or weights/last.safetensors from a cnnkit run",
        ) from None
    if raw.get("format") != FORMAT:
        raise CnnkitError(f"{path}: safetensors file without cnnkit metadata", "pass weights written by cnnkit train")
    try:
        return {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except ValueError as exc:
        raise CnnkitError(f"{path}: broken cnnkit metadata ({exc})", "save or train the model again") from None


def recorded_model(path: str | Path) -> str | None:
    """The architecture name a cnnkit weights file records; None for any other file."""
    try:
        return read_metadata(path).get("model")
    except CnnkitError:
        return None


def load_weights(path: str | Path, task: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata) of a cnnkit weights file, checking that it belongs to ``task``."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    if task is not None and metadata.get("task") != task:
        raise CnnkitError(
            f"{path}: weights of a '{metadata.get('task')}' model, not '{task}'",
            f"use `cnnkit {metadata.get('task')} …` with this file, or pass {task} weights",
        )
    return load_file(str(path)), metadata


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from any weights file to initialise from: a cnnkit or plain safetensors file (timm's
    hub weights are these), a cnnkit checkpoint.pt, or a PyTorch state dict (.pt/.pth/.bin, also
    nested under "state_dict" or "model"), always read without executing code."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception:
            raise CnnkitError(f"{path}: not a readable safetensors file") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a PyTorch weights file that loads safely ({type(exc).__name__})",
                          "use .safetensors or a plain state dict") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnkitError(f"{path}: holds no state dict of tensors")
    # weights saved from DDP or torch.compile wrappers carry a prefix on every name
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, name: str | None) -> None:
    """Every tensor of a weights file into ``model`` (strict), or one line naming the file and the first tensor
    that does not fit: a file written for another build of the architecture ``name`` (small_cnn before its
    head took 512 features) instead of PyTorch's size-mismatch traceback."""
    own = unwrap(model).state_dict()
    problems = ([f"{k} is {list(v.shape)} in the file, {list(own[k].shape)} in the model" for k, v in state.items()
                 if k in own and own[k].shape != v.shape]
                + [f"{k} is missing from the file" for k in own if k not in state]
                + [f"{k} is not in the model" for k in state if k not in own])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CnnkitError(f"{source}: its tensors do not fit the network '{name}' that this cnnkit builds: {problems[0]}{more}",
                          "the file was written by another version of cnnkit or for another architecture; retrain, or "
                          "start a run from it with --weights FILE, which copies the tensors that fit")
    unwrap(model).load_state_dict(state)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match; return (copied, skipped names).

    Heads sized for another class count are skipped; if nothing matches, the file belongs to
    another architecture and we refuse rather than train from a silently random model.
    """
    own = unwrap(model).state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(matched))
    if not matched or len(matched) < 0.5 * len(own):
        raise CnnkitError(
            f"{source}: weights do not fit this architecture ({len(matched)} of {len(own)} tensors match)",
            "pass weights trained with the same --model",
        )
    unwrap(model).load_state_dict(matched, strict=False)
    return len(matched), skipped


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no checkpoint to resume from", "start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a loadable cnnkit checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CnnkitError(f"{path}: not a cnnkit checkpoint")
    return state
