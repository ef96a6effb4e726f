"""Transfer learning: which parameters train, at what rate, from which epoch.

    scratch   every parameter trains at --lr from a random start
    linear    the backbone is frozen, BatchNorm statistics included ("feature extraction");
              only the new head trains
    finetune  everything trains; the backbone at --backbone-lr-mult x --lr
    gradual   the head trains first; then one backbone chunk a epoch unfreezes, top (next to the
              head) first, until the whole network trains (ULMFiT's gradual unfreezing)

The head is the model's classifier (timm's ``get_classifier()``, else its last Linear layer); the
backbone is everything else, cut into chunks in the order its parameters are registered, which
is input-to-output for timm, torchvision and cnnkit models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from cnnkit.errors import CnnkitError
from cnnkit.models import backbone_module

MODES = ("auto", "scratch", "linear", "finetune", "gradual")
GRADUAL_CHUNKS = 4


@dataclass
class TransferPlan:
    mode: str
    head: list[str]                       # parameter names of the classifier head
    chunks: list[list[str]] = field(default_factory=list)  # backbone parameter names, input -> output
    backbone_lr_mult: float = 1.0

    def frozen(self, epoch: int) -> set[str]:
        """Names of the parameters that must not change during ``epoch`` (0-based)."""
        if self.mode == "linear":
            return {name for chunk in self.chunks for name in chunk}
        if self.mode == "gradual":
            still_frozen = max(0, len(self.chunks) - epoch)  # epoch 0: head only; epoch k: top k chunks too
            return {name for chunk in self.chunks[:still_frozen] for name in chunk}
        return set()


def classifier(model: nn.Module) -> nn.Module:
    """The head: get_classifier() where the model has it, else its last Linear."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module) or not any(True for _ in head.parameters()):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise CnnkitError(f"{type(model).__name__}: no classifier layer found to separate head from backbone")
        head = linears[-1]
    return head


def head_names(model: nn.Module) -> list[str]:
    """Parameter names of the head: the classifier (see ``classifier``); for a model that names its
    backbone module (models.backbone_module; a detector's "backbone.body"), everything outside it."""
    backbone = backbone_module(model)
    if backbone:
        return [name for name, _ in model.named_parameters() if not name.startswith(backbone + ".")]
    ids = {id(p) for p in classifier(model).parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def plan_transfer(model: nn.Module, mode: str, has_source: bool, backbone_lr_mult: float) -> TransferPlan:
    """The plan for ``mode``; ``auto`` is finetune when the model starts from other weights, else scratch."""
    if mode not in MODES:
        raise CnnkitError(f"--transfer {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        mode = "finetune" if has_source else "scratch"
    if mode != "scratch" and not has_source:
        raise CnnkitError(f"--transfer {mode} needs weights to transfer from",
                          "add --backbone-from FILE, --weights FILE or --pretrained, or use --transfer scratch")
    head = head_names(model)
    head_set = set(head)
    backbone = [name for name, _ in model.named_parameters() if name not in head_set]
    n = min(GRADUAL_CHUNKS, len(backbone)) or 1
    size = -(-len(backbone) // n)
    chunks = [backbone[i:i + size] for i in range(0, len(backbone), size)]
    mult = 1.0 if mode == "scratch" else backbone_lr_mult
    return TransferPlan(mode, head, chunks, mult)


def freeze_for_run(model: nn.Module, plan: TransferPlan) -> None:
    """--transfer linear: the backbone never trains, so it needs no gradients at all (a much cheaper
    backward pass, and DDP never sees those parameters)."""
    if plan.mode == "linear":
        params = dict(model.named_parameters())
        for name in plan.frozen(0):
            params[name].requires_grad_(False)


def apply_freeze(model: nn.Module, frozen: set[str]) -> list[nn.Parameter]:
    """Put BatchNorm layers whose parameters are all frozen into eval mode (their running statistics
    stay those of the source data) and return the frozen parameters that still take gradients,
    which the engine drops before each step. Call after ``model.train()``."""
    if not frozen:
        return []
    params = dict(model.named_parameters())
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = [f"{module_name}.{n}" for n, _ in module.named_parameters(recurse=False)]
            if own and all(name in frozen for name in own):
                module.eval()
    return [params[name] for name in frozen if name in params and params[name].requires_grad]


def load_backbone(model: nn.Module, state: dict, source: str, model_name: str, source_model: str | None = None) -> int:
    """Copy the backbone (every tensor but the head's, BatchNorm statistics included) from ``state``
    into ``model``; return how many tensors were copied.

    Names may carry a prefix in the source (a detector stores its backbone under e.g.
    ``backbone.body.``): the prefix that matches most names is used. Every backbone tensor must be
    found with the same shape, else the file holds another architecture and we say so.
    """
    backbone = backbone_module(model)
    head = set(head_names(model))
    own = {k: v for k, v in model.state_dict().items()
           if (k.startswith(backbone + ".") if backbone else k not in head)}
    if source_model is not None and source_model != model_name:
        raise CnnkitError(f"{source}: holds a '{source_model}' model, but --model is '{model_name}'",
                          f"train with --model {source_model}, or pick weights of a {model_name}")
    # the backbone may sit under a prefix on either side: a detector's ``backbone.body.``, or an
    # embedding network's ``backbone.`` when a classifier's backbone goes into it (or back)
    firsts = {k.split(".", 1)[0] for k in own}
    own_prefixes = [""] + ([firsts.pop() + "."] if len(firsts) == 1 and all("." in k for k in own) else [])
    if backbone:
        own_prefixes.append(backbone + ".")
    candidates = []
    for strip in own_prefixes:
        reference = next(iter(own))[len(strip):]
        for prefix in {key[: -len(reference)] for key in state if key.endswith(reference)} or {""}:
            mapping = {k: prefix + k[len(strip):] for k in own}
            fits = sum(mapping[k] in state and state[mapping[k]].shape == v.shape for k, v in own.items())
            candidates.append((fits, -len(prefix) - len(strip), mapping))
    _, _, mapping = max(candidates, key=lambda c: c[:2])
    missing = [k for k in own if mapping[k] not in state]
    wrong = [k for k, v in own.items() if mapping[k] in state and state[mapping[k]].shape != v.shape]
    if missing or wrong:
        what = (f"'{wrong[0]}' has shape {list(state[mapping[wrong[0]]].shape)} there, {list(own[wrong[0]].shape)} here"
                if wrong else f"'{missing[0]}' is missing")
        raise CnnkitError(f"{source}: backbone does not fit --model {model_name} ({len(missing) + len(wrong)} of {len(own)} "
                          f"tensors differ; {what})", "pass weights of the same architecture")
    model.load_state_dict({k: state[mapping[k]] for k in own}, strict=False)
    return len(own)
