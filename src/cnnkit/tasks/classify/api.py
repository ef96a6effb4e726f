"""Classification: the Classifier (train / val / predict / features / explain / robustness / load) and the
CLASSIFY recipe the runner trains.

    from cnnkit import Classifier
    clf = Classifier("resnet18")                                   # or Classifier.load("runs/classify/exp/weights/best.safetensors")
    run = clf.train(data="digits", epochs=5, imgsz=32)           # run.dir, run.metrics
    preds = clf.predict(["a.png", "b.png"])                        # [{"file", "label", "score", "topk"}]
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, batch_mixer, classify_transforms, spec_from_config
from cnnkit.tasks.classify.config import AUTO_BALANCE_RATIO, TrainConfig
from cnnkit.console import Skips, console
from cnnkit.data.builtin import resolve_data
from cnnkit.data.images import is_image_file, load_image
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.shards import read_shards_for
from cnnkit.data.intensity import BEFORE_RECORD, IntensitySpec, spec_of
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.data.sources import expand_source_files, output_names
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.trainer import evaluate, make_loader
from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier
from cnnkit.tasks.classify import task as classify
from cnnkit.runner import (Built, Recipe, Run, adopt_model_file, beside_run, finish_best_run, publish,  # noqa: F401
                           read_in_batches, read_model_file, split_samples, train_and_reload)
from cnnkit.runner import train as run_training


TASK = "classify"


class Classifier:
    """An image classifier: any timm/torchvision CNN or cnnkit's own, with a head for your classes."""

    def __init__(self, model: str = "tiny_cnn", class_names: list[str] | None = None, imgsz: int = 224,
                 pretrained: bool = False, num_classes: int | None = None):
        self.model_name = model
        self.class_names = class_names or ([str(i) for i in range(num_classes)] if num_classes else None)
        self.imgsz = imgsz
        self.pretrained = pretrained
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.intensity = IntensitySpec()  # how images deeper than 8 bits become inputs (data/intensity.py)
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)  # (parameters, GFLOPs) where the weights record them
        self.tta = "none"  # test-time augmentation the weights ask for (--tta): none, flip or d8
        self._eval_transform: tuple[tuple, Any] | None = None  # (imgsz, mean, std) it was built for, the transform
        if self.class_names:
            self.model = build_classifier(model, len(self.class_names), pretrained)

    @classmethod
    def load(cls, weights: str | Path) -> "Classifier":
        """Rebuild the model from a cnnkit weights file alone (architecture, classes, size, normalisation),
        or load a deployed file of `cnnkit export` / `cnnkit quantize` (.onnx, .pt2, .ts, .int8.pt)."""
        file = read_model_file(weights, TASK)
        meta = file.meta
        # a deployed file brings its own network: none is built to be replaced
        clf = cls(meta["model"], class_names=meta["class_names"] if file.state is not None else None, imgsz=meta["imgsz"])
        clf.class_names = meta["class_names"]
        clf.mean, clf.std = tuple(meta["mean"]), tuple(meta["std"])
        clf.intensity = IntensitySpec.from_dict(meta.get("intensity"), missing=BEFORE_RECORD)
        clf.tta = meta.get("tta", "none")  # weights saved before --tta predict one view
        return adopt_model_file(clf, file)

    # ---------------------------------------------------------------- train
    def train(self, data: str = "digits", **options: Any) -> Run:
        """Train on an ImageFolder dataset (or 'digits'); options are TrainConfig fields."""
        defaults = {"model": self.model_name, "pretrained": self.pretrained, "imgsz": self.imgsz,
                    **_intensity_options(self.intensity)}
        if self.weights_path is not None:
            defaults["weights"] = str(self.weights_path)  # fine-tune from the loaded weights
        return train_and_reload(self, TrainConfig, CLASSIFY, data, defaults, options)

    # ---------------------------------------------------------------- val
    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 64,
            device: str = "auto", workers: int = 2, tta: str = "auto") -> dict[str, Any]:
        """Metrics, plots and report.html of the model on one split of a dataset, written into ``out``
        (``tta``: none, flip, d8, or auto = what the weights record)."""
        model = self._require_model()
        views = self._views(tta)
        samples = self._split_samples(data, split)
        out_dir = beside_run(out, self.weights_path, TASK)
        dev = dist_utils.select_device(device)
        metrics, outputs = _evaluate_split(model, self, samples, batch, workers, dev, views)
        paths = classify.draw(outputs, self.class_names, [p for p, _ in samples], out_dir / "plots", prefix=split)
        metrics = {"split": split, "tta": views, **metrics}
        publish(out_dir, f"cnnkit classify val: {self.model_name} on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split, "tta": metrics["tta"]}, metrics, paths,
                f"{split}: top1 {metrics['top1']:.4f}  macro_f1 {metrics['macro_f1']:.4f}")
        return metrics

    # ---------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, sources: Iterable[str | Path] | str | Path, topk: int = 5, batch: int = 32,
                device: str = "auto", tta: str = "auto") -> list[dict[str, Any]]:
        """[{"file", "label", "score", "topk": [[label, score], …]}] for images, folders and globs (``tta``:
        none, flip, d8, or auto = what the weights record)."""
        self._require_model()
        files = expand_sources([sources] if isinstance(sources, (str, Path)) else list(sources))
        results: list[dict[str, Any]] = []
        for chunk in read_in_batches(files, batch, lambda path: load_image(path, self.intensity), "classify"):
            if chunk:
                results += self.predict_images([image for _, image in chunk], [str(files[k][0]) for k, _ in chunk], topk=topk,
                                               device=device, tta=tta)
        return results

    @torch.no_grad()
    def predict_images(self, images: list[Any], names: list[str], topk: int = 5, device: str = "auto", tta: str = "auto",
                       draw: bool = False) -> list[dict[str, Any]]:
        """The rows of predict for decoded pictures (8-bit RGB, PIL or HxWx3 arrays) in one batch, ``names`` their
        "file"; with ``draw``, each row also holds "drawn", the picture with its label and score written on it. A
        picture may come already prepared (a tensor from ``prepare``: a server does that while it decodes, off the
        inference thread); such a picture cannot be drawn."""
        model = self._require_model()
        views = self._views(tta)
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        batch = torch.stack([self.prepare(image) for image in images]).to(dev)
        probs = torch.softmax(classify.predict_logits(model, batch, views), dim=1).cpu()
        scores, indices = probs.topk(min(topk, len(self.class_names)), dim=1)
        results: list[dict[str, Any]] = []
        for name, picture, s, idx in zip(names, images, scores.tolist(), indices.tolist()):
            row = {"file": name, "label": self.class_names[idx[0]], "score": s[0],
                   "topk": [[self.class_names[i], v] for i, v in zip(idx, s)]}
            if draw and not isinstance(picture, torch.Tensor):
                row["drawn"] = classify.draw_label(np.asarray(picture), f"{row['label']} {row['score']:.2f}")
            results.append(row)
        return results

    def prepare(self, image: Any) -> torch.Tensor:
        """A decoded picture (PIL or HxWx3 uint8) as the network's input [3, imgsz, imgsz], resized and normalised as in
        validation; a tensor is taken as already prepared."""
        if isinstance(image, torch.Tensor):
            return image
        picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if self._eval_transform is None or self._eval_transform[0] != (self.imgsz, tuple(self.mean), tuple(self.std)):
            self._eval_transform = ((self.imgsz, tuple(self.mean), tuple(self.std)),
                                    classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std))
        return self._eval_transform[1](picture)

    def features(self, sources: Iterable[str | Path] | str | Path, out: str | Path | None = None,
                 layers: list[str] | None = None, batch: int = 64, device: str = "auto", workers: int = 2) -> dict[str, np.ndarray]:
        """Pooled features [N, D] (the classifier's input) of every image, with ``files`` [N], ``labels``
        [N] and ``class_names`` when the folders name the classes, and ``layer:NAME`` maps for
        ``layers``; written to ``out`` (.npz) when given. Unreadable images are skipped with a warning."""
        from cnnkit.tasks.classify import features as feat

        model = self._require_model()
        names = feat.check_layers(model, layers or [])
        source_list = [sources] if isinstance(sources, (str, Path)) else list(sources)
        files = [path for path, _ in expand_sources(source_list)]
        labels = feat.folder_labels(files, [str(s) for s in source_list], self.class_names)
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        arrays = feat.extract_features(model, files, labels, transform, batch, workers, dist_utils.select_device(device), names,
                                       intensity=self.intensity)
        if "labels" in arrays:
            arrays["class_names"] = np.array(self.class_names)
        if out is not None:
            feat.save_npz(out, arrays)
        return arrays

    def explain(self, sources: Iterable[str | Path] | str | Path, out: str | Path | None = None,
                target: str | int | None = None, layers: list[str] | None = None,
                device: str = "auto") -> list[dict[str, Any]]:
        """One PNG per image in ``out`` (default runs/classify/explain): the input, Grad-CAM of the
        predicted class (or ``target``, a class name or index) on the last conv stage, and the
        strongest channels of ``layers`` (default: an early, a middle and the last conv stage).
        [{"file", "label", "score", "target", "target_score", "png", "cam" [imgsz, imgsz], "topk"}]."""
        from cnnkit.tasks.classify import explain as ex

        model = self._require_model()
        target_index = ex.resolve_target(target, self.class_names, self.weights_path)
        files = expand_source_files([sources] if isinstance(sources, (str, Path)) else list(sources), is_image_file)
        for path, named, _ in files:  # a bad file named on the command line fails before any PNG is written
            if named:
                load_image(path, self.intensity)
        model.to(dist_utils.select_device(device)).eval()
        stages = ex.pick_layers(model, self.imgsz)
        names = ex.check_map_layers(model, layers, self.imgsz) if layers else stages
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        out_dir = Path(out) if out is not None else Path("runs") / TASK / "explain"
        results: list[dict[str, Any]] = []
        # OUT/REL.png: each input's path below its folder or glob root, so a repeated name overwrites nothing
        skips = Skips()
        for (path, named, _), png in zip(files, output_names([f.relative for f in files], ".png")):
            image = skips.read(path, named, lambda: load_image(path, self.intensity))
            if image is None:
                continue
            result = ex.explain_image(model, image, transform, self.class_names, out_dir / png, layers=names,
                                      cam_layer=stages[-1], target=target_index, mean=self.mean, std=self.std,
                                      title=path.name)
            results.append({"file": str(path), **result})
        return results

    # ---------------------------------------------------------------- robustness
    def robustness(self, data: str = "digits", split: str = "val", out: str | Path | None = None,
                   families: list[str] | None = None, corruptions: list[str] | None = None,
                   severities: Iterable[int] = (1, 2, 3, 4, 5), seed: int = 0, batch: int = 64, device: str = "auto",
                   workers: int = 2) -> dict[str, Any]:
        """top1 on clean images and under every corruption (occlusion, illumination, noise, blur; or the
        ``families`` / ``corruptions`` named) at each severity, images corrupted at their native size.
        Writes robustness.json, plots and report.html into ``out`` (default: robustness/ beside the
        weights' run) and returns robustness.json's content (see cnnkit.evaluate.robustness)."""
        from cnnkit.augment.corruptions import select_corruptions
        from cnnkit.evaluate import robustness as rb

        model = self._require_model()
        chosen = select_corruptions(families, corruptions)  # bad names fail before any image is read
        severities = rb.check_severities(list(severities))
        samples = self._split_samples(data, split)
        out_dir = beside_run(out, self.weights_path, TASK, "robustness")
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        target = rb.engine_target(classify.ClassifyTask(self.class_names, tta=self._views("auto")), model, samples, transform, batch, workers,
                                  dist_utils.select_device(device), self.intensity)
        result = rb.evaluate_robustness(target, chosen, severities, seed)
        result.update({"weights": str(self.weights_path), "data": str(data), "split": split})
        rb.write_robustness(result, target, out_dir, f"cnnkit robustness: {self.model_name} on {data} ({split})",
                            {"weights": str(self.weights_path), "data": str(data), "split": split, "seed": seed,
                             "severities": list(severities), "corruptions": chosen})
        drops = "  ".join(f"{family} {drop:.3f}" for family, drop in result["relative_drop"].items() if drop is not None)
        console.print(f"clean top1 {result['clean']['top1']:.4f}  relative drop: {drops}  report {out_dir / 'report.html'}",
                      soft_wrap=True, markup=False)
        return result

    def occlusion_map(self, image: str | Path, out: str | Path | None = None, target: str | int | None = None,
                      patch: float = 0.2, stride: float | None = None, batch: int = 64, device: str = "auto") -> dict[str, Any]:
        """Occlusion sensitivity of one image (Zeiler & Fergus 2014): a square of the image's mean colour, ``patch`` x the side,
        sliding by ``stride`` x the side (default: a quarter of the patch) over the image the model sees,
        and the drop of the predicted (or ``target``) class's probability is mapped. Writes
        NAME_occlusion.png and NAME_occlusion.npz into ``out`` (default: robustness/ beside the weights' run).
        {"file", "label", "score", "target", "target_score", "map" [imgsz, imgsz], "png", "npz"}."""
        from cnnkit.evaluate.occlusion_map import draw_occlusion_map, occlusion_map
        from cnnkit.tasks.classify.explain import resolve_target
        from cnnkit.tasks.classify.features import save_npz

        model = self._require_model()
        target_index = resolve_target(target, self.class_names, self.weights_path)
        x = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)(load_image(image, self.intensity))
        result = occlusion_map(model.to(dist_utils.select_device(device)), x, target_index, patch, stride, batch)
        out_dir, name = beside_run(out, self.weights_path, TASK, "robustness"), Path(image).stem
        seen = (x * torch.tensor(self.std).view(3, 1, 1) + torch.tensor(self.mean).view(3, 1, 1)).clamp(0, 1)
        png = draw_occlusion_map(out_dir / f"{name}_occlusion.png", seen.permute(1, 2, 0).numpy(), result,
                                 self.class_names, Path(image).name)
        npz = save_npz(out_dir / f"{name}_occlusion.npz", {**{k: np.asarray(v) for k, v in result.items()},
                                                           "class_names": np.array(self.class_names)})
        probs, predicted, chosen = result["probs"], result["predicted"], result["target"]
        return {"file": str(image), "label": self.class_names[predicted], "score": float(probs[predicted]),
                "target": self.class_names[chosen], "target_score": float(probs[chosen]), "map": result["map"],
                "png": str(png), "npz": str(npz)}

    def _split_samples(self, data: str, split: str) -> list[tuple[Path, int]]:
        """(path, the model's class id) of one split of a dataset (val cut from train as the training run cut it)."""
        dataset = read_shards_for(data, "classify") or load_imagefolder(resolve_data(data), val_split=self.val_split,
                                                                        seed=self.split_seed)
        return _remap_labels(split_samples(data, dataset.splits, split), dataset.classes, self.class_names, data)

    def _views(self, tta: str) -> str:
        """The test-time views to predict with: ``tta`` none, flip or d8, auto = what the weights record."""
        if tta != "auto" and tta not in classify.TTA_VIEWS:
            raise CnnkitError(f"unknown --tta {tta!r}", "valid: auto (what the weights record), none, flip, d8")
        return self.tta if tta == "auto" else tta

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise CnnkitError("this Classifier has no weights yet", "train it first or use Classifier.load(FILE)")
        return self.model


