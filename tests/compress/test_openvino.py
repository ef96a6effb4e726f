"""OpenVINO: the IR export and NNCF int8 of a classifier, the YOLO-style detector (decoding and NMS inside the graph)
and a U-Net, each loaded back in OpenVINO's CPU plugin and checked against eager PyTorch; val, predict, bench and serve
take the files; bad files and a missing extra are one line."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.errors import CnnkitError


def test_classifier_ir_matches_eager_in_val_predict_and_serve(digits_classifier, digits_root, tmp_path):
    from cnnkit import Classifier
    from cnnkit.compress.runtime import read_metadata
    from cnnkit.serve.models import load_served
    from cnnkit.tasks import export_weights

    path, parity = export_weights(digits_classifier, "openvino", tmp_path / "m.xml", dynamic_batch=True, data="digits")
    assert parity.ok and parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0 and parity.images == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # nothing temporary left behind
    meta = read_metadata(path)
    assert meta["task"] == "classify" and meta["deployed"]["format"] == "openvino" and meta["deployed"]["batch"] is None
    assert meta["class_names"] == [str(d) for d in range(10)]
    eager, deployed = Classifier.load(digits_classifier), Classifier.load(path)
    samples = sorted((digits_root / "val" / "7").iterdir())[:4] + sorted((digits_root / "val" / "2").iterdir())[:4]
    want, got = eager.predict(samples, device="cpu"), deployed.predict(samples, device="cpu")
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)
    scored = deployed.val("digits", out=str(tmp_path / "val"), workers=0)
    assert scored["top1"] == pytest.approx(eager.val("digits", out=str(tmp_path / "val_eager"), workers=0)["top1"])
    assert load_served(path, "digits").info()["format"] == "openvino"

    fixed, parity = export_weights(digits_classifier, "openvino", tmp_path / "fixed" / "m.xml", data="digits")
    assert parity.ok and read_metadata(fixed)["deployed"]["batch"] == 1  # batch 1, run an image at a time on any batch


def test_nncf_int8_keeps_top1_shrinks_the_file_and_holds_int8_operators(digits_classifier, tmp_path):
    import openvino

    from cnnkit.compress.runtime import read_metadata
    from cnnkit.tasks import quantize_weights

    path, report = quantize_weights(digits_classifier, "digits", "ptq", "openvino", calib_images=64, out=tmp_path / "m.int8.xml")
    assert report["metric"] == "top1" and report["fp32"] > 0.5
    assert abs(report["change_points"]) <= 3.0, report
    assert report["size_mb_fp32"] / report["size_mb_int8"] > 2.5, report  # the .bin counted with the .xml
    assert read_metadata(path)["deployed"]["format"] == "openvino-int8"
    types = [op.get_type_name() for op in openvino.Core().read_model(str(path)).get_ordered_ops()]
    assert types.count("FakeQuantize") >= 4, sorted(set(types))


def test_yolo_ir_detects_what_eager_detects_and_int8_keeps_decoding_in_float(tmp_path):
    import openvino

    from test_detect_export import _images, _weights

    from cnnkit.compress.openvino_ir import _after_last_convolution
    from cnnkit.data.synth import synth_dataset
    from cnnkit.models.detectors import set_postprocess
    from cnnkit.tasks import export_weights, quantize_weights
    from cnnkit.tasks.detect.api import Detector

    weights = _weights(tmp_path, "yolo_n")
    path, parity = export_weights(weights, "openvino", tmp_path / "yolo.xml", dynamic_batch=True)
    assert parity.ok and parity.top1_agreement == 1.0 and parity.agreement_name == "detections matched"
    eager, deployed = Detector.load(weights), Detector.load(path)
    for det in (eager, deployed):
        set_postprocess(det.model, 0.05, 0.5, 100)
    images = _images([(48, 64), (64, 40), (100, 70)])  # letterboxed by the deployed model, padded by eager
    with torch.no_grad():
        want, got = eager.model.eval()(images), deployed.model(images)
    for w, g in zip(want, got):
        assert len(w["boxes"]) > 0
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-3, rtol=1e-4)
        assert torch.equal(g["labels"], w["labels"])

    data = tmp_path / "shapes"
    synth_dataset("shapes", data, task="detect", n=12, imgsz=64, seed=3, val_fraction=0.25, progress=False)
    int8, _ = quantize_weights(weights, str(data), "ptq", "openvino", calib_images=8, out=tmp_path / "yolo.int8.xml", evaluate=False)
    model = openvino.Core().read_model(str(int8))
    tail = set(_after_last_convolution(model))
    assert any(op.get_type_name() == "NonMaxSuppression" for op in model.get_ops() if op.get_friendly_name() in tail)
    fake = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert fake and not any(user.get_node().get_friendly_name() in tail for op in fake for user in op.output(0).get_target_inputs())
    with torch.no_grad():
        found = Detector.load(int8).model(images)
    assert len(found) == 3 and all(f["boxes"].shape[1:] == (4,) for f in found)


def test_segmenter_ir_matches_eager(tmp_path):
    from cnnkit.data.synth import synth_dataset
    from cnnkit.tasks import export_weights
    from cnnkit.tasks.segment.api import Segmenter

    data = tmp_path / "shapes"
    synth_dataset("shapes", data, task="segment", n=10, imgsz=32, seed=4, val_fraction=0.3, progress=False)
    run = Segmenter("unet", encoder="resnet18", imgsz=32).train(str(data), epochs=1, imgsz=32, batch=4, workers=0,
                                                                  out=str(tmp_path / "run"), hd95=False)
    weights = run.dir / "weights" / "best.safetensors"
    path, parity = export_weights(weights, "openvino", tmp_path / "unet.xml", data=str(data))
    assert parity.ok and parity.max_abs_diff <= 1e-3 * max(parity.output_scale, 1.0)
    eager, deployed = Segmenter.load(weights).val(str(data), out=str(tmp_path / "v1"), workers=0), \
        Segmenter.load(path).val(str(data), out=str(tmp_path / "v2"), workers=0)
    assert deployed["miou"] == pytest.approx(eager["miou"], abs=1e-6)


def test_bench_and_cli_take_openvino(digits_classifier, digits_root, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli(["export", "--weights", digits_classifier, "--format", "openvino", "--out", tmp_path / "m.xml"])
    assert code == 0 and out.strip() == str(tmp_path / "m.xml") and "top-1 agreement 100.0%" in err
    code, out, err = run_cli(["classify", "predict", "--weights", tmp_path / "m.xml", digits_root / "val" / "4",
                              "--save-json", tmp_path / "pred.json"])
    assert code == 0, err
    labels = [row["label"] for row in json.loads((tmp_path / "pred.json").read_text())]
    assert len(labels) > 10 and labels.count("4") >= 0.8 * len(labels)
    code, out, err = run_cli(["bench", "--weights", digits_classifier, "--data", "digits", "--formats", "eager,openvino,openvino-int8",
                              "--batch", "1", "--runs", "3", "--warmup", "1", "--calib-images", "32", "--out", tmp_path / "bench"])
    assert code == 0, err
    rows = {r["format"]: r for r in json.loads((tmp_path / "bench" / "bench.json").read_text())}
    assert set(rows) == {"eager", "openvino", "openvino-int8"}
    assert rows["openvino"]["metric"] == pytest.approx(rows["eager"]["metric"])
    assert abs(rows["openvino-int8"]["metric"] - rows["eager"]["metric"]) <= 0.03
    assert rows["openvino"]["size_mb"] > 3 * rows["openvino-int8"]["size_mb"] > 0  # .bin included
    code, out, err = run_cli(["quantize", "--weights", digits_classifier, "--backend", "openvino", "--method", "qat", "--data", "digits"])
    assert code == 2 and err.count("\n") == 1 and "--backend openvino quantizes after training (ptq)" in err


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


def _tiny_onnx(tmp_path: Path) -> str:
    """An ONNX file of a plain torch module (no cnnkit metadata)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    target = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 8, 8),), str(target), dynamo=True)
    return str(target)


def test_a_missing_extra_names_the_pip_install(digits_classifier, monkeypatch, tmp_path):
    from cnnkit.tasks import export_weights, quantize_weights

    real_import = builtins.__import__

    def without_openvino(name, *args, **kwargs):
        if name.split(".")[0] in ("openvino", "nncf"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_openvino)
    with pytest.raises(CnnkitError, match=r"--format openvino needs the openvino package") as caught:
        export_weights(digits_classifier, "openvino", tmp_path / "m.xml")
    assert 'pip install "cnnkit[openvino]"' in str(caught.value)
    with pytest.raises(CnnkitError, match=r"--backend openvino needs the openvino package"):
        quantize_weights(digits_classifier, "digits", "ptq", "openvino")
