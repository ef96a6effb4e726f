"""`cnnkit embed train|val|index|search|dedup|cluster`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnkit.cli.options import (Batch, Device, ValOut, Workers, _file_table, _shown, config_command, pixel_limited,
                                takes_sources)
from cnnkit.tasks.embed.config import EmbedConfig
from cnnkit.errors import CnnkitError

app = typer.Typer(help="Image embeddings and visual search: train, val, index, search, dedup, cluster.", no_args_is_help=True)


# ==================================================================== embed




@config_command(app, "train", EmbedConfig, "Train an embedding model (metric learning) on an ImageFolder whose classes are identities.")
def embed_train(cfg: EmbedConfig, explicit: set[str]) -> None:
    from cnnkit.runner import train
    from cnnkit.tasks.embed.api import EMBED_RECIPE

    train(cfg, explicit, EMBED_RECIPE)


@app.command("val")
@pixel_limited
def embed_val(
    weights: Path = typer.Option(..., "--weights", help="an embed or classify weights file (a classifier embeds with its pooled features)"),
    data: str = typer.Option("digits", "--data", help="dataset root (ImageFolder) or built-in name"),
    query_split: Optional[str] = typer.Option(None, "--query-split", help="split whose images are the queries (default: test, else val)"),
    gallery_split: str = typer.Option("train", "--gallery-split", help="split searched for each query (the same split as the queries: leave-one-out)"),
    out: ValOut = None,
    batch: Batch = 64,
    device: Device = "auto",
    workers: Workers = 2,
) -> None:
    """Retrieval quality: each query image against the gallery split; metrics.json with recall@1, recall@5, map."""
    from cnnkit.tasks.embed.api import Embedder

    Embedder.load(weights).val(data, query_split, gallery_split, out, batch=batch, device=device, workers=workers)


@app.command("index")
@takes_sources(required=False)  # --remove alone changes an index
def embed_index(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="image folders, files or glob patterns "
                                                  "(quote globs)"),
    out: Path = typer.Option(..., "--out", metavar="INDEX_DIR", help="the index folder to build (replaced in one swap) or to change"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="embed or classify weights; needed to build, optional with --add (must be the index's model)"),
    kind: str = typer.Option("flat", "--index", help="flat (exact inner product), ivf (inverted lists) or hnsw (graph) for large galleries"),
    add: bool = typer.Option(False, "--add", help="append the SOURCE images to the existing index (a file already in it is "
                             "re-embedded)"),
    remove: Optional[list[str]] = typer.Option(None, "--remove", metavar="FILE|DIR|GLOB", help="drop these files from the existing index, no re-embedding; repeat for more"),
    nlist: int = typer.Option(0, "--nlist", min=0, help="IVF: number of lists (0 = about 4*sqrt(N))"),
    nprobe: int = typer.Option(8, "--nprobe", min=1, help="IVF: lists visited per query (more = slower, better recall)"),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=4, help="HNSW: links per node"),
    ef_search: int = typer.Option(64, "--ef-search", min=1, help="HNSW: candidates kept per query (more = slower, better recall)"),
    batch: Batch = 64,
    device: Device = "auto",
    workers: Workers = 2,
) -> None:
    """Build a FAISS index of a folder's embeddings (vectors, files and the model are stored with it), or --add / --remove images."""
    from cnnkit.tasks.embed.api import build_index
    from cnnkit.retrieval.index import KINDS

    if kind not in KINDS:
        raise CnnkitError(f"--index {kind!r} is not one of {', '.join(KINDS)}")
    build_index(out, sources, weights, kind, add, remove or [], nlist, nprobe, hnsw_m, ef_search, batch, device, workers)


@app.command("search")
@takes_sources("queries", what="a query image, folder or quoted glob pattern")
def embed_search(
    queries: Optional[list[str]] = typer.Argument(None, metavar="QUERY", help="query images, folders or glob patterns"),
    index: Path = typer.Option(..., "--index", metavar="INDEX_DIR", help="an index built by `cnnkit embed index`"),
    k: int = typer.Option(5, "-k", "--k", min=1, help="neighbours per query"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="the model to embed the queries (default: the index's own copy; must match it)"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"query", "neighbors": [{"file", "score"}]}] to this file'),
    sheet: Optional[Path] = typer.Option(None, "--sheet", metavar="FILE.png", help="contact sheet: each query beside its neighbours (default: search.png in --out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for search.png and results.json (default: runs/embed/search, search2, …)"),
    device: Device = "auto",
) -> None:
    """Nearest gallery images of each query, by cosine similarity: a table, a contact sheet and JSON."""
    from rich.console import Console

    from cnnkit.tasks.embed.api import search_index
    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json
    from cnnkit.retrieval.sheets import contact_sheet

    results = search_index(index, queries, k, weights, device=device)
    table = _file_table("query", "rank", "score", "file")
    for r in results:
        for rank, n in enumerate(r["neighbors"], 1):
            table.add_row(_shown(r["query"]) if rank == 1 else "", str(rank), f"{n['score']:.3f}", _shown(n["file"]))
    Console().print(table)  # stdout: results; messages go to stderr
    out_dir = out or next_run_dir("embed", None, prefix="search")
    write_json(out_dir / "results.json", results)
    if save_json:
        write_json(save_json, results)
    rows = [[(r["query"], "query", None)] + [(n["file"], f"{i}: {n['score']:.3f}", None) for i, n in enumerate(r["neighbors"], 1)]
            for r in results[:20]]
    path = contact_sheet(rows, sheet or out_dir / "search.png")
    console.print(f"{len(results)} queries; sheet {path}; results {save_json or out_dir / 'results.json'}", soft_wrap=True, markup=False)