def expand_sources(sources: list[str | Path], accept: Callable[[Path], bool] = is_image_file, what: str = "images",
                   expected: str = "expected .jpg/.png/… files") -> list[tuple[Path, bool]]:
    """(path, named directly) for files, folders (recursive) and glob patterns, in order; folders and
    globs contribute the files ``accept`` takes (images by default). Verbs that write a file per input
    use data.sources.expand_source_files, which also gives each file's path below its source."""
    return [(f.path, f.named) for f in expand_source_files(sources, accept, what, expected)]


def _intensity_options(spec: IntensitySpec) -> dict[str, Any]:
    """--normalize and --window of a training run that reads images as ``spec`` does (a loaded model fine-tuned)."""
    return {"normalize": spec.normalize, "window": ",".join(f"{v:g}" for v in spec.window) if spec.window else None}


def _remap_labels(samples, data_classes: list[str], model_classes: list[str], data: str):
    """Dataset label ids -> the model's ids, by class name (folders may list classes in another order)."""
    index = {name: i for i, name in enumerate(model_classes)}
    missing = [name for name in data_classes if name not in index]
    if missing:
        raise CnnkitError(f"{data}: class '{missing[0]}' is unknown to the model",
                          f"the model knows {', '.join(model_classes[:10])}")
    return [(path, index[data_classes[label]]) for path, label in samples]


