"""The Python API in one place; the CLI is a thin layer over it. Each task's class lives in its folder
(cnnkit/tasks/<task>/api.py); this module re-exports them for users, and nothing inside cnnkit imports it.

    from cnnkit import Classifier
    clf = Classifier("resnet18")                                   # or Classifier.load("runs/classify/exp/weights/best.safetensors")
    run = clf.train(data="digits", epochs=5, imgsz=32)           # run.dir, run.metrics
    preds = clf.predict(["a.png", "b.png"])                        # [{"file", "label", "score", "topk"}]
"""

from cnnkit.runner import Built, Recipe, Run, evaluate_run_splits, publish_run, resolve_run
from cnnkit.tasks.classify.api import CLASSIFY, Classifier, expand_sources, finish_run, train
from cnnkit.tasks.detect.api import Detector
from cnnkit.tasks.distill.api import distill
from cnnkit.tasks.embed.api import EMBED_RECIPE, Embedder, build_index, cluster, dedup, search_index
from cnnkit.tasks.instance.api import InstanceSegmenter
from cnnkit.tasks.segment.api import Segmenter
from cnnkit.tasks.track.api import Tracker

__all__ = ["Built", "CLASSIFY", "Classifier", "Detector", "EMBED_RECIPE", "Embedder", "InstanceSegmenter", "Recipe", "Run",
           "Segmenter", "build_index", "cluster", "dedup", "distill", "evaluate_run_splits", "expand_sources", "finish_run",
           "publish_run", "resolve_run", "search_index", "Tracker", "train"]
