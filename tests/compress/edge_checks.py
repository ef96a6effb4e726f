"""Edge runtimes: OpenVINO (IR export, NNCF int8) and ExecuTorch (XNNPACK .pte, PT2E int8) for a classifier, the
YOLO-style detector and a U-Net, each file loaded back in its own runtime and checked against eager PyTorch; val,
predict, bench and serve take the files; Core ML packages converted and their description checked (its runtime is
macOS-only); bad files and a missing extra are one line.

Run by test_edge_runtimes.py in a pytest process of its own (the file name keeps the main session from collecting it).
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.errors import CnnkitError

RUNTIMES = [("openvino", ".xml"), ("executorch", ".pte")]


@pytest.fixture(scope="module")
def yolo_weights(tmp_path_factory) -> Path:
    from test_detect_export import _weights

    return _weights(tmp_path_factory.mktemp("yolo"), "yolo_n")


@pytest.fixture(scope="module")
def shapes_detection(tmp_path_factory) -> Path:
    from cnnkit.data.synth import synth_dataset

    data = tmp_path_factory.mktemp("shapes_detect") / "shapes"
    synth_dataset("shapes", data, task="detect", n=12, imgsz=64, seed=3, val_fraction=0.25, progress=False)
    return data


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> tuple[Path, Path]:
    """(weights, data) of a U-Net trained one epoch on ten generated 32 px scenes."""
    from cnnkit.data.synth import synth_dataset
    from cnnkit.tasks.segment.api import Segmenter

    root = tmp_path_factory.mktemp("unet")
    synth_dataset("shapes", root / "shapes", task="segment", n=10, imgsz=32, seed=4, val_fraction=0.3, progress=False)
    run = Segmenter("unet", encoder="resnet18", imgsz=32).train(str(root / "shapes"), epochs=1, imgsz=32, batch=4, workers=0,
                                                                  out=str(root / "run"), hd95=False)
    return run.dir / "weights" / "best.safetensors", root / "shapes"


@pytest.mark.parametrize("fmt,suffix", RUNTIMES)
def test_classifier_matches_eager_in_val_predict_and_serve(digits_classifier, digits_root, tmp_path, fmt, suffix):
    from cnnkit import Classifier
    from cnnkit.compress.runtime import read_metadata
    from cnnkit.serve.models import load_served
    from cnnkit.tasks import export_weights

    dynamic = fmt == "openvino"  # ExecuTorch programs have a batch of one
    path, parity = export_weights(digits_classifier, fmt, tmp_path / f"m{suffix}", dynamic_batch=dynamic, data="digits")
    assert parity.ok and parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0 and parity.images == 16
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == (["m.bin", "m.xml"] if fmt == "openvino" else ["m.pte"])  # nothing temporary left behind
    meta = read_metadata(path)
    assert meta["task"] == "classify" and meta["deployed"]["format"] == fmt
    assert meta["deployed"]["batch"] == (None if dynamic else 1) and meta["class_names"] == [str(d) for d in range(10)]
    eager, deployed = Classifier.load(digits_classifier), Classifier.load(path)
    samples = sorted((digits_root / "val" / "7").iterdir())[:4] + sorted((digits_root / "val" / "2").iterdir())[:4]
    want, got = eager.predict(samples, device="cpu"), deployed.predict(samples, device="cpu")
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)
    scored = deployed.val("digits", out=str(tmp_path / "val"), workers=0)
    assert scored["top1"] == pytest.approx(eager.val("digits", out=str(tmp_path / "val_eager"), workers=0)["top1"])
    assert load_served(path, "digits").info()["format"] == fmt
    if fmt == "executorch":
        with pytest.raises(CnnkitError, match="ExecuTorch programs here have a fixed batch of 1"):
            export_weights(digits_classifier, fmt, tmp_path / "d.pte", dynamic_batch=True)


@pytest.mark.parametrize("fmt,suffix", RUNTIMES)
def test_int8_keeps_top1_shrinks_the_file_and_holds_int8_operators(digits_classifier, tmp_path, fmt, suffix):
    from cnnkit.compress.runtime import read_metadata
    from cnnkit.tasks import quantize_weights

    path, report = quantize_weights(digits_classifier, "digits", "ptq", fmt, calib_images=64, out=tmp_path / f"m.int8{suffix}")
    assert report["metric"] == "top1" and report["fp32"] > 0.5
    assert abs(report["change_points"]) <= 3.0, report
    assert report["size_mb_fp32"] / report["size_mb_int8"] > 2.5, report  # an IR's .bin counted with its .xml
    assert read_metadata(path)["deployed"]["format"] == f"{fmt}-int8"
    if fmt == "openvino":
        import openvino

        types = [op.get_type_name() for op in openvino.Core().read_model(str(path)).get_ordered_ops()]
        assert types.count("FakeQuantize") >= 4, sorted(set(types))


@pytest.mark.parametrize("fmt,suffix", RUNTIMES)
def test_yolo_detects_what_eager_detects_and_int8_keeps_decoding_in_float(yolo_weights, shapes_detection, tmp_path, fmt, suffix):
    from test_detect_export import _images, assert_detects_as_eager

    from cnnkit.compress.runtime import read_metadata
    from cnnkit.tasks import export_weights, quantize_weights
    from cnnkit.tasks.detect.api import Detector

    path, parity = export_weights(yolo_weights, fmt, tmp_path / f"yolo{suffix}", dynamic_batch=fmt == "openvino")
    assert parity.ok and parity.top1_agreement == 1.0 and parity.agreement_name == "detections matched"
    outside = read_metadata(path)["deployed"].get("postprocess")
    assert (outside is not None) == (fmt == "executorch")  # ExecuTorch has no NMS: cnnkit's runs after the file
    assert_detects_as_eager(yolo_weights, path)
    images = _images([(48, 64), (64, 40), (100, 70)])

    if fmt == "executorch":  # its int8 network is the classifier's route (PT2E, XNNPACK); lowering yolo again costs a minute
        return
    int8, _ = quantize_weights(yolo_weights, str(shapes_detection), "ptq", fmt, calib_images=8, out=tmp_path / f"yolo.int8{suffix}",
                               evaluate=False)
    import openvino

    from cnnkit.compress.openvino_ir import _after_last_convolution

    model = openvino.Core().read_model(str(int8))
    tail = set(_after_last_convolution(model))
    assert any(op.get_type_name() == "NonMaxSuppression" for op in model.get_ops() if op.get_friendly_name() in tail)
    fake = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert fake and not any(user.get_node().get_friendly_name() in tail for op in fake for user in op.output(0).get_target_inputs())
    with torch.no_grad():
        found = Detector.load(int8).model(images)
    assert len(found) == 3 and all(f["boxes"].shape[1:] == (4,) for f in found)


@pytest.mark.parametrize("fmt,suffix", RUNTIMES)
def test_segmenter_matches_eager(unet, tmp_path, fmt, suffix):
    from cnnkit.tasks import export_weights
    from cnnkit.tasks.segment.api import Segmenter

    weights, data = unet
    path, parity = export_weights(weights, fmt, tmp_path / f"unet{suffix}", data=str(data))
    assert parity.ok and parity.max_abs_diff <= 1e-3 * max(parity.output_scale, 1.0)
    eager = Segmenter.load(weights).val(str(data), out=str(tmp_path / "v1"), workers=0)
    deployed = Segmenter.load(path).val(str(data), out=str(tmp_path / "v2"), workers=0)
    assert deployed["miou"] == pytest.approx(eager["miou"], abs=1e-6)


def test_bench_and_cli_take_the_edge_runtimes(digits_classifier, digits_root, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli(["export", "--weights", digits_classifier, "--format", "openvino", "--out", tmp_path / "m.xml"])
    assert code == 0 and out.strip() == str(tmp_path / "m.xml") and "top-1 agreement 100.0%" in err
    code, out, err = run_cli(["classify", "predict", "--weights", tmp_path / "m.xml", digits_root / "val" / "4",
                              "--save-json", tmp_path / "pred.json"])
    assert code == 0, err
    labels = [row["label"] for row in json.loads((tmp_path / "pred.json").read_text())]
    assert len(labels) > 10 and labels.count("4") >= 0.8 * len(labels)
    formats = ["eager", "openvino", "openvino-int8", "executorch", "executorch-int8"]
    code, out, err = run_cli(["bench", "--weights", digits_classifier, "--data", "digits", "--formats", ",".join(formats),
                              "--batch", "1", "--runs", "3", "--warmup", "1", "--calib-images", "32", "--out", tmp_path / "bench"])
    assert code == 0, err
    rows = {r["format"]: r for r in json.loads((tmp_path / "bench" / "bench.json").read_text())}
    assert set(rows) == set(formats)
    for fmt in ("openvino", "executorch"):
        assert rows[fmt]["metric"] == pytest.approx(rows["eager"]["metric"])
        assert abs(rows[f"{fmt}-int8"]["metric"] - rows["eager"]["metric"]) <= 0.03
        assert rows[fmt]["size_mb"] > 3 * rows[f"{fmt}-int8"]["size_mb"] > 0  # an IR's .bin included
    for backend in ("openvino", "executorch"):
        code, out, err = run_cli(["quantize", "--weights", digits_classifier, "--backend", backend, "--method", "qat", "--data", "digits"])
        assert code == 2 and err.count("\n") == 1 and f"--backend {backend} quantizes after training (ptq)" in err


def test_bad_ir_files_are_one_line(digits_classifier, tmp_path):
    import openvino

    from cnnkit.compress.runtime import load_deployed
    from cnnkit.tasks import export_weights

    path, _ = export_weights(digits_classifier, "openvino", tmp_path / "m.xml")
    foreign = tmp_path / "foreign.xml"
    foreign.write_text("<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'><circle r='3'/></svg>")
    foreign.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(CnnkitError, match=r"foreign.xml: not an OpenVINO IR that OpenVINO can read") as caught:
        load_deployed(foreign)
    assert "\n" not in str(caught.value)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "m.xml").write_bytes(path.read_bytes())
    with pytest.raises(CnnkitError, match=r"m.xml: its weights file m.bin is missing beside it"):
        load_deployed(alone / "m.xml")
    (alone / "m.bin").write_bytes(path.with_suffix(".bin").read_bytes()[:1000])  # cut short
    with pytest.raises(CnnkitError, match=r"m.xml: not an OpenVINO IR that OpenVINO can read"):
        load_deployed(alone / "m.xml")
    stripped = tmp_path / "stripped"  # an IR that OpenVINO wrote from someone else's model: no cnnkit metadata
    stripped.mkdir()
    openvino.save_model(openvino.convert_model(_tiny_onnx(tmp_path)), str(stripped / "x.xml"))
    with pytest.raises(CnnkitError, match=r"x.xml: no cnnkit metadata in this file"):
        load_deployed(stripped / "x.xml")


def test_bad_pte_files_are_one_line(digits_classifier, tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from cnnkit.compress.runtime import load_deployed
    from cnnkit.tasks import export_weights

    path, _ = export_weights(digits_classifier, "executorch", tmp_path / "m.pte")
    cut = tmp_path / "cut.pte"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    garbage = tmp_path / "garbage.pte"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, not a program" * 20)
    for bad in (cut, garbage):
        with pytest.raises(CnnkitError, match=rf"{bad.name}: not an ExecuTorch program the runtime can load") as caught:
            load_deployed(bad)
        assert "\n" not in str(caught.value)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()  # someone else's program: no metadata
    program = to_edge_transform_and_lower(torch.export.export(net, (torch.rand(1, 3, 8, 8),)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    (tmp_path / "plain.pte").write_bytes(program.buffer)
    with pytest.raises(CnnkitError, match=r"plain.pte: no cnnkit metadata in this file"):
        load_deployed(tmp_path / "plain.pte")


def test_what_a_runtime_cannot_run_is_one_line(tmp_path):
    from test_detect_export import _weights

    from cnnkit.tasks import export_weights

    with pytest.raises(CnnkitError, match=r"ssdlite: torchvision's detectors .* which ExecuTorch cannot run") as caught:
        export_weights(_weights(tmp_path, "ssdlite", imgsz=96), "executorch", tmp_path / "f.pte")
    assert "\n" not in str(caught.value) and "--format onnx or openvino" in caught.value.hint


def test_coreml_package_states_its_inputs_outputs_and_metadata(digits_classifier, yolo_weights, tmp_path):
    from cnnkit.compress.coreml_package import RUNS_HERE, read_spec
    from cnnkit.compress.runtime import load_deployed, read_metadata
    from cnnkit.tasks import export_weights, owner_of

    path, parity = export_weights(digits_classifier, "coreml", tmp_path / "m.mlpackage")
    spec = read_spec(path)
    (given,), (answer,) = spec.description.input, spec.description.output
    assert given.name == "images" and list(given.type.multiArrayType.shape) == [1, 3, 16, 16]
    assert given.type.multiArrayType.dataType == given.type.multiArrayType.FLOAT32 and answer.name == "logits"
    meta = read_metadata(path)
    assert meta["deployed"]["format"] == "coreml" and meta["class_names"] == [str(d) for d in range(10)]
    assert owner_of(path).name == "classify"
    if not RUNS_HERE:  # conversion only: the description was checked, and running it is one line
        assert parity.images == 0 and "parity not checked: Core ML runs on Apple devices" in parity.line()
        with pytest.raises(CnnkitError, match=r"m.mlpackage: Core ML models run on Apple devices and macOS only") as caught:
            load_deployed(path)
        assert "\n" not in str(caught.value)
    again, _ = export_weights(digits_classifier, "coreml", path)  # a package is a folder: replaced whole
    assert again == path and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    detector, _ = export_weights(yolo_weights, "coreml", tmp_path / "yolo.mlpackage")
    assert [o.name for o in read_spec(detector).description.output] == ["features"]
    assert "NMS in PyTorch" in read_metadata(detector)["deployed"]["postprocess"]
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(CnnkitError, match=r"empty.mlpackage: not a Core ML package \(no Manifest.json inside\)"):
        read_metadata(tmp_path / "empty.mlpackage")


def _tiny_onnx(tmp_path: Path) -> str:
    """An ONNX file of a plain torch module (no cnnkit metadata)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    target = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 8, 8),), str(target), dynamo=True)
    return str(target)


@pytest.mark.parametrize("fmt,package,extra", [("openvino", "openvino", "openvino"), ("executorch", "executorch", "executorch"),
                                               ("coreml", "coremltools", "coreml")])
def test_a_missing_extra_names_the_pip_install(digits_classifier, monkeypatch, tmp_path, fmt, package, extra):
    from cnnkit.tasks import export_weights, quantize_weights

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name.split(".")[0] in (package, "nncf"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(CnnkitError, match=rf"--format {fmt} needs the {package} package") as caught:
        export_weights(digits_classifier, fmt, tmp_path / f"m{ {'openvino': '.xml', 'executorch': '.pte'}.get(fmt, '.mlpackage')}")
    assert f'pip install "cnnkit[{extra}]"' in str(caught.value)
    if fmt == "coreml":  # no int8 route for Core ML in cnnkit
        return
    with pytest.raises(CnnkitError, match=rf"--backend {fmt} needs the {package} package"):
        quantize_weights(digits_classifier, "digits", "ptq", fmt)
