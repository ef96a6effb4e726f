"""Proof that a deployed archive holds no code before torch opens it.

``torch.export.load`` quietly retries ``torch.load(weights_only=False)`` when the safe load of a
pickled member fails (sample inputs, pickled weights and constants), unpickles "opaque" constants
with ``pickle.loads`` and loads compiled AOTInductor libraries: a ``.pt2`` file a user is handed
could run anything. So every member of a ``.pt2`` is accounted for first — raw tensor bytes named by
the archive's own payload configs, text, and pickles that ``torch.load(weights_only=True)`` accepts
— and anything else is refused in one line. The load itself then runs with ``torch.load`` held to
``weights_only=True``, so no fallback exists even for a member this check did not foresee.

TorchScript (``.ts``) pickles are read by TorchScript's own unpickler, which only rebuilds tensors
and TorchScript classes; its code is TorchScript, not Python, and runs at load time only through
``__setstate__``. Each pickle's globals are checked against what ``torch.jit.save`` writes, and
``__setstate__`` is refused.

    check_pt2(path); with weights_only_loading(): program = torch.export.load(path)
"""

from __future__ import annotations

import contextlib
import io
import json
import pickletools
import zipfile
from pathlib import Path
from typing import Iterator

import torch

from cnnkit.errors import CnnkitError

_TEXT_NAMES = ("archive_format", "archive_version", "version", "byteorder", "serialization_id")
_NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".pyd", ".cubin", ".o")
_ZIP_MAGIC = b"PK\x03\x04"
# torch.export.pt2_archive.constants (torch >= 2.7); the same literals, so older torch needs no import
_AOTI_DIR, _CUSTOM_OBJ, _OPAQUE_OBJ = "data/aotinductor/", "custom_obj_", "opaque_obj_"


def _refuse(path: Path, member: str, why: str) -> CnnkitError:
    return CnnkitError(f"{path}: refused to load: member '{member}' {why}",
                       "only load models you exported yourself; export this one again with `cnnkit export`")


def _zip_members(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info.filename) for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise CnnkitError(f"{path}: not a readable {path.suffix} archive ({exc})") from None


def _raw_payloads(path: Path, members: dict[str, bytes]) -> set[str]:
    """Members the archive's weights/constants configs declare as raw tensor bytes (never unpickled)."""
    raw, pickled = set(), set()
    for name, data in members.items():
        if not (name.endswith("_config.json") and "/data/" in f"/{name}"):
            continue
        try:
            config = json.loads(data).get("config", {})
        except (ValueError, AttributeError):
            raise _refuse(path, name, "is not valid JSON") from None
        folder = name.rsplit("/", 1)[0] + "/"
        for entry in config.values() if isinstance(config, dict) else []:
            target = folder + str(entry.get("path_name", "")) if isinstance(entry, dict) else ""
            (pickled if isinstance(entry, dict) and entry.get("use_pickle") else raw).add(target)
    return raw - pickled


def _is_text(name: str, data: bytes) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base in _TEXT_NAMES or (base.endswith(".json") and not data.startswith((_ZIP_MAGIC, b"\x80")))


def check_pt2(path: str | Path) -> dict[str, bytes]:
    """The members of a ``.pt2`` (name -> bytes); CnnkitError unless every one is raw tensor data, text, an
    extra file or a pickle that ``torch.load(weights_only=True)`` accepts."""
    path = Path(path)
    members = _zip_members(path)
    raw = _raw_payloads(path, members)
    for name, data in members.items():
        inner = name.split("/", 1)[-1]  # without the archive's root folder
        base = inner.rsplit("/", 1)[-1]
        if inner.startswith(_AOTI_DIR) or base.endswith(_NATIVE_SUFFIXES):
            raise _refuse(path, name, "is compiled native code")
        if base.startswith((_CUSTOM_OBJ, _OPAQUE_OBJ)):
            raise _refuse(path, name, "is a pickled Python object")
        if name in raw or inner.startswith("extra/") or _is_text(name, data):
            continue  # bytes torch never unpickles (extra files are handed to us as strings)
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not plain tensors": refuse
            raise _refuse(path, name, f"is not plain tensors ({_load_failure(exc)})") from None
    return members


def _load_failure(exc: Exception) -> str:
    """The line of a failed ``torch.load`` that says why (weights_only names the global it refused)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "GLOBAL" in line]
    return (named or lines or [type(exc).__name__])[0][:160]


def check_onnx_external_data(path: str | Path, model) -> None:
    """CnnkitError when an ONNX model's external tensor data lies outside the model's folder: ONNX
    Runtime would read any file the model names (an absolute path, or ``..``) into a weight."""
    path = Path(path)
    folder = path.resolve().parent
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            if tensor.data_location != 1:  # TensorProto.EXTERNAL
                continue
            location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
            target = (folder / location).resolve()
            if not location or Path(location).is_absolute() or folder not in target.parents:
                raise CnnkitError(f"{path}: refused to load: tensor '{tensor.name}' reads its data from "
                                  f"'{location}', outside the model's folder", "export the model again")
        for attribute in (attribute for node in graph.node for attribute in node.attribute):  # If/Loop bodies
            graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)


@contextlib.contextmanager
def weights_only_loading() -> Iterator[None]:
    """``torch.load`` with ``weights_only=True`` forced, for libraries that fall back to unsafe loading."""
    original = torch.load

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = original


def _allowed_ts_global(module: str, name: str) -> bool:
    """What torch.jit.save writes into an archive's pickles: tensors, storages, TorchScript classes
    (compiled from the archive's own TorchScript code) and the jit's list/type helpers."""
    if module == "__torch__" or module.startswith("__torch__."):
        return True
    if module == "torch":
        return name.endswith("Storage") or name in ("device", "Size", "dtype")
    if module == "torch._utils":
        return name.startswith("_rebuild_")
    if module == "collections":
        return name == "OrderedDict"
    return module == "torch.jit._pickle"


def check_torchscript(path: str | Path) -> None:
    """CnnkitError unless the ``.ts`` archive's pickles name only tensors and TorchScript classes and no
    TorchScript class runs code while loading (``__setstate__``)."""
    path = Path(path)
    for name, data in _zip_members(path).items():
        base = name.rsplit("/", 1)[-1]
        if base.endswith(_NATIVE_SUFFIXES):
            raise _refuse(path, name, "is compiled native code")
        if "/code/" in f"/{name}" and name.endswith(".py") and b"__setstate__" in data:
            raise _refuse(path, name, "runs code while loading (__setstate__)")
        if not name.endswith(".pkl"):
            continue
        try:
            for opcode, arg, _ in pickletools.genops(data):
                if opcode.name in ("GLOBAL", "INST"):
                    module, _, attribute = str(arg).partition(" ")
                    if not _allowed_ts_global(module, attribute):
                        raise _refuse(path, name, f"calls {module}.{attribute}")
                elif opcode.name == "STACK_GLOBAL":
                    raise _refuse(path, name, "looks a global up by name (not written by torch.jit.save)")
        except (ValueError, EOFError) as exc:  # pickletools on a malformed stream
            raise _refuse(path, name, f"is not a valid pickle ({exc})") from None
