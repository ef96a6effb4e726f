"""A gallery index on disk: a FAISS index of L2-normalised embeddings with their files and the model.

    INDEX_DIR/
      meta.json          kind, dim, count, the model's identity (sha256 of its weights file), search settings
      index.faiss        the FAISS index (inner product = cosine on normalised vectors), ids = items' ids
      vectors.npy        float32 [N, D], the stored embeddings (for --remove on HNSW, dedup and cluster)
      items.json         {"ids": [N], "files": [N]} in the rows' order
      model.safetensors  a copy of the weights that made the vectors, so search needs only INDEX_DIR

Every change writes a complete new directory beside the old one and swaps the two by renames, so
an interrupted ``index`` leaves either the old index or the new one, never a mixture.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnkit.engine.rundir import temp_dir
from cnnkit.errors import CnnkitError

KINDS = ("flat", "ivf", "hnsw")
META, INDEX, VECTORS, ITEMS, MODEL = "meta.json", "index.faiss", "vectors.npy", "items.json", "model.safetensors"


@dataclass
class IndexMeta:
    kind: str
    dim: int
    count: int
    next_id: int
    model_sha256: str
    model: str
    nlist: int = 0
    nprobe: int = 8
    hnsw_m: int = 32
    ef_search: int = 64
    cnnkit_version: str = ""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """A float32 copy of ``vectors`` [N, D] scaled to unit length (zero rows stay zero)."""
    import faiss

    vectors = np.array(vectors, dtype=np.float32, order="C", copy=True, ndmin=2)
    faiss.normalize_L2(vectors)  # in place, multithreaded: the cheapest way FAISS users do it
    return vectors


def default_nlist(count: int) -> int:
    """About 4·sqrt(N) lists, but at least 39 training points per list (FAISS's own minimum)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def make_faiss_index(kind: str, dim: int, vectors: np.ndarray, nlist: int = 0, hnsw_m: int = 32):
    """An empty FAISS index of ``kind`` for inner-product search, trained on ``vectors`` where it needs it."""
    import faiss

    if kind == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    if kind == "ivf":
        if len(vectors) == 0:
            raise CnnkitError("an IVF index needs vectors to train its lists", "build it from a non-empty source")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist or default_nlist(len(vectors)), faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        return index
    if kind == "hnsw":
        return faiss.IndexIDMap(faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT))
    raise CnnkitError(f"unknown index kind '{kind}'", f"choose one of {', '.join(KINDS)}")


def _apply_search_settings(index, meta: IndexMeta) -> None:
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(meta.nprobe, inner.nlist)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = meta.ef_search