def _evaluate_split(model, clf: Classifier, samples, batch: int, workers: int, device: torch.device, views: str):
    dataset = ImageDataset(samples, classify_transforms(clf.imgsz, train=False, mean=clf.mean, std=clf.std), clf.intensity)
    loader = make_loader(dataset, batch, workers, False, 0, collate_skipping_none, device)
    task = classify.ClassifyTask(clf.class_names, tta=views)
    return evaluate(task, model.to(device), loader, device)


def finish_run(cfg: TrainConfig, run_dir: Path, dataset, device: torch.device) -> dict[str, Any]:
    """Evaluate best weights on val (and test), then write metrics.json, plots and report.html."""
    best = Classifier.load(run_dir / "weights" / "best.safetensors")
    if cfg.tta == "auto" and "val" in dataset.splits:
        choose_views(cfg, best, run_dir, dataset.splits["val"], device)

    def evaluate_split(split: str, samples) -> tuple[dict[str, Any], list[Path]]:
        split_metrics, outputs = _evaluate_split(best.model, best, samples, cfg.batch, cfg.workers, device, best.tta)
        return split_metrics, classify.draw(outputs, dataset.classes, [p for p, _ in samples], run_dir / "plots", prefix=split)

    teacher = getattr(cfg, "teacher", None)
    title = f"cnnkit distill: {cfg.model} from {teacher}" if teacher else f"cnnkit classify: {cfg.model} on {cfg.data}"
    return finish_best_run(cfg, run_dir, dataset.splits, evaluate_split, title, lambda metrics: f"val top1 {metrics['top1']:.4f}"
                           + (f"  test top1 {metrics['test']['top1']:.4f}" if "test" in metrics else ""))


