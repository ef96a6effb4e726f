"""16-bit images outside segmentation and the DICOM gaps (issue 19, part 5): 12-bit CT/MR/X-ray PNGs reach
classifiers and detectors with their range (not 16 grey levels), the intensity settings are recorded in the
weights, `data check` warns when an 8-bit view loses the range; DICOM named without a suffix (PACS exports) or
.dicom is found and read, PALETTE COLOR keeps its colours, CIFTI is one line, JPEG Lossless decodes as pydicom
does. Real files: built here, or pydicom's and nibabel's bundled test data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.images import is_image_file, load_image
from cnnkit.data.intensity import IntensitySpec
from cnnkit.errors import CnnkitError

TWELVE_BIT = 4095


def png12(path: Path, seed: int = 0, size: int = 24, bright: bool = False) -> Path:
    """A 12-bit image in a 16-bit PNG (Pillow mode I;16), as CT/MR/X-ray exports write: a smooth ramp over
    0..4095 plus noise, and a bright square in one class."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, TWELVE_BIT, size * size).reshape(size, size)
    values = np.clip(ramp * 0.7 + rng.normal(0, 60, (size, size)), 0, TWELVE_BIT)
    if bright:
        values[4:12, 4:12] = TWELVE_BIT
    values.flat[0], values.flat[1] = 0, TWELVE_BIT
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I;16") or check.mode == "I"  # the file is what the test means
    return path


def imagefolder12(root: Path, per_class: int = 6) -> Path:
    for split, count in (("train", per_class), ("val", 2)):
        for k in range(count):
            png12(root / split / "plain" / f"p{k}.png", seed=k)
            png12(root / split / "bright" / f"b{k}.png", seed=100 + k, bright=True)
    return root


def grey_levels(picture) -> int:
    return int(np.unique(np.asarray(picture)[..., 0]).size)


# ----------------------------------------------------------------------------------- 16-bit: classify and detect
def test_a_12_bit_png_reaches_the_classifier_with_its_range(tmp_path):
    from cnnkit.augment.presets import classify_transforms
    from cnnkit.tasks.classify.config import TrainConfig
    from cnnkit.data.intensity import spec_of
    from cnnkit.data.loaders import ImageDataset

    path = png12(tmp_path / "ct.png", size=64)
    assert grey_levels(load_image(path)) > 200  # the old 8-bit view (value / 65535 x 255) kept 16
    assert grey_levels(load_image(path, IntensitySpec("range"))) <= 17  # what "range" (the old way) keeps
    # the training set reads it with the run's spec (default auto) and the tensor keeps the levels
    dataset = ImageDataset([(path, 0)], classify_transforms(64, train=False, mean=(0, 0, 0), std=(1, 1, 1)),
                           spec_of(TrainConfig().validate()))
    tensor = dataset[0][0]
    assert torch_levels(tensor) > 200


def torch_levels(tensor) -> int:
    return int(np.unique(np.round(tensor[0].numpy() * 255)).size)