def _group_sheets(groups: list[list[str]], captions: list[list[str]], out_dir: Path, name: str, per_sheet: int = 20) -> list[Path]:
    """One contact sheet per 20 groups (a row each, at most 10 images a row)."""
    from cnnkit.retrieval.sheets import contact_sheet

    paths = []
    for start in range(0, len(groups), per_sheet):
        rows = [[(f, c, None) for f, c in zip(files[:10], caps[:10])] for files, caps in
                zip(groups[start:start + per_sheet], captions[start:start + per_sheet])]
        paths.append(contact_sheet(rows, out_dir / f"{name}_{start // per_sheet:02d}.png"))
    return paths


# dedup and cluster work on an index's stored vectors, or embed a folder on the spot
GalleryIndex = Annotated[Optional[Path], typer.Option("--index", metavar="INDEX_DIR",
                                                      help="the images of this index (their stored vectors)")]
GALLERY_SOURCES = typer.Argument(None, metavar="SOURCE", help="image folders, files or glob patterns (quote globs) to embed "
                                 "with --weights, instead of --index")
GALLERY = dict(required=False, what="an image folder, file or quoted glob pattern (with --weights)")
GalleryWeights = Annotated[Optional[Path], typer.Option("--weights", help="embed or classify weights (with --source)")]


@app.command("dedup")
@takes_sources(**GALLERY)
def embed_dedup(
    sources: Optional[list[str]] = GALLERY_SOURCES,
    index: GalleryIndex = None,
    weights: GalleryWeights = None,
    threshold: float = typer.Option(0.95, "--threshold", help="cosine similarity at or above which two images are near-duplicates"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for duplicates.json and sheets (default: runs/embed/dedup, dedup2, …)"),
    device: Device = "auto",
) -> None:
    """Groups of near-duplicate images (linked by similarity >= --threshold), largest first."""
    from rich.console import Console

    from cnnkit.tasks.embed.api import dedup
    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json

    groups = dedup(index, sources, weights, threshold, device=device)
    table = _file_table("group", "images", "similarity", "files")
    for i, g in enumerate(groups):
        shown = ", ".join(map(_shown, g["files"][:4])) + (f", … (+{len(g['files']) - 4})" if len(g["files"]) > 4 else "")
        table.add_row(str(i), str(len(g["files"])), f"{g['min_score']:.3f}–{g['max_score']:.3f}", shown)
    Console().print(table)
    out_dir = out or next_run_dir("embed", None, prefix="dedup")
    write_json(out_dir / "duplicates.json", {"threshold": threshold, "groups": groups})
    sheets = _group_sheets([g["files"] for g in groups], [[f"group {i}"] * len(g["files"]) for i, g in enumerate(groups)], out_dir, "duplicates")
    duplicates = sum(len(g["files"]) - 1 for g in groups)
    console.print(f"{len(groups)} groups, {duplicates} images are near-duplicates of another; written to {out_dir}"
                  + (f" ({len(sheets)} sheets)" if sheets else ""), soft_wrap=True, markup=False)


@app.command("cluster")
@takes_sources(**GALLERY)
def embed_cluster(
    sources: Optional[list[str]] = GALLERY_SOURCES,
    k: int = typer.Option(..., "-k", "--k", min=1, help="number of clusters"),
    index: GalleryIndex = None,
    weights: GalleryWeights = None,
    seed: int = typer.Option(0, "--seed", help="k-means initialisation seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for clusters.json and one sheet per cluster (default: runs/embed/cluster, …)"),
    device: Device = "auto",
) -> None:
    """Group images with spherical k-means on their embeddings; a contact sheet per cluster (most typical first)."""
    from rich.console import Console

    from cnnkit.tasks.embed.api import cluster
    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json
    from cnnkit.retrieval.sheets import contact_sheet

    result = cluster(k, index, sources, weights, seed, device=device)
    out_dir = out or next_run_dir("embed", None, prefix="cluster")
    table = _file_table("cluster", "images", "sheet", "most typical")
    for c in result["clusters"]:
        sheet = out_dir / f"cluster_{c['id']:02d}.png"
        if c["files"]:
            cells = [(f, f"{s:.2f}", None) for f, s in zip(c["files"][:30], c["scores"][:30])]
            contact_sheet([cells[i:i + 10] for i in range(0, len(cells), 10)], sheet)
        table.add_row(str(c["id"]), str(c["size"]), str(sheet) if c["files"] else "", _shown(c["files"][0]) if c["files"] else "")
    Console().print(table)
    write_json(out_dir / "clusters.json", result)
    console.print(f"{k} clusters of {len(result['assignment'])} images written to {out_dir}", soft_wrap=True, markup=False)
