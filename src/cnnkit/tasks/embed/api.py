"""Embeddings and visual search: the Embedder (train / embed / val / load), the EMBED_RECIPE the runner trains,
and the index verbs (build_index, search_index, dedup, cluster) over a FAISS gallery.

    from cnnkit import Embedder
    emb = Embedder("resnet18").train(data="identities", epochs=30)
    build_index("gallery/", ["photos/"], weights="runs/embed/exp/weights/best.safetensors")
    search_index("gallery/", ["query.png"], k=5)                   # [{"query", "neighbors": [{"file", "score"}]}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from cnnkit.version import __version__
from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, classify_transforms
from cnnkit.console import console, warn
from cnnkit.data.builtin import resolve_data
from cnnkit.data.images import load_image
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.intensity import BEFORE_RECORD, IntensitySpec
from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError
from cnnkit.tasks.embed import task as embed_task
from cnnkit.runner import (Built, ModelFile, Recipe, Run, adopt_model_file, beside_run, finish_best_run, publish,  # noqa: F401
                           read_model_file, split_samples, train_and_reload)

from cnnkit.tasks.classify.api import Classifier, _intensity_options, expand_sources  # noqa: F401

EMBED = "embed"


class Embedder:
    """Images -> L2-normalised vectors: a metric-learning model (``embed train``) or any classifier's
    pooled features (``Embedder.load`` of a classify weights file)."""

    def __init__(self, model: str = "tiny_cnn", dim: int = 128, imgsz: int = 224, pretrained: bool = False):
        self.model_name, self.dim, self.imgsz, self.pretrained = model, dim, imgsz, pretrained
        self.class_names: list[str] | None = None  # the identities of its training set, where the weights record them
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.intensity = IntensitySpec()  # as Classifier's
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.sha256 = ""
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)  # (parameters, GFLOPs) where the weights record them

    @classmethod
    def load(cls, weights: str | Path) -> "Embedder":
        """An embedder from an embed weights file, or from a classify one (its pooled features)."""
        from cnnkit.engine.checkpoint import read_metadata
        from cnnkit.models.embedder import build_embedder
        from cnnkit.retrieval.index import file_sha256

        meta = read_metadata(weights)
        if meta.get("task") == "classify":
            clf = Classifier.load(weights)
            emb = cls(clf.model_name, 0, clf.imgsz)
            emb.model = clf.model
            file = ModelFile(Path(weights), meta)  # the network came with the classifier
        else:
            file = read_model_file(weights, EMBED)
            meta = file.meta
            emb = cls(meta["model"], int(meta["dim"]), int(meta["imgsz"]))
            emb.model = build_embedder(meta["model"], int(meta["dim"]))
        emb.mean, emb.std = tuple(meta["mean"]), tuple(meta["std"])
        emb.class_names = meta.get("class_names")
        emb.intensity = IntensitySpec.from_dict(meta.get("intensity"), missing=BEFORE_RECORD)
        adopt_model_file(emb, file)
        emb.sha256 = file_sha256(weights)
        emb.model.eval()
        return emb

    def train(self, data: str = "digits", **options: Any) -> Run:
        """Metric learning on an ImageFolder whose classes are identities; options are EmbedConfig fields."""
        from cnnkit.tasks.embed.config import EmbedConfig

        defaults = {"model": self.model_name, "pretrained": self.pretrained, "imgsz": self.imgsz, "dim": self.dim,
                    **_intensity_options(self.intensity)}
        return train_and_reload(self, EmbedConfig, EMBED_RECIPE, data, defaults, options)

    def embed(self, sources: Iterable[str | Path] | str | Path, batch: int = 64, device: str = "auto", workers: int = 2,
              progress: bool = True) -> dict[str, np.ndarray]:
        """{"vectors": float32 [N, D] (unit length), "files": [N] (absolute paths)} of the readable images."""
        from cnnkit.retrieval.index import normalize
        from cnnkit.tasks.classify.features import extract_features

        model = self._require_model()
        source_list = [sources] if isinstance(sources, (str, Path)) else list(sources)
        # the same image reached twice (overlapping folders, a glob and a file) is embedded once
        files = list(dict.fromkeys(path.resolve() for path, _ in expand_sources(source_list)))
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        arrays = extract_features(model, files, None, transform, batch, workers, dist_utils.select_device(device),
                                  progress=progress, intensity=self.intensity)
        return {"vectors": normalize(arrays["features"]), "files": arrays["files"]}

    def embed_arrays(self, images: list[np.ndarray], device: str = "auto", batch: int = 64) -> np.ndarray:
        """Unit vectors float32 [N, D] of in-memory RGB uint8 images (a tracker's box crops), resized and
        normalised as ``embed`` does files."""
        from cnnkit.retrieval.index import normalize
        from cnnkit.tasks.classify.features import pooled_features

        model = self._require_model()
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                tensors = torch.stack([transform(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
                                       for image in images[start:start + batch]])
                vectors.append(pooled_features(model, tensors.to(dev)).float().cpu().numpy())
        return normalize(np.concatenate(vectors))

    def predict_images(self, images: list[Any], names: list[str], device: str = "auto", draw: bool = False) -> list[dict[str, Any]]:
        """[{"file", "vector": [D floats, unit length]}] for decoded pictures (8-bit RGB, PIL or HxWx3 arrays), ``names``
        their "file" (the vectors of `embed` and of an index; nothing to draw: ``draw`` is accepted and ignored)."""
        vectors = self.embed_arrays([np.array(image) for image in images], device)  # writable copies for torch
        return [{"file": name, "vector": [round(float(v), 6) for v in vector]} for name, vector in zip(names, vectors)]

    def val(self, data: str, query_split: str | None = None, gallery_split: str = "train", out: str | Path | None = None,
            batch: int = 64, device: str = "auto", workers: int = 2) -> dict[str, Any]:
        """recall@1, recall@5 and map of ``query_split`` (default: test, else val) against ``gallery_split``;
        with one split for both, leave-one-out within it. Writes metrics.json, a retrieval sheet and report.html."""
        from cnnkit.retrieval.metrics import retrieval_metrics

        self._require_model()
        dataset = load_imagefolder(resolve_data(data), val_split=self.val_split, seed=self.split_seed)
        query_split = query_split or ("test" if "test" in dataset.splits else "val")
        queries, gallery = (split_samples(data, dataset.splits, split) for split in (query_split, gallery_split))
        out_dir = beside_run(out, self.weights_path, EMBED)
        q = self._split_vectors(queries, batch, device, workers)
        g = q if gallery_split == query_split else self._split_vectors(gallery, batch, device, workers)
        metrics = retrieval_metrics(q["vectors"], q["labels"], g["vectors"], g["labels"], same_set=gallery_split == query_split)
        metrics = {"query_split": query_split, "gallery_split": gallery_split, "queries": len(q["files"]),
                   "gallery": len(g["files"]), **metrics}
        paths = [embed_task.retrieval_sheet(q, g, dataset.classes, out_dir / "plots" / f"{query_split}_vs_{gallery_split}.png",
                              same_set=gallery_split == query_split)]
        publish(out_dir, f"cnnkit embed val: {self.model_name} on {data} ({query_split} vs {gallery_split})",
                {"weights": str(self.weights_path), "data": str(data)}, metrics, paths,
                f"{query_split} vs {gallery_split}: recall@1 {metrics['recall@1']:.4f}  recall@5 {metrics['recall@5']:.4f}  "
                f"map {metrics['map']:.4f}")
        return metrics

    def _split_vectors(self, samples, batch: int, device: str, workers: int) -> dict[str, np.ndarray]:
        from cnnkit.retrieval.index import normalize
        from cnnkit.tasks.classify.features import extract_features

        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        arrays = extract_features(self._require_model(), [p for p, _ in samples], [label for _, label in samples], transform,
                                  batch, workers, dist_utils.select_device(device), intensity=self.intensity)
        return {"vectors": normalize(arrays["features"]), "files": arrays["files"], "labels": arrays["labels"]}

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise CnnkitError("this Embedder has no weights yet", "train it first or use Embedder.load(FILE)")
        return self.model


def finish_embed_run(cfg, run_dir: Path, dataset, device: torch.device) -> dict[str, Any]:
    """Best weights: leave-one-out retrieval on val, and test queries against the train gallery when
    there is a test split; metrics.json, plots and report.html."""
    from cnnkit.retrieval.metrics import retrieval_metrics

    best = Embedder.load(run_dir / "weights" / "best.safetensors")
    plot_dir = run_dir / "plots"

    def evaluate_split(split: str, samples) -> tuple[dict[str, Any], list[Path]]:
        q = best._split_vectors(samples, cfg.batch, str(device), cfg.workers)
        if split == "val":  # leave-one-out within val
            return (retrieval_metrics(q["vectors"], q["labels"], q["vectors"], q["labels"], same_set=True),
                    embed_task.draw({"embeddings": q["vectors"], "labels": q["labels"]}, dataset.classes,
                                    [Path(f) for f in q["files"]], plot_dir, prefix="val"))
        g = best._split_vectors(dataset.splits["train"], cfg.batch, str(device), cfg.workers)
        return ({"query_split": split, "gallery_split": "train",
                 **retrieval_metrics(q["vectors"], q["labels"], g["vectors"], g["labels"])},
                [embed_task.retrieval_sheet(q, g, dataset.classes, plot_dir / f"{split}_vs_train.png", same_set=False)])

    return finish_best_run(cfg, run_dir, dataset.splits, evaluate_split, f"cnnkit embed: {cfg.model} on {cfg.data}",
                           lambda metrics: f"val recall@1 {metrics['recall@1']:.4f}"
                           + (f"  test-vs-train recall@1 {metrics['test']['recall@1']:.4f}" if "test" in metrics else ""))


def _build_embed_model(cfg, dataset):
    from cnnkit.models.embedder import build_embedder

    return Built(build_embedder(cfg.model, cfg.dim, cfg.pretrained))


def _embed_sampler(cfg, samples):
    """Batches of --per-class images of each identity (None: plain shuffled batches)."""
    from cnnkit.data.loaders import PerClassSampler

    if cfg.per_class <= 0:
        return None
    return PerClassSampler([label for _, label in samples], cfg.per_class, cfg.seed, dist_utils.rank(), dist_utils.world_size())


def _make_embed_task(cfg, dataset, model):
    from cnnkit.tasks.embed.task import EmbedTask

    return EmbedTask(cfg.loss, cfg.margin, cfg.temperature)


EMBED_RECIPE = Recipe(
    task=EMBED,
    build_model=_build_embed_model,
    make_task=_make_embed_task,
    metadata=lambda cfg, dataset, model: {"dim": cfg.dim, "loss": cfg.loss, "class_names": dataset.classes},
    finish=finish_embed_run,
    train_sampler=_embed_sampler,
)


def _index_embedder(gallery, weights: str | Path | None) -> Embedder:
    """The model that made the index's vectors: --weights (checked against the index) or the index's copy."""
    if weights is not None:
        embedder = Embedder.load(weights)
        gallery.check_model(embedder.sha256, weights)
        return embedder
    if gallery.model_file is None:
        raise CnnkitError(f"the index has no copy of its model ({gallery.meta.model})", "pass --weights FILE, the model it was built with")
    embedder = Embedder.load(gallery.model_file)
    gallery.check_model(embedder.sha256, gallery.model_file)
    return embedder


def _matches(files: list[str], patterns: Iterable[str | Path]) -> tuple[list[str], list[str]]:
    """(indexed files matching any pattern, patterns that matched nothing): a pattern is a file, a folder
    (everything under it) or a glob, compared with the absolute paths the index stores."""
    import fnmatch
    import os

    matched: set[str] = set()
    unmatched: list[str] = []
    for pattern in patterns:
        target = str(Path(pattern).expanduser().absolute())
        resolved = str(Path(pattern).expanduser().resolve())
        hit = {f for f in files if f in (target, resolved) or f.startswith(target + os.sep) or f.startswith(resolved + os.sep)
               or fnmatch.fnmatchcase(f, target)}
        if not hit:
            unmatched.append(str(pattern))
        matched |= hit
    return sorted(matched), unmatched


def build_index(out: str | Path, sources: Iterable[str | Path] = (), weights: str | Path | None = None, kind: str = "flat",
                add: bool = False, remove: Iterable[str | Path] = (), nlist: int = 0, nprobe: int = 8, hnsw_m: int = 32,
                ef_search: int = 64, batch: int = 64, device: str = "auto", workers: int = 2):
    """Build the index in ``out`` from ``sources`` embedded by ``weights``; or, with ``add``/``remove``,
    change an existing one (new images embedded by the index's own model; removals need no model).
    Returns the GalleryIndex; the directory is replaced in one swap."""
    from cnnkit.retrieval.index import GalleryIndex, check_index_target

    sources, remove = list(sources), list(remove)
    out = Path(out)
    if add or remove:
        gallery = GalleryIndex.load(out)
        before = gallery.meta.count
        if remove:
            files, unmatched = _matches(gallery.files, remove)
            for pattern in unmatched:
                warn(f"{pattern}: not in the index (nothing removed for it)")
            gallery.remove(files)
        added = 0
        if add:
            if not sources:
                raise CnnkitError("--add needs images: pass --source DIR|GLOB|FILE")
            embedder = _index_embedder(gallery, weights)
            vectors = embedder.embed(sources, batch, device, workers)
            added = gallery.add(vectors["vectors"], vectors["files"])
        gallery.save(out)
        console.print(f"{out}: {before} -> {gallery.meta.count} images ({added} added, {before + added - gallery.meta.count} removed)")
        return gallery
    if weights is None:
        raise CnnkitError("building an index needs --weights FILE (an embed or classify weights file)")
    if not sources:
        raise CnnkitError("building an index needs --source DIR|GLOB|FILE")
    check_index_target(out)  # before minutes of embedding, not after
    embedder = Embedder.load(weights)
    vectors = embedder.embed(sources, batch, device, workers)
    gallery = GalleryIndex.build(vectors["vectors"], list(vectors["files"]), kind, embedder.sha256, embedder.model_name,
                                 Path(weights), nlist, nprobe, hnsw_m, ef_search, __version__)
    gallery.save(out)
    console.print(f"{out}: {kind} index of {gallery.meta.count} images, {gallery.meta.dim}-d, model {embedder.model_name}")
    return gallery


def search_index(index: str | Path, queries: Iterable[str | Path], k: int = 5, weights: str | Path | None = None,
                 batch: int = 64, device: str = "auto", workers: int = 0) -> list[dict[str, Any]]:
    """[{"query", "neighbors": [{"file", "score"}, …]}] best first (score = cosine similarity)."""
    from cnnkit.retrieval.index import GalleryIndex

    gallery = GalleryIndex.load(index)
    if k > gallery.meta.count:
        raise CnnkitError(f"-k {k} is larger than the gallery of {index} ({gallery.meta.count} images)",
                          f"use -k {max(1, gallery.meta.count)} or less")
    queries = list(queries)
    for query in queries:  # every query is asked for by name: an unreadable one is an error, not a skip
        if Path(query).is_file():
            load_image(query)
    embedder = _index_embedder(gallery, weights)
    vectors = embedder.embed(queries, batch, device, workers, progress=len(queries) > batch)
    scores, rows = gallery.search(vectors["vectors"], k)
    return [{"query": str(q), "neighbors": [{"file": gallery.files[r], "score": float(s)} for s, r in zip(srow, rrow) if r >= 0]}
            for q, srow, rrow in zip(vectors["files"], scores, rows)]


def _vectors_for(index: str | Path | None, sources: Iterable[str | Path], weights: str | Path | None, batch: int,
                 device: str, workers: int) -> tuple[np.ndarray, list[str]]:
    from cnnkit.retrieval.index import GalleryIndex

    sources = list(sources)
    if index is not None:
        if sources:
            raise CnnkitError("pass either --index or --source, not both")
        gallery = GalleryIndex.load(index)
        return gallery.vectors, gallery.files
    if weights is None or not sources:
        raise CnnkitError("pass --index INDEX_DIR, or --source DIR with --weights FILE")
    vectors = Embedder.load(weights).embed(sources, batch, device, workers)
    return vectors["vectors"], list(vectors["files"])


def dedup(index: str | Path | None = None, sources: Iterable[str | Path] = (), weights: str | Path | None = None,
          threshold: float = 0.95, batch: int = 64, device: str = "auto", workers: int = 2) -> list[dict[str, Any]]:
    """Groups of near-duplicates: images linked by cosine similarity >= threshold (connected
    components of that graph), largest first: [{"files", "min_score", "max_score"}]."""
    from cnnkit.retrieval.groups import duplicate_groups

    if not -1.0 <= threshold <= 1.0:
        raise CnnkitError(f"--threshold must be between -1 and 1 (cosine similarity), got {threshold}")
    vectors, files = _vectors_for(index, sources, weights, batch, device, workers)
    return duplicate_groups(vectors, files, threshold)


def cluster(k: int, index: str | Path | None = None, sources: Iterable[str | Path] = (), weights: str | Path | None = None,
            seed: int = 0, batch: int = 64, device: str = "auto", workers: int = 2) -> dict[str, Any]:
    """Spherical k-means (FAISS) of the embeddings: {"clusters": [{"id", "size", "files", "scores"}], "assignment": [N]}."""
    from cnnkit.retrieval.groups import kmeans_clusters

    vectors, files = _vectors_for(index, sources, weights, batch, device, workers)
    if not 1 <= k <= len(files):
        raise CnnkitError(f"-k {k} must be between 1 and the number of images ({len(files)})")
    return kmeans_clusters(vectors, files, k, seed)