@dataclass
class GalleryIndex:
    """The index in memory; rows of ``vectors``, ``ids`` and ``files`` line up, ids ascend."""

    meta: IndexMeta
    index: object
    vectors: np.ndarray
    ids: np.ndarray
    files: list[str]
    model_file: Path | None = None

    # ------------------------------------------------------------ building
    @classmethod
    def build(cls, vectors: np.ndarray, files: Sequence[str], kind: str, model_sha256: str, model: str,
              model_file: Path | None = None, nlist: int = 0, nprobe: int = 8, hnsw_m: int = 32,
              ef_search: int = 64, version: str = "") -> "GalleryIndex":
        vectors = normalize(vectors)
        if len(vectors) != len(files):
            raise ValueError("one vector per file")
        nlist = (nlist or default_nlist(len(vectors))) if kind == "ivf" else 0
        meta = IndexMeta(kind, int(vectors.shape[1]), 0, 0, model_sha256, model, nlist, nprobe, hnsw_m, ef_search, version)
        index = make_faiss_index(kind, meta.dim, vectors, nlist, hnsw_m)
        _apply_search_settings(index, meta)
        gallery = cls(meta, index, np.zeros((0, meta.dim), np.float32), np.zeros(0, np.int64), [], model_file)
        gallery._append(vectors, _as_str_list(files))
        return gallery

    def add(self, vectors: np.ndarray, files: Sequence[str]) -> int:
        """Append vectors of distinct files; a file already in the index is replaced by its new vector.
        Returns the number added."""
        vectors = normalize(vectors)
        if vectors.shape[1] != self.meta.dim:
            raise CnnkitError(f"new vectors have {vectors.shape[1]} dimensions, the index {self.meta.dim}",
                              "add with the model the index was built with")
        files = _as_str_list(files)
        already = set(files).intersection(self.files) if self.files else set()
        if already:
            self.remove(sorted(already))
        return self._append(vectors, files)

    def _append(self, vectors: np.ndarray, files: list[str]) -> int:
        """Add unit vectors of files not yet in the index."""
        ids = np.arange(self.meta.next_id, self.meta.next_id + len(files), dtype=np.int64)
        if len(files):
            self.index.add_with_ids(vectors, ids)
        self.vectors = np.concatenate([self.vectors, vectors]) if len(self.vectors) else vectors
        self.ids = np.concatenate([self.ids, ids])
        self.files += files
        self.meta.next_id += len(files)
        self.meta.count = len(self.files)
        return len(files)

    def remove(self, files: Sequence[str]) -> int:
        """Drop these files (no re-embedding). Returns how many were in the index."""
        import faiss

        drop = set(map(str, files))
        keep = np.array([f not in drop for f in self.files], dtype=bool)
        removed = int((~keep).sum())
        if removed == 0:
            return 0
        gone = self.ids[~keep]
        self.vectors, self.ids = self.vectors[keep], self.ids[keep]
        self.files = [f for f, k in zip(self.files, keep) if k]
        self.meta.count = len(self.files)
        if self.meta.kind == "hnsw":
            # HNSW graphs cannot delete nodes: rebuild the graph from the stored vectors
            self.index = make_faiss_index("hnsw", self.meta.dim, self.vectors, hnsw_m=self.meta.hnsw_m)
            _apply_search_settings(self.index, self.meta)
            if len(self.ids):
                self.index.add_with_ids(self.vectors, self.ids)
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(gone))
        return removed

    # ------------------------------------------------------------ searching
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities [Q, k], row numbers [Q, k]) best first; rows index ``files``/``vectors``,
        -1 where an approximate index found fewer than k."""
        if k < 1:
            raise CnnkitError(f"-k must be at least 1, got {k}")
        if k > self.meta.count:
            raise CnnkitError(f"-k {k} is larger than the gallery ({self.meta.count} images)", f"use -k {max(1, self.meta.count)} or less")
        scores, ids = self.index.search(normalize(queries), k)
        if len(self.ids) and self.ids[0] == 0 and self.ids[-1] == len(self.ids) - 1:
            return scores, ids  # nothing removed yet: ids are the row numbers (ascending and unique)
        rows = np.searchsorted(self.ids, ids)
        rows = np.where((ids >= 0) & (rows < len(self.ids)), rows, -1)
        return scores, rows

    # ------------------------------------------------------------ disk
    def save(self, directory: str | Path) -> Path:
        """Write the whole index into a fresh sibling directory, then swap it in by renames."""
        import faiss

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        recover(directory)
        check_index_target(directory)
        for stale in directory.parent.glob(f".{directory.name}.*.tmp"):  # left by a writer that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = temp_dir(directory.parent, directory.name, suffix=".tmp")
        try:
            faiss.write_index(self.index, str(tmp / INDEX))
            with open(tmp / VECTORS, "wb") as handle:
                np.save(handle, self.vectors)
            (tmp / ITEMS).write_text(json.dumps({"ids": self.ids.tolist(), "files": self.files}))
            if self.model_file is not None:
                _link_or_copy(self.model_file, tmp / MODEL)
            (tmp / META).write_text(json.dumps(asdict(self.meta), indent=2) + "\n")
            _swap_in(tmp, directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.model_file = directory / MODEL if (directory / MODEL).is_file() else self.model_file
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "GalleryIndex":
        """Read and cross-check an index directory; CnnkitError naming the file for anything wrong."""
        import faiss

        directory = Path(directory)
        recover(directory)
        if not directory.is_dir():
            raise CnnkitError(f"{directory}: no such index directory", "build one with `cnnkit embed index --source DIR --out INDEX_DIR`")
        meta_path = directory / META
        if not meta_path.is_file():
            raise CnnkitError(f"{directory}: not a cnnkit index (no {META})", "build one with `cnnkit embed index`")
        try:
            raw = json.loads(meta_path.read_text())
            meta = IndexMeta(**raw)
        except (ValueError, TypeError) as exc:
            raise CnnkitError(f"{meta_path}: corrupt index metadata ({exc})", "rebuild the index") from None
        try:
            index = faiss.read_index(str(directory / INDEX))
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise CnnkitError(f"{directory / INDEX}: corrupt or missing FAISS index ({reason[:120]})", "rebuild the index") from None
        try:
            # memory-mapped: search never touches the stored vectors, so a large gallery opens at once
            vectors = np.load(directory / VECTORS, allow_pickle=False, mmap_mode="r")
            items = json.loads((directory / ITEMS).read_text())
            ids, files = np.asarray(items["ids"], dtype=np.int64), [str(f) for f in items["files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CnnkitError(f"{directory}: corrupt index data ({type(exc).__name__}: {str(exc)[:120]})", "rebuild the index") from None
        problems = []
        if index.ntotal != meta.count:
            problems.append(f"{INDEX} holds {index.ntotal} vectors, {META} says {meta.count}")
        if vectors.ndim != 2 or vectors.shape != (meta.count, meta.dim):
            problems.append(f"{VECTORS} has shape {tuple(vectors.shape)}, expected ({meta.count}, {meta.dim})")
        if index.d != meta.dim:
            problems.append(f"{INDEX} has {index.d} dimensions, {META} says {meta.dim}")
        if len(ids) != meta.count or len(files) != meta.count:
            problems.append(f"{ITEMS} lists {len(files)} files, {META} says {meta.count}")
        if problems:
            raise CnnkitError(f"{directory}: corrupt index: {problems[0]}", "rebuild the index")
        _apply_search_settings(index, meta)
        model_file = directory / MODEL if (directory / MODEL).is_file() else None
        return cls(meta, index, vectors.astype(np.float32, copy=False), ids, files, model_file)

    def check_model(self, sha256: str, weights: str | Path) -> None:
        if sha256 != self.meta.model_sha256:
            raise CnnkitError(f"{weights}: not the model this index was built with ({self.meta.model}, "
                              f"sha256 {self.meta.model_sha256[:12]}…, this file {sha256[:12]}…)",
                              "embed with the index's own model (leave out --weights) or rebuild the index")


def _as_str_list(files: Sequence) -> list[str]:
    """File names as a list of str. A list of str (what cnnkit passes) is only copied: converting a
    million names one by one would cost more than FAISS's own flat build."""
    if isinstance(files, np.ndarray):
        return files.astype(str).tolist()
    files = list(files)
    return files if not files or (type(files[0]) is str and type(files[-1]) is str) else [str(f) for f in files]


def check_index_target(directory: str | Path) -> None:
    """An index may be written to a new or empty folder, or over an index: the swap replaces the
    whole directory, which must never happen to a folder of someone's files."""
    directory = Path(directory)
    if directory.exists() and not (directory / META).is_file() and (not directory.is_dir() or any(directory.iterdir())):
        raise CnnkitError(f"{directory}: exists and is not a cnnkit index", "pass --out a new or empty folder, or an existing index")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _old(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.old")


def _swap_in(tmp: Path, directory: Path) -> None:
    old = _old(directory)
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def recover(directory: Path) -> None:
    """Finish a swap that was interrupted between its two renames: put the previous index back."""
    old = _old(directory)
    if old.is_dir() and not directory.exists():
        os.replace(old, directory)
