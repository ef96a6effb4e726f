"""runner.py's shared layer below the task classes: reading a model file, the split error, where val writes,
publishing metrics.json + report.html + the console line, a training run's finish, predict's batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

import cnnkit.runner as runner
from cnnkit.config import TrainOptions
from cnnkit.data.sources import expand_source_files
from cnnkit.engine.checkpoint import save_weights
from cnnkit.errors import CnnkitError


@pytest.fixture
def printed(monkeypatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(runner.console, "print", lambda text, *a, **k: lines.append(str(text)))
    return lines


class Owner:
    """Any task class: what adopt_model_file sets."""

    def __init__(self):
        self.model = nn.Linear(2, 1)
        self.weights_path, self.val_split, self.split_seed, self.cost = None, 0.2, 0, (None, None)


def test_read_model_file_gives_tensors_and_what_the_file_records(tmp_path):
    source = nn.Linear(2, 1)
    weights = save_weights(source, tmp_path / "run" / "weights" / "best.safetensors",
                           {"task": "classify", "model": "m", "val_split": 0.3, "split_seed": 7, "params": 3, "gflops": 0.5})
    file = runner.read_model_file(weights, "classify")
    assert file.deployed is None and file.split == (0.3, 7) and file.cost == (3, 0.5) and file.path == weights
    owner = runner.adopt_model_file(Owner(), file)
    assert torch.equal(owner.model.weight, source.weight)
    assert (owner.weights_path, owner.val_split, owner.split_seed, owner.cost) == (weights, 0.3, 7, (3, 0.5))


def test_a_file_written_before_the_split_was_recorded_reads_the_defaults(tmp_path):
    weights = save_weights(nn.Linear(2, 1), tmp_path / "old.safetensors", {"task": "detect", "model": "m"})
    file = runner.read_model_file(weights, "detect")
    assert file.split == (0.2, 0) and file.cost == (None, None)


def test_read_model_file_refuses_another_tasks_file_in_one_line(tmp_path):
    weights = save_weights(nn.Linear(2, 1), tmp_path / "w.safetensors", {"task": "segment", "model": "unet"})
    with pytest.raises(CnnkitError) as error:
        runner.read_model_file(weights, "detect")
    assert "\n" not in error.value.message and str(weights) in error.value.message and "'segment'" in error.value.message


def test_adopt_model_file_takes_a_deployed_model_through_the_wrapper():
    deployed = nn.Identity()
    file = runner.ModelFile(Path("m.onnx"), {"split_seed": 3}, deployed=deployed)
    owner = runner.adopt_model_file(Owner(), file, wrap_deployed=lambda graph: nn.Sequential(graph))
    assert isinstance(owner.model, nn.Sequential) and owner.model[0] is deployed
    assert owner.weights_path == Path("m.onnx") and owner.split_seed == 3


def test_split_samples_or_one_line_naming_the_data_and_the_split():
    splits = {"train": [1, 2], "val": [3]}
    assert runner.split_samples("shapes", splits, "val") == [3]
    with pytest.raises(CnnkitError) as error:
        runner.split_samples("data/shapes", splits, "test")
    assert error.value.message == "data/shapes: no 'test' split"
    assert error.value.hint == "available: train, val"


def test_beside_run_is_out_else_beside_the_weights_run_else_runs_task():
    weights = Path("runs/detect/exp3/weights/best.safetensors")
    assert runner.beside_run("elsewhere", weights, "detect") == Path("elsewhere")
    assert runner.beside_run(None, weights, "detect") == Path("runs/detect/exp3/val")
    assert runner.beside_run(None, weights, "classify", "robustness") == Path("runs/detect/exp3/robustness")
    assert runner.beside_run(None, None, "embed") == Path("runs/embed/val")
    assert runner.beside_run("", None, "embed") == Path("runs/embed/val")


def test_publish_writes_metrics_json_and_report_html_and_one_line(tmp_path, printed):
    metrics = {"split": "val", "map": 0.5, "per_class": {"cat": {"ap": 0.5}}, "confusion_matrix": [[1]]}
    report = runner.publish(tmp_path / "val", "cnnkit detect val: m on d (val)", {"weights": "w", "split": "val"}, metrics, [],
                            "val: map 0.5000")
    assert json.loads((tmp_path / "val" / "metrics.json").read_text()) == metrics
    html = report.read_text()
    assert report == tmp_path / "val" / "report.html" and "cnnkit detect val: m on d (val)" in html and "cat" in html
    assert printed == [f"val: map 0.5000  report {report}"]


def test_publish_run_keeps_the_training_runs_line(tmp_path, printed):
    runner.publish_run(tmp_path, "cnnkit classify: m on d", TrainOptions(), {"top1": 1.0}, [], "val top1 1.0000")
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "report.html").is_file()
    assert printed == [f"val top1 1.0000\nresults in {tmp_path}  report: {tmp_path / 'report.html'}"]


@pytest.mark.parametrize("cost, keys", [((10, 0.25), {"map", "test", "params", "gflops"}), (None, {"map", "test"})])
def test_finish_best_run_evaluates_val_and_test_adds_the_cost_and_publishes(tmp_path, printed, cost, keys):
    (tmp_path / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    seen = []

    def evaluate_split(split, samples):
        seen.append((split, samples))
        return {"map": len(samples) / 10}, []

    metrics = runner.finish_best_run(TrainOptions(), tmp_path, {"train": [0], "val": [1, 2], "test": [3]}, evaluate_split,
                                     "title", lambda m: f"val map {m['map']:.2f}", cost=cost)
    assert seen == [("val", [1, 2]), ("test", [3])] and set(metrics) == keys and metrics["test"] == {"map": 0.1}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert printed[0].startswith("val map 0.20\nresults in")


def test_write_predictions_names_val_and_the_other_splits(tmp_path):
    assert runner.write_predictions(tmp_path, [{"id": 1}]) == tmp_path / "predictions.json"
    assert runner.write_predictions(tmp_path, [], "test") == tmp_path / "predictions_test.json"
    assert json.loads((tmp_path / "predictions.json").read_text()) == [{"id": 1}]


def test_read_in_batches_skips_unreadable_files_of_a_folder_and_stops_at_a_named_one(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.new("RGB", (4, 4)).save(folder / name)
    (folder / "b.png").write_bytes(b"not a png")

    def read(path):
        if path.name == "b.png":
            raise CnnkitError(f"{path}: not an image")
        return path.name

    files = expand_source_files([folder], lambda p: p.suffix == ".png")
    batches = list(runner.read_in_batches(files, 2, read, "test"))
    assert batches == [[(0, "a.png")], [(2, "c.png")]]  # b.png skipped, indexes into files
    named = expand_source_files([folder / "b.png"], lambda p: p.suffix == ".png")
    with pytest.raises(CnnkitError, match="not an image"):
        list(runner.read_in_batches(named, 2, read, "test"))


def test_an_underfitted_run_says_so_in_metrics_report_and_console(tmp_path, printed, monkeypatch):
    """The finish reads history.csv and the best epoch of best.safetensors (engine.diagnose): a run whose loss still
    fell at the end, best at its last epoch, gets the warning with the fix; a converged one gets none."""
    from cnnkit.engine.callbacks import write_history

    warned: list[str] = []
    monkeypatch.setattr(runner, "warn", lambda message, *a, **k: warned.append(message))

    def finish(losses, best_epoch):
        run_dir = tmp_path / f"run{len(warned)}_{best_epoch}"
        write_history(run_dir / "history.csv", [{"epoch": i + 1, "train_loss": loss, "top1": 0.5} for i, loss in enumerate(losses)])
        save_weights(nn.Linear(2, 1), run_dir / "weights" / "best.safetensors",
                     {"task": "classify", "epoch": best_epoch, "primary_metric": "top1"})
        metrics = runner.finish_best_run(TrainOptions(), run_dir, {"val": [1]}, lambda split, s: ({"top1": 0.5}, []), "t",
                                         lambda m: "val top1 0.5")
        return run_dir, metrics

    run_dir, metrics = finish([2.0 * 0.85**i for i in range(12)], best_epoch=12)
    assert len(metrics["warnings"]) == 1 and "underfitted" in metrics["warnings"][0] and "--epochs 24" in metrics["warnings"][0]
    assert json.loads((run_dir / "metrics.json").read_text())["warnings"] == metrics["warnings"]
    assert "underfitted" in (run_dir / "report.html").read_text() and warned == metrics["warnings"]
    _, converged = finish([2.0 * 0.7**i for i in range(8)] + [0.115, 0.114, 0.114, 0.113], best_epoch=12)
    assert "warnings" not in converged and len(warned) == 1


@pytest.mark.slow
def test_lr_auto_runs_the_range_test_and_trains_with_its_suggestion(tmp_path):
    """--lr auto: the plot, the rate in config.yaml (a number, so --resume keeps it) and a run that learns."""
    import yaml

    from cnnkit.tasks.classify.api import train
    from cnnkit.tasks.classify.config import TrainConfig

    options = {"data": "digits", "epochs": 2, "imgsz": 16, "lr": "auto", "fliplr": 0.0, "workers": 0, "out": str(tmp_path / "run")}
    run = train(TrainConfig(**options).validate(), set(options))
    lr = yaml.safe_load((run.dir / "config.yaml").read_text())["lr"]
    assert isinstance(lr, float) and 1e-5 < lr < 1.0
    assert (run.dir / "plots" / "lr_find.png").is_file() and "<figcaption>lr find</figcaption>" in (run.dir / "report.html").read_text()
    assert run.metrics["top1"] > 0.8
