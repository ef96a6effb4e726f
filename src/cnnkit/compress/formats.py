"""What identifies a deployed file: its suffix, and where its cnnkit metadata rides (imported by every
compress module; it imports nothing)."""

from __future__ import annotations

from pathlib import Path

META_FILE = "cnnkit.json"  # extra file of .ts/.pt2, metadata_props key of .onnx (an IR: rt_info cnnkit/metadata)
QUANTIZED_FORMAT = "cnnkit-int8"
# .xml: an OpenVINO IR (beside its .bin); .pte: ExecuTorch; .mlpackage: a Core ML package (a folder)
SUFFIXES = (".onnx", ".pt2", ".ts", ".int8.pt", ".xml", ".pte", ".mlpackage")


def is_deployed(path: str | Path) -> bool:
    return str(path).rstrip("/").endswith(SUFFIXES)


def file_size(path: str | Path) -> int:
    """Bytes of a model file, with the weights file an OpenVINO IR keeps beside its graph."""
    path = Path(path)
    if path.is_dir():  # a Core ML package
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    extra = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return path.stat().st_size + (extra.stat().st_size if extra is not None and extra.is_file() else 0)