def train(cfg: TrainConfig, explicit: set[str] = frozenset(), recipe: Recipe | None = None) -> Run:
    """One training run (runner.train): classification unless ``recipe`` says otherwise."""
    return run_training(cfg, explicit, recipe or CLASSIFY)


def _class_weights(cfg: TrainConfig, dataset) -> torch.Tensor | None:
    from cnnkit.data.loaders import class_weights

    if cfg.balance != "weights":
        return None
    weights = class_weights([label for _, label in dataset.splits["train"]], len(dataset.classes), cfg.class_weights)
    if dist_utils.is_main():
        console.print("class weights: " + ", ".join(f"{c} {w:.2f}" for c, w in zip(dataset.classes[:12], weights))
                      + (" …" if len(dataset.classes) > 12 else ""))
    return torch.tensor(weights, dtype=torch.float32)


def training_views(cfg: TrainConfig) -> str:
    """The test-time views while training (validation, the best epoch): --tta none, flip or d8, or auto = flip
    when the training augmentation mirrors images (the model learnt that a mirror image has the same label, so
    the mean of both views' logits is a second opinion at no risk), else none."""
    if cfg.tta != "auto":
        return cfg.tta
    return "flip" if spec_from_config(cfg).fliplr > 0 else "none"


def choose_views(cfg: TrainConfig, best: Classifier, run_dir: Path, val_samples, device: torch.device) -> None:
    """--tta auto, after training: the eight symmetries of the square (d8) replace the training-time views when
    they score a higher val top-1 with the best weights. Images with an upright direction (objects, digits,
    text) lose accuracy when turned, so d8 wins only where the data has no upright (textures, cells, aerial or
    microscope images). The choice is recorded in the weights files, so val, predict, export and serve use it."""
    from cnnkit.engine.checkpoint import load_weights, save_state_dict

    base, _ = _evaluate_split(best.model, best, val_samples, cfg.batch, cfg.workers, device, best.tta)
    turned, _ = _evaluate_split(best.model, best, val_samples, cfg.batch, cfg.workers, device, "d8")
    if turned["top1"] <= base["top1"]:
        console.print(f"test-time views: {best.tta} (val top1 {base['top1']:.4f}; the 8 symmetries of the square: {turned['top1']:.4f})")
        return
    console.print(f"test-time views: d8, the 8 symmetries of the square (val top1 {turned['top1']:.4f} against {base['top1']:.4f} "
                  f"with {best.tta}); recorded in the weights (--tta {best.tta} to predict as before)")
    best.tta = "d8"
    for name in ("best.safetensors", "last.safetensors"):
        path = run_dir / "weights" / name
        if path.exists():
            state, meta = load_weights(path)
            save_state_dict(state, path, {**meta, "tta": "d8"})


