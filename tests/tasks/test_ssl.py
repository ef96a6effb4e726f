"""Self-supervised pretraining: the measures (kNN, linear probe, collapse check), the masked method's sparse
layers, the views, bad input, and the synthetic domain's unlabelled images and extra classes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cnnkit_here
from cnnkit.errors import CnnkitError
from cnnkit.models.ssl import build_ssl_net, patch_normalised, random_patch_mask, sparse_layers
from cnnkit.tasks.ssl import task as ssl_task


def test_knn_top1_is_a_cosine_majority_vote():
    """Against a hand-written vote: cosine similarity, the k most similar bank vectors, the commonest label."""
    rng = np.random.default_rng(0)
    bank, labels = rng.normal(size=(60, 8)), rng.integers(0, 3, 60)
    queries, truth = rng.normal(size=(25, 8)), rng.integers(0, 3, 25)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argsort(-(unit(queries) @ unit(bank).T), axis=1)[:, :5]
    votes = np.array([np.bincount(labels[row], minlength=3).argmax() for row in nearest])
    assert ssl_task.knn_top1(bank, labels, queries, truth, k=5) == pytest.approx((votes == truth).mean())
    # features that carry the label are found by both measures; noise is not
    signal = np.eye(3)[labels] * 3 + rng.normal(size=(60, 3)) * 0.3
    probe = np.eye(3)[truth] * 3 + rng.normal(size=(25, 3)) * 0.3
    assert ssl_task.knn_top1(signal, labels, probe, truth) == 1.0
    assert ssl_task.linear_top1(signal, labels, probe, truth) == 1.0
    assert ssl_task.linear_top1(rng.normal(size=(60, 3)), labels, rng.normal(size=(25, 3)), truth) < 0.7


def test_feature_spread_tells_a_collapsed_representation():
    rng = np.random.default_rng(0)
    assert ssl_task.feature_spread(rng.normal(size=(500, 64))) == pytest.approx(1.0, abs=0.05)
    collapsed = np.tile(rng.normal(size=(1, 64)), (500, 1)) + rng.normal(size=(500, 64)) * 1e-3
    assert ssl_task.feature_spread(collapsed) < ssl_task.COLLAPSE_BELOW


def test_hidden_patches_do_not_leak_into_visible_features():
    """SparK's sparse convolutions, emulated: with a patch hidden, what is drawn inside it changes no feature
    of the network; without the re-masking, it would reach the neighbours through every 3x3 convolution."""
    torch.manual_seed(0)
    net = build_ssl_net("small_cnn", "masked", 64).eval()
    keep = torch.ones(1, 1, 4, 4)
    keep[0, 0, 1, 2] = 0  # one 16x16 patch hidden
    visible = torch.nn.functional.interpolate(keep, size=(64, 64), mode="nearest")
    a = torch.rand(1, 3, 64, 64)
    b = a.clone()
    b[..., 16:32, 32:48] = torch.rand(1, 3, 16, 16)  # other pixels inside the hidden patch
    with torch.no_grad(), sparse_layers(net.backbone, keep):
        fa, fb = net.backbone.forward_features(a * visible), net.backbone.forward_features(b * visible)
    assert torch.equal(fa, fb)
    with torch.no_grad():  # the hooks are gone again: the same difference now changes the features
        assert not torch.equal(net.backbone.forward_features(a), net.backbone.forward_features(b))


def test_patch_masks_and_targets():
    keep = random_patch_mask(8, 4, 4, 0.6, torch.device("cpu"))
    assert keep.shape == (8, 1, 4, 4) and (keep.sum(dim=(1, 2, 3)) == 16 - 10).all()  # round(0.6 * 16) hidden in each
    target = patch_normalised(torch.rand(2, 3, 32, 32) * 5 + 2, 8)
    tiles = target.view(2, 3, 4, 8, 4, 8)
    assert torch.allclose(tiles.mean(dim=(3, 5)), torch.zeros(1), atol=1e-4)
    assert torch.allclose(tiles.std(dim=(3, 5), unbiased=False), torch.ones(1), atol=1e-3)


@pytest.mark.parametrize("method", ["simclr", "byol", "vicreg", "masked", "ae"])
def test_every_method_gives_a_finite_loss_and_gradients(method):
    torch.manual_seed(0)
    net = build_ssl_net("tiny_cnn", method, 32, total_steps=10).train()
    views = torch.rand(8, 2 if method in ("simclr", "byol", "vicreg") else 1, 3, 32, 32)
    loss = net(views)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in net.backbone.named_parameters())
    if method == "byol":  # the teacher moved towards the student, by gradient never
        assert int(net.teacher.steps) == 1
        assert all(p.grad is None for p in net.teacher.parameters())


def _images(folder, count, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_bad_input_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    (tmp_path / "notes" / "b.csv").write_text("x")
    images = _images(tmp_path / "images" / "deep" / "er", 20)
    cases = [
        (["--data", str(empty)], r"empty: no images \(the folder and its subfolders are empty\)"),
        (["--data", str(tmp_path / "notes")], r"notes: no images \(2 files skipped: none is a \.jpg"),
        (["--data", str(tmp_path / "images"), "--batch", "8"], "--batch 8 is too small for simclr: each image's negatives are the other 14"),
        (["--data", str(tmp_path / "images"), "--eval-data", str(tmp_path / "images" / "deep" / "er")], "--eval-data .*: needs labels"),
        (["--data", str(tmp_path / "images"), "--eval-data", str(tmp_path / "images" / "deep")], "--eval-data .*: one class"),
        (["--data", str(tmp_path / "images"), "--mask-ratio", "1.0", "--method", "masked"], "--mask-ratio must be between 0 and 1"),
    ]
    for args, message in cases:
        done = run_cnnkit_here("ssl", "train", *args, "--epochs", "1", "--workers", "0", "--out", str(tmp_path / "run"))
        err = done.stderr
        assert done.returncode == 2, (args, err)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) <= 2 and any(re.search(message, line) for line in lines), (args, err)
    assert images.is_dir()


def test_a_backbone_of_another_architecture_is_refused(tmp_path):
    """--backbone-from an ssl file into a model of another architecture: one line naming both."""
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.runner import train
    from cnnkit.tasks.classify.api import CLASSIFY
    from cnnkit.tasks.classify.config import TrainConfig

    net = build_ssl_net("tiny_cnn", "vicreg", 32)
    source = tmp_path / "ssl.safetensors"
    save_weights(net, source, {"task": "ssl", "model": "tiny_cnn", "method": "vicreg", "imgsz": 32})
    data = tmp_path / "d"
    for split in ("train", "val"):
        for name in ("a", "b"):
            _images(data / split / name, 4)
    cfg = TrainConfig(data=str(data), model="small_cnn", backbone_from=str(source), epochs=1, imgsz=32, workers=0,
                      out=str(tmp_path / "run")).validate()
    with pytest.raises(CnnkitError, match=r"ssl.safetensors: holds a 'tiny_cnn' model, but --model is 'small_cnn'"):
        train(cfg, set(), CLASSIFY)


def test_the_shapes_domain_has_unlabelled_images_and_more_classes(tmp_path):
    from cnnkit.data.synth_classify import MORE_OBJECTS, synth_classification

    summary = synth_classification("shapes", tmp_path / "a", n=2, eval_n=1, imgsz=32, unlabelled=7, progress=False)
    assert summary["images"]["unlabelled"] == 7 and len(list((tmp_path / "a" / "unlabelled").glob("*.png"))) == 7
    plain = synth_classification("objects", tmp_path / "b", n=2, eval_n=1, imgsz=32, progress=False)
    for path in (tmp_path / "b").rglob("*.png"):  # the unlabelled images change none of the labelled ones
        assert path.read_bytes() == (tmp_path / "a" / path.relative_to(tmp_path / "b")).read_bytes()
    assert summary["classes"] == plain["classes"]
    more = synth_classification("shapes", tmp_path / "c", n=2, eval_n=1, imgsz=32, classes=list(MORE_OBJECTS), progress=False)
    assert sorted(p.name for p in (tmp_path / "c" / "train").iterdir()) == sorted(MORE_OBJECTS) == sorted(more["classes"])
    with pytest.raises(CnnkitError, match="--classes: 'hexagons' is not a objects class"):
        synth_classification("shapes", tmp_path / "d", classes=["hexagons"], progress=False)


def _gathered_loss(rank: int, world: int, port: int, queue) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    mine = slice(rank * 4, (rank + 1) * 4)
    a, b = z1[mine].clone().requires_grad_(True), z2[mine].clone().requires_grad_(True)
    loss = build_ssl_net("tiny_cnn", "simclr", 32).criterion(a, b)  # the criterion the network trains with
    loss.backward()
    queue.put((rank, loss.item(), a.grad.clone()))
    dist.destroy_process_group()


def test_simclr_negatives_come_from_every_rank_with_their_gradients():
    """Under torchrun each rank holds half the batch: NT-Xent over the all-gathered views, with the gradient carried
    back through the gather, is the single-process loss of the whole batch (the ranks' mean), and DDP's average of
    the ranks' gradients is its gradient."""
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    whole = build_ssl_net("tiny_cnn", "simclr", 32).criterion(z1, z2)
    whole.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_gathered_loss, args=(rank, 2, port, queue)) for rank in range(2)]
    for w in workers:
        w.start()
    results = sorted(queue.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert sum(loss for _, loss, _ in results) / 2 == pytest.approx(whole.item(), abs=1e-5)
    gradients = torch.cat([grad for _, _, grad in results])
    assert torch.allclose(gradients / 2, z1.grad, atol=1e-6)  # DDP divides the summed gradient by the world size


def _draw_shape(rng: np.random.Generator, shape: int, size: int) -> np.ndarray:
    """A circle, square or triangle in one random colour on another, with noise: colour varies most between
    images, so a random network's features group images by colour; a network that learnt invariance to colour
    jitter (the contrastive views) or to shapes (the reconstructions) groups them by shape."""
    import math

    from cnnkit.data.synth import _outline, _rasterise

    background = rng.integers(0, 256, 3)
    colour = rng.integers(0, 256, 3)
    while np.abs(colour - background).sum() < 150:
        colour = rng.integers(0, 256, 3)
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    image = np.empty((size, size, 3), np.float32)
    image[:] = background
    image[_rasterise(_outline(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), size)] = colour
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_shapes(tmp_path_factory):
    """300 unlabelled images in two subfolders, and a labelled ImageFolder (40 per class in train, val and test)."""
    root = tmp_path_factory.mktemp("colour_shapes")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for shape, name in enumerate(("circle", "square", "triangle")):
            (root / "labelled" / split / name).mkdir(parents=True)
            for i in range(40):
                Image.fromarray(_draw_shape(rng, shape, 32)).save(root / "labelled" / split / name / f"{i}.png")
    for i in range(300):
        folder = root / "unlabelled" / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_draw_shape(rng, int(rng.integers(3)), 32)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("method", ["simclr", "byol", "vicreg", "masked", "ae"])
def test_every_method_trains_and_is_monitored(method, colour_shapes, tmp_path):
    """A short run of each method on 300 unlabelled images (two subfolders, found recursively): the training loss
    falls, and so does the loss on the held-out labelled images' fixed views, which the run never trained on; kNN
    top-1 and the collapse check are in the history and the report, kNN and linear top-1 of val and test in
    metrics.json. (Whether the features beat a random network's is the benchmark's question: on 300 images, five
    epochs are too few for any method to pass it reliably, see docs/ssl.md.)"""
    import csv

    from cnnkit.tasks.ssl.api import Pretrainer

    run = Pretrainer("tiny_cnn", method, 32).train(data=str(colour_shapes / "unlabelled"), epochs=5, batch=32, workers=0,
                                                   eval_data=str(colour_shapes / "labelled"), out=str(tmp_path / "run"))
    history = list(csv.DictReader((run.dir / "history.csv").open()))
    train_losses = [float(row["train_loss"]) for row in history]
    val_losses = [float(row["val_loss"]) for row in history]
    assert train_losses[-1] < train_losses[0], train_losses
    assert min(val_losses[1:]) < val_losses[0], val_losses
    assert {"knn_top1", "feature_std"} <= set(history[0])
    assert 0 <= run.metrics["test"]["knn_top1"] <= 1 and run.metrics["linear_top1"] > 0
    assert run.metrics["feature_std"] > ssl_task.COLLAPSE_BELOW and "knn_top1" in (run.dir / "report.html").read_text()


@pytest.mark.parametrize("target", ["classify", "fasterrcnn", "yolo", "unet", "embed"])
def test_a_pretrained_backbone_goes_into_every_task(target):
    """--backbone-from an ssl file: the runner's load_backbone finds the backbone under `backbone.` and copies every
    tensor (BatchNorm statistics too) into a classifier, a detector's backbone (Faster R-CNN's, YOLO's timm backbone),
    a U-Net encoder and an embedder, by name and shape."""
    from cnnkit.engine.transfer import load_backbone
    from cnnkit.models.backbones import build_classifier
    from cnnkit.models.detectors import build_detector
    from cnnkit.models.embedder import build_embedder
    from cnnkit.models.segmenters import build_segmenter
    from cnnkit.models.yolo import build_yolo

    torch.manual_seed(0)
    ssl_net = build_ssl_net("resnet18", "simclr", 64)
    state = {k: v + 0.01 for k, v in ssl_net.state_dict().items()}  # unlike any fresh initialisation
    net, inner = {
        "classify": lambda: (build_classifier("resnet18", 3), lambda n: n),
        "fasterrcnn": lambda: (build_detector("fasterrcnn", 2, 128, "resnet18"), lambda n: n.backbone.body),
        "yolo": lambda: (build_yolo("yolo_n", 2, 128, backbone="resnet18"), lambda n: n.backbone.body),
        "unet": lambda: (build_segmenter("unet", "resnet18", 2), lambda n: n.encoder.model),
        "embed": lambda: (build_embedder("resnet18", 32), lambda n: n.backbone),
    }[target]()
    copied = load_backbone(net, state, "ssl.safetensors", "resnet18", "resnet18")
    assert copied >= 100
    target_state = inner(net).state_dict()
    for key in ("conv1.weight", "layer2.0.bn1.running_var", "layer3.1.conv2.weight"):
        assert torch.equal(target_state[key], state[f"backbone.{key}"]), key
