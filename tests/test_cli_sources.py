"""Every verb that reads images takes them both ways users type them, as the field's CLIs do: positional
arguments and repeated --source (cli.takes_sources), also mixed, with the same result. Untrained networks
suffice: the checks are about which files each command read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
FILES = ["a/0.png", "a/1.png", "b/2.png", "b/3.png"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Untrained classify (tiny_cnn), detect (yolo_n) and segment (fcn) weights files."""
    import torch

    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.backbones import build_classifier
    from cnnkit.models.detectors import build_detector
    from cnnkit.models.segmenters import build_segmenter

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    names = ["x", "y"]
    return {
        "classify": save_weights(build_classifier("tiny_cnn", 2), folder / "classify.safetensors",
                                 {"task": "classify", "model": "tiny_cnn", "imgsz": 16, "class_names": names,
                                  "mean": MEAN, "std": STD}),
        "detect": save_weights(build_detector("yolo_n", 2, 64), folder / "detect.safetensors",
                               {"task": "detect", "model": "yolo_n", "imgsz": 64, "class_names": names}),
        "segment": save_weights(build_segmenter("fcn", "resnet18", 2), folder / "segment.safetensors",
                                {"task": "segment", "model": "fcn", "encoder": "resnet18", "imgsz": 32, "class_names": names}),
    }


@pytest.fixture
def images(tmp_path, monkeypatch) -> Path:
    """a/0.png, a/1.png, b/2.png, b/3.png (b/3.png a copy of a/0.png, for dedup); the cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in FILES[:3]:
        Path(name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(name)
    Path("b/3.png").write_bytes(Path("a/0.png").read_bytes())
    return tmp_path


# The same inputs, spelled three ways: positional, --source, and both at once.
SPELLINGS = {"positional": ["a", "b/2.png", "b/3.png"],
             "option": ["--source", "a", "--source", "b/2.png", "--source", "b/3.png"],
             "mixed": ["a", "--source", "b/2.png", "--source", "b/3.png"]}


def _files(rows, key="file") -> list[str]:
    return sorted(Path(r[key]).resolve().relative_to(Path.cwd().resolve()).as_posix() for r in rows)


def _classify_predict(w, sources):
    return ["classify", "predict", *sources, "--weights", w["classify"], "--device", "cpu", "--save-json", "out.json"], \
        lambda: _files(json.loads(Path("out.json").read_text()))


def _classify_features(w, sources):
    return ["classify", "features", *sources, "--weights", w["classify"], "--device", "cpu", "--workers", "0",
            "--out", "f.npz"], lambda: _files([{"file": f} for f in np.load("f.npz")["files"]])


def _classify_explain(w, sources):
    return ["classify", "explain", *sources, "--weights", w["classify"], "--device", "cpu", "--out", "ex"], \
        lambda: sorted(p.relative_to("ex").as_posix() for p in Path("ex").rglob("*.png"))


def _detect_predict(w, sources):
    return ["detect", "predict", *sources, "--weights", w["detect"], "--device", "cpu", "--no-save", "--save-json", "out.json"], \
        lambda: _files(json.loads(Path("out.json").read_text()))


def _segment_predict(w, sources):
    return ["segment", "predict", *sources, "--weights", w["segment"], "--device", "cpu", "--out", "pred",
            "--save-json", "out.json"], lambda: _files(json.loads(Path("out.json").read_text()))


def _embed_index(w, sources):
    from cnnkit.retrieval.index import GalleryIndex

    return ["embed", "index", *sources, "--out", "idx", "--weights", w["classify"], "--device", "cpu", "--workers", "0"], \
        lambda: _files([{"file": f} for f in GalleryIndex.load("idx").files])


def _embed_search(w, sources):
    from cnnkit.api import build_index

    build_index("gallery", ["a"], w["classify"], workers=0)
    return ["embed", "search", *sources, "--index", "gallery", "-k", "1", "--device", "cpu", "--out", "s",
            "--save-json", "out.json"], lambda: _files(json.loads(Path("out.json").read_text()), key="query")


def _embed_dedup(w, sources):
    return ["embed", "dedup", *sources, "--weights", w["classify"], "--threshold", "0.999", "--device", "cpu", "--out", "d"], \
        lambda: [sorted(Path(f).name for f in g["files"]) for g in json.loads(Path("d/duplicates.json").read_text())["groups"]]


def _embed_cluster(w, sources):
    return ["embed", "cluster", *sources, "-k", "2", "--weights", w["classify"], "--device", "cpu", "--out", "c"], \
        lambda: _files([{"file": f} for c in json.loads(Path("c/clusters.json").read_text())["clusters"] for f in c["files"]])


VERBS = {"classify predict": _classify_predict, "classify features": _classify_features, "classify explain": _classify_explain,
         "detect predict": _detect_predict, "segment predict": _segment_predict, "embed index": _embed_index,
         "embed search": _embed_search, "embed dedup": _embed_dedup, "embed cluster": _embed_cluster}
EXPECTED = {"classify explain": ["0.png", "1.png", "2.png", "3.png"],  # one PNG per image, below the folder it came from
            "embed dedup": [["0.png", "3.png"]]}  # b/3.png is a copy of a/0.png


@pytest.mark.parametrize("verb", VERBS)
def test_positional_and_option_sources_read_the_same_files(verb, weights, images, monkeypatch, capsys):
    seen = {}
    for spelling, sources in SPELLINGS.items():
        args, result = VERBS[verb](weights, sources)
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 0, f"{verb} with {spelling} sources: {err}"
        seen[spelling] = result()
    assert seen["positional"] == EXPECTED.get(verb, FILES), seen
    assert seen["option"] == seen["mixed"] == seen["positional"]


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_both_spellings(verb, monkeypatch, capsys):
    code, out, _ = run_cli([*verb.split(), "--help"], monkeypatch, capsys)
    metavar = "QUERY" if verb == "embed search" else "IMAGE" if verb == "classify explain" else "SOURCE"
    assert code == 0 and f"[{metavar}]..." in out and "--source" in out and f"the same as the {metavar} arguments" in out


@pytest.mark.parametrize("verb, metavar", [("classify predict", "SOURCE"), ("classify features", "SOURCE"),
                                           ("classify explain", "IMAGE"), ("detect predict", "SOURCE"),
                                           ("segment predict", "SOURCE"), ("embed search", "QUERY")])
def test_no_sources_either_way_is_one_line(verb, metavar, weights, images, monkeypatch, capsys):
    w = weights["detect" if verb.startswith("detect") else "segment" if verb.startswith("segment") else "classify"]
    extra = ["--index", "idx"] if verb == "embed search" else ["--weights", w, "--out", "x.npz"] if verb == "classify features" \
        else ["--weights", w]
    code, _, err = run_cli([*verb.split(), *extra], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [f"cnnkit: missing {metavar} (pass images, folders or quoted globs as "
                                                      "arguments or with --source (repeatable))"]
