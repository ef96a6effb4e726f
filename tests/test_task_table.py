"""The task table (cnnkit.tasks): which task owns a file, and the contract every task's class keeps."""

from __future__ import annotations

import inspect

import pytest

from cnnkit import tasks
from cnnkit.errors import CnnkitError


@pytest.mark.parametrize("metadata, owner", [
    ({"task": "classify", "model": "resnet18"}, "classify"),
    ({"task": "detect", "model": "yolo_n"}, "detect"),
    ({"task": "segment", "model": "unet"}, "segment"),
    ({"task": "segment", "model": "maskrcnn"}, "instance"),
    ({"task": "embed", "model": "resnet18"}, "embed"),
])
def test_task_of_decides_the_owner(metadata, owner):
    assert tasks.task_of(metadata).name == owner


def test_an_unknown_task_is_one_line_naming_the_file():
    with pytest.raises(CnnkitError, match=r"w.safetensors: weights of an unknown task 'speech'") as info:
        tasks.task_of({"task": "speech"}, "w.safetensors")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("owner", sorted(tasks.TASKS))
def test_every_task_class_keeps_the_contract(owner):
    """What the CLI, distillation, export, quantize and bench call on a task's class (tasks.TaskClass),
    parametrised over the table as timm tests every registered model: each method takes the calls they make,
    and a fresh object has the attributes they read."""
    entry = tasks.TASKS[owner]
    cls = entry.load_class()
    assert isinstance(inspect.getattr_static(cls, "load"), classmethod)
    calls = {
        "load": ((), ("weights.safetensors",), {}),
        "train": ((), ("data",), {"epochs": 1}),
        "val": ((), ("data", "val"), {"out": "out", "batch": 2, "device": "cpu", "workers": 0, **entry.val_options}),
    }
    if entry.predicts:
        calls["predict"] = ((), (["a.png"],), {"device": "cpu"})
    for name, (_, args, kwargs) in calls.items():
        method = getattr(cls, name)
        assert callable(method), f"{cls.__name__}.{name}"
        signature = inspect.signature(method)
        if name != "load":  # an unbound method: bind self too
            args = (None, *args)
        signature.bind(*args, **kwargs)  # TypeError: the class no longer takes the call the others make
    instance = cls()
    for attribute in tasks.TaskClass.__annotations__:
        assert hasattr(instance, attribute), f"{cls.__name__}() has no {attribute}"
    assert entry.predicts == callable(getattr(cls, "predict", None))
    if owner != "embed":
        assert entry.metric  # quantize and bench report it


def test_the_contract_test_fails_on_a_class_that_breaks_it():
    """The check above can fail: a val without the device keyword does not bind."""
    class Broken:
        def val(self, data, split): ...

    with pytest.raises(TypeError):
        inspect.signature(Broken.val).bind(None, "data", "val", device="cpu")


def test_load_refuses_a_file_of_another_task(digits_classifier):
    with pytest.raises(CnnkitError, match=r"weights of a 'classify' model, not 'segment'"):
        tasks.load(digits_classifier, "segment")
    assert tasks.load(digits_classifier, "classify").class_names


def test_the_table_and_the_registry_agree_on_instance_models():
    """The table decides ownership without importing the models; the registry knows the models by task."""
    from cnnkit import registry
    from cnnkit.config import INSTANCE_MODELS
    import cnnkit.models  # noqa: F401 - runs the registrations

    assert sorted(registry.names("instance")) == sorted(INSTANCE_MODELS)
