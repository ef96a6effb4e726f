"""The gallery index: exact and approximate search, add/remove, atomic save, and corruption checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.retrieval.index import GalleryIndex, default_nlist, normalize


def clustered(n: int, dim: int = 16, centers: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim))
    return normalize(means[rng.integers(0, centers, n)] + 0.3 * rng.normal(size=(n, dim)))


def names(n: int, start: int = 0) -> list[str]:
    return [f"/gallery/img{i:05d}.png" for i in range(start, start + n)]


def exact_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(normalize(queries) @ gallery.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_search_finds_the_exact_neighbours(kind):
    vectors = clustered(2000)
    gallery = GalleryIndex.build(vectors, names(2000), kind, "sha", "m", nprobe=64 if kind == "ivf" else 8, ef_search=128)
    queries = clustered(50, seed=1)
    scores, rows = gallery.search(queries, 10)
    truth = exact_neighbours(queries, gallery.vectors, 10)
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)])
    assert recall >= (1.0 if kind == "flat" else 0.9)
    # scores are the cosine similarities of the rows they name, best first
    np.testing.assert_allclose(scores, np.take_along_axis(normalize(queries) @ gallery.vectors.T, rows, axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_add_and_remove_without_rebuild(kind, tmp_path):
    vectors = clustered(600)
    gallery = GalleryIndex.build(vectors[:500], names(500), kind, "sha", "m", nprobe=64)
    gallery.add(vectors[500:], names(100, start=500))
    assert gallery.meta.count == 600 and gallery.index.ntotal == 600
    # a query equal to an added vector finds it first
    _, rows = gallery.search(vectors[550:551], 1)
    assert gallery.files[rows[0, 0]] == names(1, start=550)[0]
    removed = gallery.remove([names(1, start=550)[0], "/not/indexed.png"])
    assert removed == 1 and gallery.meta.count == 599 and gallery.index.ntotal == 599
    _, rows = gallery.search(vectors[550:551], 5)
    assert names(1, start=550)[0] not in {gallery.files[r] for r in rows[0]}
    gallery.save(tmp_path / "idx")
    again = GalleryIndex.load(tmp_path / "idx")
    assert again.files == gallery.files and again.meta.count == 599
    np.testing.assert_array_equal(again.search(vectors[:5], 3)[1], gallery.search(vectors[:5], 3)[1])


def test_adding_a_file_again_replaces_it():
    vectors = clustered(100)
    gallery = GalleryIndex.build(vectors, names(100), "flat", "sha", "m")
    gallery.add(vectors[:1] * -1, names(1))
    assert gallery.meta.count == 100 and gallery.files.count(names(1)[0]) == 1
    np.testing.assert_allclose(gallery.vectors[-1], -vectors[0], atol=1e-6)


def test_k_larger_than_the_gallery_is_a_clear_error():
    gallery = GalleryIndex.build(clustered(20), names(20), "flat", "sha", "m")
    with pytest.raises(CnnkitError, match=r"-k 21 is larger than the gallery \(20 images\)"):
        gallery.search(clustered(1), 21)


def test_ivf_list_count_respects_faiss_minimum():
    assert default_nlist(100) == 2 and default_nlist(10) == 1
    assert default_nlist(1_000_000) == 4000


def test_save_replaces_the_whole_directory_atomically(tmp_path, monkeypatch):
    target = tmp_path / "idx"
    GalleryIndex.build(clustered(50), names(50), "flat", "sha", "m").save(target)
    bigger = GalleryIndex.build(clustered(80), names(80), "flat", "sha", "m")
    import cnnkit.retrieval.index as index_module

    def crash(*_args):
        raise KeyboardInterrupt  # killed while writing the new copy

    monkeypatch.setattr(index_module.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(target)
    monkeypatch.undo()
    assert GalleryIndex.load(target).meta.count == 50  # the old index, whole
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary left behind


def test_an_interrupted_swap_is_recovered(tmp_path):
    target = tmp_path / "idx"
    GalleryIndex.build(clustered(30), names(30), "flat", "sha", "m").save(target)
    target.rename(tmp_path / ".idx.old")  # killed between the two renames of a swap
    assert GalleryIndex.load(target).meta.count == 30


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "meta.json").unlink(), "not a cnnkit index"),
    (lambda d: (d / "meta.json").write_text("{not json"), "corrupt index metadata"),
    (lambda d: (d / "index.faiss").write_bytes(b"garbage"), "corrupt or missing FAISS index"),
    (lambda d: (d / "items.json").write_text(json.dumps({"ids": [0], "files": ["a"]})), "items.json lists 1 files"),
    (lambda d: np.save(d / "vectors.npy", np.zeros((3, 4), np.float32)), "vectors.npy has shape"),
])
def test_corrupt_index_is_named(tmp_path, damage, message):
    target = tmp_path / "idx"
    GalleryIndex.build(clustered(40), names(40), "flat", "sha", "m").save(target)
    damage(target)
    with pytest.raises(CnnkitError, match=message) as info:
        GalleryIndex.load(target)
    assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_a_different_model_is_refused():
    gallery = GalleryIndex.build(clustered(10), names(10), "flat", "a" * 64, "tiny_cnn")
    with pytest.raises(CnnkitError, match="not the model this index was built with"):
        gallery.check_model("b" * 64, "other.safetensors")


def test_save_never_replaces_a_folder_that_is_not_an_index(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(CnnkitError, match="exists and is not a cnnkit index"):
        GalleryIndex.build(clustered(10), names(10), "flat", "sha", "m").save(photos)
    assert (photos / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "empty").mkdir()
    GalleryIndex.build(clustered(10), names(10), "flat", "sha", "m").save(tmp_path / "empty")  # an empty folder is fine


def test_a_killed_writers_leftovers_are_cleared(tmp_path):
    target = tmp_path / "idx"
    GalleryIndex.build(clustered(30), names(30), "flat", "sha", "m").save(target)
    leftover = tmp_path / ".idx.abc123.tmp"  # what SIGKILL during a save leaves
    leftover.mkdir()
    (leftover / "vectors.npy").write_bytes(b"half")
    assert GalleryIndex.load(target).meta.count == 30  # readers ignore it
    GalleryIndex.build(clustered(40), names(40), "flat", "sha", "m").save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"] and GalleryIndex.load(target).meta.count == 40