def _log_prior(cfg: TrainConfig, dataset) -> torch.Tensor | None:
    """--balance logit_adjust (or auto on an imbalanced training split): log of each class's share of the
    training split (a class with no image counts as one, so that its log stays finite)."""
    if cfg.balance not in ("logit_adjust", "auto"):
        return None
    counts = np.bincount([label for _, label in dataset.splits["train"]], minlength=len(dataset.classes)).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    if cfg.balance == "auto":
        ratio = counts.max() / counts.min()
        if ratio < AUTO_BALANCE_RATIO:
            return None
        if dist_utils.is_main():
            console.print(f"imbalanced training set (largest class {ratio:.0f}x the smallest): the loss adjusts the logits by "
                          "the class shares, so rare classes are not given up (--balance auto; --balance none turns it off)")
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def _balanced_sampler(cfg: TrainConfig, samples):
    from cnnkit.data.loaders import BalancedSampler

    if cfg.balance not in ("oversample", "undersample"):
        return None
    return BalancedSampler([label for _, label in samples], cfg.balance, cfg.seed, dist_utils.rank(), dist_utils.world_size())


def _smote_training(cfg: TrainConfig, dataset, model: nn.Module, task, device: torch.device, run_dir: Path):
    """--balance smote: (the task training the model's head alone, its train set: SMOTE-balanced pooled
    features of the frozen backbone; see data/smote.py); None for every other strategy."""
    from cnnkit.data.smote import smote_features
    from cnnkit.engine.checkpoint import load_checkpoint
    from cnnkit.engine.transfer import classifier

    if cfg.balance != "smote":
        return None
    if dist_utils.world_size() > 1:
        # the head would run outside DDP's forward, so its gradients would not be averaged across ranks
        raise CnnkitError("--balance smote runs in one process", "it trains one layer on cached features: start it without torchrun")
    if cfg.resume:  # the run's own frozen backbone (the source is not re-read): the features it trained on
        model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    train_set = smote_features(model, dataset.splits["train"], dataset.classes, classify_transforms(cfg.imgsz, False),
                               cfg.batch, cfg.workers, device, cfg.seed, spec_of(cfg))
    return replace(task, head=classifier(model)), train_set


CLASSIFY = Recipe(
    task=TASK,
    build_model=lambda cfg, dataset: Built(build_classifier(cfg.model, len(dataset.classes), cfg.pretrained)),
    make_task=lambda cfg, dataset, model: classify.ClassifyTask(dataset.classes, cfg.label_smoothing, class_weights=_class_weights(cfg, dataset),
                                                         log_prior=_log_prior(cfg, dataset),
                                                         focal_gamma=cfg.focal_gamma if cfg.loss == "focal" else 0.0,
                                                         mix=batch_mixer(spec_from_config(cfg), len(dataset.classes)),
                                                         tta=training_views(cfg)),
    metadata=lambda cfg, dataset, model: {"class_names": dataset.classes, "num_classes": len(dataset.classes),
                                          "tta": training_views(cfg)},
    finish=finish_run,
    train_sampler=lambda cfg, samples: _balanced_sampler(cfg, samples),
    train_on_features=_smote_training,
)
