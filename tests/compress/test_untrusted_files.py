"""Every file a user can be handed — weights, exports, int8 files, checkpoints, index folders, YAML — with
a payload that would create a marker file if anything unpickled or executed it: each is refused with one
line naming the file, and the marker never appears."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.errors import CnnkitError
from tests.conftest import run_cli


class Payload:
    """Unpickling this opens (creates) ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


def rewrite_zip(source: Path, target: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None) -> Path:
    """A copy of a zip archive with members whose names end in a key of ``replace`` swapped, and ``add`` appended
    (keys relative to the archive's root folder)."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for item in zin.infolist():
            data = zin.read(item.filename)
            for suffix, payload in replace.items():
                if item.filename.endswith(suffix):
                    data = payload
            zout.writestr(item, data)
        for name, payload in add.items():
            zout.writestr(f"{root}/{name}", payload)
    return target


@pytest.fixture(scope="module")
def exported(digits_classifier, tmp_path_factory):
    from cnnkit.tasks import export_weights

    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for fmt, suffix in [("pt2", ".pt2"), ("torchscript", ".ts"), ("onnx", ".onnx")]:
        files[fmt], _ = export_weights(digits_classifier, fmt, folder / f"model{suffix}", data="digits")
    return files


@pytest.fixture
def image(digits_root) -> Path:
    return sorted((digits_root / "val" / "3").iterdir())[0]


def assert_refused(args, marker: Path, named: Path, words: str) -> None:
    code, _, err = run_cli(args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and str(named) in err and words in err, err
    assert not marker.exists(), "the file's code ran"


@pytest.mark.parametrize("member", ["sample_inputs/model.pt", "weights/weight_0"])
def test_pt2_with_a_pickled_payload_is_refused(exported, image, tmp_path, member):
    marker = tmp_path / "ran"
    if member.startswith("weights/"):  # a weight the payload config says is pickled
        with zipfile.ZipFile(exported["pt2"]) as archive:
            config_name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
            config = json.loads(archive.read(config_name))
        for entry in config["config"].values():
            entry["use_pickle"] = entry["path_name"] == "weight_0"
        evil = rewrite_zip(exported["pt2"], tmp_path / "evil.pt2", {member: pickled(marker), "model_weights_config.json": json.dumps(config).encode()})
    else:
        evil = rewrite_zip(exported["pt2"], tmp_path / "evil.pt2", {member: pickled(marker)})
    assert_refused(["classify", "predict", image, "--weights", evil], marker, evil, "is not plain tensors")


@pytest.mark.parametrize("member, words", [("data/constants/opaque_obj_0", "pickled Python object"),
                                           ("data/aotinductor/model/model.so", "compiled native code")])
def test_pt2_with_objects_or_native_code_is_refused(exported, image, tmp_path, member, words):
    marker = tmp_path / "ran"
    evil = rewrite_zip(exported["pt2"], tmp_path / "evil.pt2", add={member: pickled(marker)})
    assert_refused(["classify", "predict", image, "--weights", evil], marker, evil, words)


def test_torch_export_load_has_no_unsafe_fallback_inside_the_guard(exported, tmp_path):
    """Even a member check that missed something could not unpickle code: torch.load stays weights-only."""
    from cnnkit.compress.archives import weights_only_loading

    marker = tmp_path / "ran"
    evil = rewrite_zip(exported["pt2"], tmp_path / "evil.pt2", {"sample_inputs/model.pt": pickled(marker)})
    with weights_only_loading(), pytest.raises(Exception):
        torch.export.load(str(evil))
    assert not marker.exists()
    assert torch.load.__name__ == "load"  # the guard put torch.load back


def test_unmodified_exports_still_load(exported):
    from cnnkit.compress.runtime import load_deployed

    for fmt, path in exported.items():
        deployed = load_deployed(path)
        assert deployed.model(torch.zeros(1, 3, 16, 16)).shape == (1, 10), fmt


def test_torchscript_with_a_foreign_global_is_refused(exported, image, tmp_path):
    marker = tmp_path / "ran"
    evil = rewrite_zip(exported["torchscript"], tmp_path / "evil.ts", {"/data.pkl": pickle.dumps(Payload(marker), protocol=2)})
    assert_refused(["classify", "predict", image, "--weights", evil], marker, evil, "calls io.open")


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_that_runs_code_while_loading_is_refused(tmp_path, image):
    class Stateful(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self):
            return (self.calls, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[int, bool]):
            self.calls = state[0]
            self.training = state[1]

    path = tmp_path / "stateful.ts"
    torch.jit.save(torch.jit.script(Stateful()), str(path), _extra_files={"cnnkit.json": json.dumps({"task": "classify"})})
    assert_refused(["classify", "predict", image, "--weights", path], tmp_path / "none", path, "__setstate__")


def test_onnx_reading_data_outside_its_folder_is_refused(exported, image, tmp_path):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(exported["onnx"]))
    secret = tmp_path / "secret" / "weights.bin"
    secret.parent.mkdir()
    (tmp_path / "deploy").mkdir()
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(model, str(secret.parent / "model.onnx"))  # writes weights.bin beside it
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = str(secret)  # an absolute path: ONNX Runtime would read any file
    evil = tmp_path / "deploy" / "model.onnx"
    onnx.save(model, str(evil))
    assert_refused(["classify", "predict", image, "--weights", evil], tmp_path / "none", evil, "outside the model's folder")


@pytest.mark.parametrize("text", ["{broken", "[1, 2]"])
def test_onnx_with_broken_metadata_is_one_line(exported, image, tmp_path, text):
    import onnx

    model = onnx.load(str(exported["onnx"]))
    for prop in model.metadata_props:
        if prop.key == "cnnkit.json":
            prop.value = text
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    assert_refused(["classify", "predict", image, "--weights", path], tmp_path / "none", path, "broken cnnkit metadata")


def test_safetensors_with_broken_metadata_is_one_line(digits_classifier, image, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(digits_classifier), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta["class_names"] = "[not json"
    path = tmp_path / "broken.safetensors"
    save_file(load_file(str(digits_classifier)), str(path), metadata=meta)
    assert_refused(["classify", "predict", image, "--weights", path], tmp_path / "none", path, "broken cnnkit metadata")


def test_int8_file_with_a_pickled_payload_is_refused(image, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.int8.pt"
    torch.save({"format": "cnnkit-int8", "metadata": "{}", "state_dict": Payload(marker)}, path)
    assert_refused(["classify", "predict", image, "--weights", path], marker, path, "not a cnnkit int8 file")


def test_checkpoint_with_a_pickled_payload_is_refused(tmp_path):
    from cnnkit.engine.checkpoint import load_checkpoint

    marker = tmp_path / "ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "cnnkit-checkpoint", "model": Payload(marker)}, path)
    with pytest.raises(CnnkitError, match="checkpoint.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_index_with_pickled_vectors_is_refused(tmp_path):
    from cnnkit.retrieval.index import GalleryIndex

    marker = tmp_path / "ran"
    target = tmp_path / "idx"
    vectors = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    GalleryIndex.build(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), [f"{i}.png" for i in range(8)], "flat", "s", "m").save(target)
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    np.save(target / "vectors.npy", evil, allow_pickle=True)
    with pytest.raises(CnnkitError, match="corrupt index data") as info:
        GalleryIndex.load(target)
    assert str(target) in str(info.value) and not marker.exists()


def test_yaml_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "run.yaml"
    config.write_text(f'epochs: !!python/object/apply:builtins.open ["{marker}", "w"]\n')
    code, _, err = run_cli(["classify", "train", "--config", config, "--data", tmp_path])
    assert code == 2 and str(config) in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()
    data = tmp_path / "yolo"
    data.mkdir()
    (data / "data.yaml").write_text(f'names: !!python/object/apply:builtins.open ["{marker}", "w"]\ntrain: images\n')
    code, out, _ = run_cli(["data", "check", data])
    assert code == 2 and "data.yaml:1: not valid YAML" in " ".join(out.split()), out
    code, _, err = run_cli(["detect", "train", "--data", data, "--epochs", "1"])
    assert code == 2 and "data.yaml" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()
