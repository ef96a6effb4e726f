"""What identifies a deployed file: its suffix, and where its cnnkit metadata rides (imported by every
compress module; it imports nothing)."""

from __future__ import annotations

from pathlib import Path

META_FILE = "cnnkit.json"  # extra file of .ts/.pt2, metadata_props key of .onnx
QUANTIZED_FORMAT = "cnnkit-int8"
SUFFIXES = (".onnx", ".pt2", ".ts", ".int8.pt")


def is_deployed(path: str | Path) -> bool:
    return str(path).endswith(SUFFIXES)