def test_8_bit_pictures_are_read_as_before(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb.png")), pixels)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "grey.png"))[..., 1], pixels[..., 0])
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb.png", IntensitySpec("range"))), pixels)


def test_a_window_maps_the_files_units(tmp_path):
    values = np.array([[0, 1024, 2048, 4095]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "w.png")
    spec = IntensitySpec.from_options("auto", "0,4095")
    assert spec == IntensitySpec("window", (0.0, 4095.0))
    row = np.asarray(load_image(tmp_path / "w.png", spec))[0, :, 0]
    np.testing.assert_array_equal(row, np.rint(values[0] / 4095 * 255).astype(np.uint8))


def test_train_configs_take_normalize_and_window():
    from cnnkit.tasks.classify.config import TrainConfig
    from cnnkit.tasks.detect.config import DetectConfig
    from cnnkit.tasks.embed.config import EmbedConfig
    from cnnkit.data.intensity import spec_of

    for config in (TrainConfig, EmbedConfig, DetectConfig):
        assert spec_of(config(window="-160,240").validate()) == IntensitySpec("window", (-160.0, 240.0))
        with pytest.raises(CnnkitError, match="needs --window"):
            config(normalize="window").validate()
        with pytest.raises(CnnkitError, match="--normalize is range"):
            config(normalize="range", window="0,10").validate()


def test_weights_without_a_record_read_16_bit_as_they_were_trained(tmp_path):
    from cnnkit import Classifier
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.tiny_cnn import TinyCNN

    meta = {"task": "classify", "model": "tiny_cnn", "class_names": ["a", "b"], "num_classes": 2, "imgsz": 16,
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "cnnkit_version": "0.1.0"}  # written before the record
    assert Classifier.load(save_weights(TinyCNN(2), tmp_path / "old.safetensors", meta)).intensity == IntensitySpec("range")
    assert IntensitySpec.from_dict({"normalize": "window", "window": [0, 4095]}) == IntensitySpec("window", (0.0, 4095.0))


def test_a_distilled_student_reads_images_as_its_teacher():
    from types import SimpleNamespace

    from cnnkit.tasks.distill.config import DistillConfig
    from cnnkit.tasks.distill.api import _teacher_intensity

    teacher = SimpleNamespace(intensity=IntensitySpec("window", (0.0, 4095.0)))
    cfg = _teacher_intensity(DistillConfig(teacher="t.safetensors"), {"teacher"}, teacher)
    assert (cfg.normalize, cfg.window) == ("window", "0,4095")
    with pytest.raises(CnnkitError, match="intensity scaling"):
        _teacher_intensity(DistillConfig(teacher="t.safetensors", normalize="percentile"), {"teacher", "normalize"}, teacher)


def test_classifier_trains_on_12_bit_pngs_and_records_the_intensity(tmp_path, cnnkit_home):
    from cnnkit import Classifier
    from cnnkit.engine.checkpoint import read_metadata

    root = imagefolder12(tmp_path / "data")
    out = tmp_path / "run"
    clf = Classifier("tiny_cnn", imgsz=16)
    clf.train(str(root), epochs=1, imgsz=16, batch=8, workers=0, device="cpu", out=str(out), window="0,4095")
    meta = read_metadata(out / "weights" / "best.safetensors")
    assert meta["intensity"] == {"normalize": "window", "window": [0.0, 4095.0]}
    loaded = Classifier.load(out / "weights" / "best.safetensors")
    assert loaded.intensity == IntensitySpec("window", (0.0, 4095.0))
    found = loaded.predict(root / "val" / "bright", device="cpu")
    assert len(found) == 2 and all(r["label"] in ("plain", "bright") for r in found)


def coco12(root: Path, count: int = 4) -> Path:
    """A COCO detection dataset of 12-bit PNGs, one bright square ('lesion') each (and a 'cyst' in the first)."""
    entries, annotations = [], []
    for k in range(count):
        png12(root / "images" / f"ct{k}.png", seed=k, size=64, bright=True)
        entries.append({"id": k + 1, "file_name": f"ct{k}.png", "width": 64, "height": 64})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0, "area": 64, "bbox": [4, 4, 8, 8]})
    (root / "annotations").mkdir(parents=True)
    annotations.append({"id": count + 1, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 64, "bbox": [40, 40, 8, 8]})
    coco = {"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "lesion"}, {"id": 2, "name": "cyst"}]}
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return root


def test_a_12_bit_png_reaches_the_detector_with_its_range(tmp_path):
    from cnnkit.augment.presets import dense_transforms
    from cnnkit.data.detection import load_detection
    from cnnkit.tasks.detect.task import DetectionSet

    root = coco12(tmp_path / "coco", count=1)
    data = load_detection(root)
    image, target, _ = DetectionSet(data.splits["train"], {1: 1, 2: 2}, dense_transforms(None, False, mean=None, std=None))[0]
    assert torch_levels(image) > 100  # value / 65535 gave 16
    assert target["boxes"].tolist()[0] == [4.0, 4.0, 12.0, 12.0]


def test_detector_trains_on_12_bit_pngs_and_records_the_intensity(tmp_path, cnnkit_home):
    from cnnkit.tasks.detect.api import Detector
    from cnnkit.engine.checkpoint import read_metadata

    root = coco12(tmp_path / "coco")
    out = tmp_path / "run"
    Detector("yolo_n", imgsz=64).train(str(root), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", out=str(out),
                                       precise_bn=0, normalize="percentile")
    assert read_metadata(out / "weights" / "best.safetensors")["intensity"] == {"normalize": "percentile", "window": None}
    assert Detector.load(out / "weights" / "best.safetensors").intensity == IntensitySpec("percentile")


# ----------------------------------------------------------------------------------------------- data check
def test_data_check_warns_when_an_8_bit_view_loses_the_range(tmp_path):
    from cnnkit.data.check import check_imagefolder

    report = check_imagefolder(imagefolder12(tmp_path / "ct", per_class=2), progress=False)
    warnings = [f for f in report.findings if "8-bit view" in f.message]
    assert {Path(f.path).name for f in warnings} == {"train", "val"}, report.findings
    assert "4 of 4 train images are 16-bit" in warnings[0].message and "keeps at most 17 grey levels" in warnings[0].message
    # full-range 16-bit and 8-bit data: nothing to say
    full = tmp_path / "full" / "train" / "a"
    full.mkdir(parents=True)
    Image.fromarray(np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)).save(full / "x.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(full / "y.png")
    assert not [f for f in check_imagefolder(tmp_path / "full", progress=False).findings if "8-bit view" in f.message]


def test_detection_check_warns_when_an_8_bit_view_loses_the_range(tmp_path):
    from cnnkit.data.check_detection import check_detection

    report = check_detection(coco12(tmp_path / "coco"), "coco")
    warnings = [f for f in report.findings if "8-bit view" in f.message]
    assert warnings and all("keeps at most 17 grey levels" in f.message for f in warnings), report.findings


def test_segmentation_check_warns_when_an_8_bit_view_loses_the_range(tmp_path):
    from cnnkit.data.check_segmentation import check_segmentation

    root = tmp_path / "seg"
    png12(root / "images" / "train" / "a.png")
    (root / "masks" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(root / "masks" / "train" / "a.png")
    (root / "classes.txt").write_text("background\nlesion\n")
    report = check_segmentation(root, progress=False)
    assert any("8-bit view" in f.message and "a.png" in f.message for f in report.findings), report.findings


# ------------------------------------------------------------------------------------- DICOM without a suffix
def pacs_export(folder: Path) -> list[Path]:
    """A PACS-style export: DICOM files named IM0001 and by UID, a .dicom, and a README that is not DICOM."""
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    ct = get_testdata_file("CT_small.dcm")
    names = ["IM0001", "1.2.840.113619.2.55.3.5", "scan.dicom"]
    for name in names:
        shutil.copy(ct, folder / name)
    (folder / "README").write_text("exported by a PACS\n" * 20)
    return [folder / name for name in names]


def test_dicom_without_a_suffix_is_an_image_file_and_reads(tmp_path):
    import pydicom

    files = pacs_export(tmp_path / "export")
    assert [is_image_file(f) for f in files] == [True, True, True]
    assert not is_image_file(tmp_path / "export" / "README")
    ds = pydicom.dcmread(files[0])
    picture = load_image(files[0])  # CT: its own window, 8-bit RGB for classify and detect
    assert picture.size == (ds.Columns, ds.Rows) and grey_levels(picture) > 100


def test_dicom_exports_are_found_in_folders_and_when_named(tmp_path):
    from cnnkit.api import expand_sources
    from cnnkit.data.imagefolder import load_imagefolder

    files = pacs_export(tmp_path / "data" / "train" / "ct")
    pacs_export(tmp_path / "data" / "train" / "mr")
    data = load_imagefolder(tmp_path / "data")
    assert sorted(p.name for p, _ in data.splits["train"] + data.splits["val"]) == sorted([f.name for f in files] * 2)
    found = [p for p, _ in expand_sources([tmp_path / "data" / "train" / "ct"])]
    assert sorted(p.name for p in found) == sorted(f.name for f in files)


def test_segmentation_pairs_a_dicom_named_by_uid_with_its_mask(tmp_path):
    from cnnkit.data.segmentation import is_segmentation_input, load_segmentation, stem_of, suffix_of

    root = tmp_path / "seg"
    images = pacs_export(root / "images" / "train")
    (root / "masks" / "train").mkdir(parents=True)
    for image in images:
        assert is_segmentation_input(image)
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(root / "masks" / "train" / f"{stem_of(image)}.png")
    assert stem_of(images[1]) == "1.2.840.113619.2.55.3.5" and suffix_of(images[1]) == ".dcm"
    (root / "images" / "val").mkdir()
    (root / "masks" / "val").mkdir()
    shutil.copy(images[0], root / "images" / "val" / "IM0002")
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(root / "masks" / "val" / "IM0002.png")
    data = load_segmentation(root)
    assert sorted(s.image.name for s in data.splits["train"]) == sorted(i.name for i in images)


# ------------------------------------------------------------------------------------------ PALETTE COLOR
def test_palette_colour_dicom_keeps_its_colours():
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    from cnnkit.data.medical import normalise, read_intensity

    path = get_testdata_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR" and ds.RedPaletteColorLookupTableDescriptor[2] == 16
    truth = apply_color_lut(ds.pixel_array, ds)[..., :3].astype(np.float64) / 65535.0  # 16-bit colours in [0, 1]
    read = read_intensity(path)
    np.testing.assert_allclose(normalise(read), truth, atol=1 / 255)
    picture = np.asarray(load_image(path))
    np.testing.assert_allclose(picture / 255.0, truth, atol=1 / 255)
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 100  # colours, not black and white


# ----------------------------------------------------------------------------------------------------- CIFTI
def test_a_cifti_file_is_one_line_naming_it():
    import nibabel.testing

    from cnnkit.data.medical import count_slices, read_intensity

    path = Path(nibabel.testing.data_path) / "row_major.dconn.nii"
    for read in (count_slices, read_intensity, load_image):
        with pytest.raises(CnnkitError) as info:
            read(path)
        assert str(path) in info.value.message and "CIFTI" in info.value.message and "\n" not in str(info.value)


def test_segment_predict_on_a_cifti_file_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    import nibabel.testing

    from conftest import run_cli

    path = Path(nibabel.testing.data_path) / "row_major.dconn.nii"
    weights = tiny_segmenter(tmp_path)
    code, _, err = run_cli(["segment", "predict", str(path), "--weights", str(weights), "--device", "cpu",
                            "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2, err
    assert "CIFTI" in err and "internal error" not in err and len(err.strip().splitlines()) == 1, err


def tiny_segmenter(tmp_path: Path) -> Path:
    from cnnkit.engine.checkpoint import save_state_dict
    from cnnkit.tasks.segment.api import Segmenter

    seg = Segmenter("unet", encoder="resnet18", class_names=["background", "thing"], imgsz=32)
    meta = {"task": "segment", "model": seg.model_name, "encoder": seg.encoder, "class_names": seg.class_names,
            "num_classes": len(seg.class_names), "imgsz": seg.imgsz, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "intensity": seg.intensity.to_dict(), "tile": False, "ignore_index": 255}
    return save_state_dict(seg.model.state_dict(), tmp_path / "seg.safetensors", meta)


# ---------------------------------------------------------------------------------------------- JPEG Lossless
def test_jpeg_lossless_decodes_as_pydicom_does():
    # no skip without a decoder: the test extra installs pylibjpeg (as [medical] does), so this must decode
    import pydicom
    from pydicom.data import get_testdata_file

    from cnnkit.data.medical import read_intensity

    path = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")
    ds = pydicom.dcmread(path)
    assert "JPEG Lossless" in ds.file_meta.TransferSyntaxUID.name
    np.testing.assert_array_equal(read_intensity(path).pixels, ds.pixel_array.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(load_image(path)), ds.pixel_array)  # 8-bit RGB: as it is


def test_a_missing_decoder_is_one_line_naming_the_file_and_the_extra(monkeypatch):
    import pydicom
    from pydicom.data import get_testdata_file

    from cnnkit.data.medical import read_intensity

    def no_plugin(self):  # pydicom's own words when no decoder plugin is installed
        raise RuntimeError("Unable to decompress 'JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 "
                           "[Selection Value 1])' pixel data because all plugins are missing dependencies:\n\tgdcm - "
                           "requires gdcm>=3.0.10\n\tpylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_plugin))
    path = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")
    with pytest.raises(CnnkitError) as info:
        read_intensity(path)
    assert str(path) in info.value.message and "JPEG Lossless" in info.value.message
    assert info.value.hint == "pip install cnnkit[medical]" and "\n" not in str(info.value)
