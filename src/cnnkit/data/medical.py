"""Read images for segmentation with their full intensity range: DICOM, NIfTI, 16-bit and float PNG/TIFF.

images.load_image squeezes everything into 8-bit RGB, which is right for photographs and wrong here: a CT slice
spans about -1024..3000 Hounsfield units and a microscope writes 12-bit data into a 16-bit container. Reading
those through 8 bits either clips them or crushes them into a handful of grey levels, so this module keeps the
file's own values (float32) and leaves the mapping to [0, 1] to `normalise`, where the choice is explicit.

Conventions:
- A slice is [H, W] (one channel) or [H, W, 3] (RGB); rows are the first array axis of the file. Nothing is
  reoriented (no radiological flips), so masks stored the same way line up pixel for pixel; only a photo's EXIF
  orientation is applied (as images.load_image does), since annotation tools draw masks on the upright photo.
- A file with several slices (a NIfTI volume, a multi-frame DICOM) needs `slice_index`; callers list the
  slices with `count_slices`. We do not silently default to slice 0, because training on the first slice of
  every volume looks like it works and is almost never what was meant.
- pydicom and nibabel are imported on first use: they cost a quarter of a second each at start-up, and most
  runs never see a medical file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data.decode import IMAGE_EXTENSIONS, is_deep_colour_tiff, open_image, orientation, to_rgb, upright
from cnnkit.errors import CnnkitError
from cnnkit.libwarnings import reading

MEDICAL_EXTENSIONS = (".dcm", ".dicom", ".nii", ".nii.gz")

NORMALISE_MODES = ("auto", "window", "percentile", "range")

# pydicom's own words for "a plugin is missing"; 3.x says "missing dependencies", 2.4 "missing required dependencies".
_MISSING_PLUGIN_WORDS = ("missing", "dependenc")
# the [medical] extra installs pylibjpeg with its JPEG, JPEG 2000 and RLE plugins (and GDCM where it has wheels)
_DICOM_DECODER_HINT = "pip install cnnkit[medical]"
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class Intensity:
    """One 2-D slice in the file's own units.

    pixels: float32 [H, W] (one channel) or [H, W, 3] (RGB). DICOM values are after the modality LUT
        (rescale slope/intercept), e.g. Hounsfield units for CT; MONOCHROME1 is mirrored so bright means high.
    bits: 8 for 8-bit files, 16 for 16-bit, 32 for float/int32; DICOM: BitsStored (e.g. 12).
    window: the file's default display window (low, high) in the units of `pixels`, or None.
    spacing: pixel size in mm as (row spacing, column spacing) when the file says, else None.
    """

    pixels: np.ndarray
    bits: int
    window: tuple[float, float] | None = None
    spacing: tuple[float, float] | None = None


def is_volume(path: str | Path) -> bool:
    """True for NIfTI files (.nii, .nii.gz), which hold a stack of slices rather than one image."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_intensity(path: str | Path, slice_index: int | None = None) -> Intensity:
    """Read one 2-D slice of `path` keeping its full intensity range.

    slice_index picks the slice of a NIfTI volume (along its last spatial axis, data[:, :, k]; 4-D: first
    volume) or the frame of a multi-frame DICOM. It may be left out only when the file has one slice.
    """
    path = Path(path)
    _require_file(path)
    kind = _file_kind(path)
    if kind in ("nifti", "dicom"):
        with reading(path):  # a warning pydicom or nibabel raises names the file (libwarnings)
            return _read_nifti(path, slice_index) if kind == "nifti" else _read_dicom(path, slice_index)
    _pick_slice(path, slice_index, 1, "image")
    return _read_with_pillow(path)


def count_slices(path: str | Path) -> int:
    """How many 2-D slices `path` holds: 1 for images, slices along the last axis for NIfTI, frames for DICOM.

    Reads headers only. A DICOM without pixel data still counts 1 here; read_intensity reports it.
    """
    path = Path(path)
    _require_file(path)
    kind = _file_kind(path)
    with reading(path):  # a warning pydicom or nibabel raises names the file (libwarnings)
        if kind == "nifti":
            return _nifti_slice_count(path, _load_nifti(path).shape)
        if kind == "dicom":
            return _dicom_frame_count(_read_dicom_dataset(path, stop_before_pixels=True))
    return 1


def normalise(
    intensity: Intensity | np.ndarray,
    mode: str = "auto",
    window: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Map pixels to float32 in [0, 1], same shape.

    mode:
    - "window": window=(low, high) maps low..high to 0..1 and clips outside; without `window` the file's
      own window (DICOM WindowCenter/WindowWidth) is used.
    - "percentile": per image, the values at the two percentiles map to 0 and 1 (clipped outside);
      a constant image gives zeros.
    - "range": divide by the container's maximum (8-bit: 255, 16-bit: 65535, n bits: 2**n - 1);
      float and 32-bit data: min-max of the image.
    - "auto": "window" when a window is given or the file has one, 8-bit data "range" (/255, like every photo
      pipeline), anything else "percentile".

    Why not always "range": 12-bit data in a 16-bit container divided by 65535 tops out near 0.06, an almost
    black image; and converting to 8 bits first either clips at 255 or crushes 4096 levels into a few.
    A plain ndarray is accepted too, its bit depth taken from the dtype.
    Non-finite values (NaN, inf in float TIFFs) are treated as missing and come out as 0.
    """
    if mode not in NORMALISE_MODES:
        raise CnnkitError(f"unknown normalisation {mode!r}", f"use one of: {', '.join(NORMALISE_MODES)}")
    if isinstance(intensity, np.ndarray):
        intensity = Intensity(intensity, _bits_of_dtype(intensity.dtype))
    pixels = np.asarray(intensity.pixels, dtype=np.float32)
    pixels = np.where(np.isfinite(pixels), pixels, np.float32(np.nan))
    if mode == "auto":
        if window is not None or intensity.window is not None:
            mode = "window"
        elif intensity.bits <= 8:
            mode = "range"
        else:
            mode = "percentile"

    if mode == "window":
        window = window if window is not None else intensity.window
        if window is None:
            raise CnnkitError(
                "window normalisation needs a window and this image has none",
                "pass --window LOW,HIGH, or use --normalise percentile",
            )
        low, high = window
    elif mode == "percentile":
        finite = pixels[np.isfinite(pixels)]
        low, high = (float(v) for v in np.percentile(finite, percentiles)) if finite.size else (0.0, 0.0)
    elif intensity.bits <= 16:  # "range" of an integer container
        low, high = 0.0, float(2**intensity.bits - 1)
    else:  # "range" of float / 32-bit data: there is no meaningful container maximum
        finite = pixels[np.isfinite(pixels)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)

    if not high > low:  # a constant image has no contrast to stretch
        return np.zeros(pixels.shape, dtype=np.float32)
    scaled = (pixels - np.float32(low)) / np.float32(high - low)
    return np.nan_to_num(np.clip(scaled, 0.0, 1.0), nan=0.0).astype(np.float32, copy=False)


def to_rgb_float(pixels01: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, 1] grey -> float32 [H, W, 3] (replicated); [H, W, 3] passes through as float32.

    The models are ImageNet-pretrained and take three channels; repeating grey keeps the pretrained filters useful.
    """
    pixels01 = np.asarray(pixels01, dtype=np.float32)
    if pixels01.ndim == 3 and pixels01.shape[2] == 1:
        pixels01 = pixels01[:, :, 0]
    if pixels01.ndim == 2:
        return np.repeat(pixels01[:, :, None], 3, axis=2)
    if pixels01.ndim == 3 and pixels01.shape[2] == 3:
        return pixels01
    raise ValueError(f"expected [H, W], [H, W, 1] or [H, W, 3] pixels, got shape {pixels01.shape}")


# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def _require_file(path: Path) -> None:
    if path.is_dir():
        raise CnnkitError(f"{path}: is a folder, not an image file", "pass one file; a DICOM series is one file per slice")
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file", "check the path")


def _file_kind(path: Path) -> str:
    """'nifti', 'dicom' or 'image'. DICOM files often have no suffix at all, so look for the DICM marker."""
    if is_volume(path):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return "dicom"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "dicom" if _has_dicom_preamble(path) else "image"


def _has_dicom_preamble(path: Path) -> bool:
    """The DICOM file format is a 128-byte preamble followed by b'DICM'."""
    try:
        with open(path, "rb") as file:
            head = file.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _pick_slice(path: Path, slice_index: int | None, count: int, what: str) -> int:
    if slice_index is None:
        if count == 1:
            return 0
        raise CnnkitError(
            f"{path}: {what} has {count} slices; pick one with slice_index 0..{count - 1}",
            "list them with count_slices(path)",
        )
    if not 0 <= slice_index < count:
        raise CnnkitError(
            f"{path}: slice {slice_index} is out of range, the {what} has {count} (0..{count - 1})",
            "list them with count_slices(path)",
        )
    return int(slice_index)


def _bits_of_dtype(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return 8
    return 8 * dtype.itemsize if dtype.kind in "ui" and dtype.itemsize <= 2 else 32


def _one_line(exc: BaseException) -> str:
    """Library messages often span lines (pydicom lists each plugin); users get one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


# ---------------------------------------------------------------------------------------------------------------
# PNG / TIFF / JPEG / ... through Pillow


def _read_with_pillow(path: Path) -> Intensity:
    try:
        with open_image(path) as image:  # over the pixel limit (--max-pixels): a CnnkitError naming the file
            turn = orientation(image)
            image.load()
            if is_deep_colour_tiff(image):
                # Pillow keeps only the high byte of 16-bit RGB TIFFs; tifffile, when installed, keeps all 16 bits.
                deep = _read_with_tifffile(path)
                return deep if deep is not None else _pillow_intensity(upright(image, turn))
            return _pillow_intensity(upright(image, turn))  # a phone photo's EXIF orientation, as load_image
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file", "check the path") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            fallback = _read_with_tifffile(path)  # e.g. float RGB or compression Pillow lacks
            if fallback is not None:
                return fallback
        reason = _one_line(exc)
        if "truncated" in reason.lower():
            reason = f"truncated image ({reason})"
        raise CnnkitError(f"{path}: cannot read image: {reason}", "re-export or remove the file") from None


def _pillow_intensity(image: Image.Image) -> Intensity:
    mode = image.mode
    if mode.startswith("I;16"):
        return Intensity(np.asarray(image).astype(np.float32), bits=16)
    if mode == "I":
        # Older Pillow opens 16-bit PNGs as 32-bit "I"; PNG cannot hold more than 16 bits per sample.
        return Intensity(np.asarray(image).astype(np.float32), bits=16 if image.format == "PNG" else 32)
    if mode == "F":
        return Intensity(np.asarray(image, dtype=np.float32).copy(), bits=32)
    if mode in ("L", "1"):
        return Intensity(np.asarray(image.convert("L")).astype(np.float32), bits=8)
    # RGB, RGBA, P, LA, CMYK, ...: the same 8-bit RGB as the photo path (alpha composited on black).
    return Intensity(np.asarray(to_rgb(image)).astype(np.float32), bits=8)


def _read_with_tifffile(path: Path) -> Intensity | None:
    """Optional: tifffile reads what Pillow cannot (16-bit RGB, float RGB). None when unavailable or unreadable."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        array = np.asarray(tifffile.imread(path, key=0))
    except Exception:  # noqa: BLE001 - any failure here means "fall back to the Pillow answer or error"
        return None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, 2)  # planar (channels-first) storage
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[:, :, :3]  # alpha dropped: compositing 16-bit data on black would need its own scale
    elif array.ndim != 2:
        return None
    return Intensity(array.astype(np.float32), bits=_bits_of_dtype(array.dtype))


# ---------------------------------------------------------------------------------------------------------------
# NIfTI through nibabel


def _load_nifti(path: Path):
    import nibabel

    try:
        image = nibabel.load(str(path))  # lazy: reads the header, the data only when sliced
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file", "check the path") from None
    except (OSError, ValueError, EOFError, zlib.error, nibabel.filebasedimages.ImageFileError) as exc:
        raise CnnkitError(f"{path}: cannot read NIfTI file: {_one_line(exc)}", "re-export or remove the file") from None
    if type(image).__name__.startswith("Cifti"):
        # CIFTI-2 (.dtseries.nii, .dscalar.nii, .dconn.nii) shares NIfTI-2's container but holds values per
        # brain vertex/voxel ("grayordinate") or matrices of them: there is no image grid to cut slices from
        raise CnnkitError(f"{path}: a CIFTI file (values on brain surfaces and grayordinates), not an image volume",
                          "cnnkit reads NIfTI image volumes; map the data to a volume first, "
                          "e.g. with wb_command -cifti-separate")
    return image


def _nifti_slice_count(path: Path, shape: tuple[int, ...]) -> int:
    if len(shape) < 2:
        raise CnnkitError(f"{path}: NIfTI image has shape {shape}, not an image or volume", "re-export the file")
    return 1 if len(shape) == 2 else int(shape[2])


def _read_nifti(path: Path, slice_index: int | None) -> Intensity:
    nifti = _load_nifti(path)
    shape = tuple(nifti.shape)
    k = _pick_slice(path, slice_index, _nifti_slice_count(path, shape), "NIfTI volume")
    # rows = axis 0, columns = axis 1, slice along axis 2; 4-D and up: the first volume/time point.
    index = (slice(None), slice(None)) + ((k,) if len(shape) >= 3 else ()) + (0,) * max(0, len(shape) - 3)
    try:
        data = np.asarray(nifti.dataobj[index])  # the proxy reads (and scales) just this slice
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise CnnkitError(f"{path}: cannot read NIfTI slice {k}: {_one_line(exc)}", "the file may be truncated") from None
    if data.dtype.names:  # RGB24 / RGBA32 NIfTI are structured arrays
        raise CnnkitError(f"{path}: colour (RGB) NIfTI files are not supported", "convert it to one channel or to PNG")

    header = nifti.header
    slope, intercept = header.get_slope_inter() if hasattr(header, "get_slope_inter") else (None, None)
    scaled = (slope not in (None, 1.0)) or (intercept not in (None, 0.0))
    bits = 32 if scaled else _bits_of_dtype(nifti.get_data_dtype())
    return Intensity(data.astype(np.float32), bits=bits, window=None, spacing=_nifti_spacing(header))


def _nifti_spacing(header) -> tuple[float, float] | None:
    zooms = header.get_zooms()
    if len(zooms) < 2 or not all(float(z) > 0 for z in zooms[:2]):
        return None
    try:
        unit = header.get_xyzt_units()[0]
    except AttributeError:  # formats without unit codes
        unit = "unknown"
    # Writers that leave the unit "unknown" mean mm in practice (ITK and friends read it so).
    to_mm = {"meter": 1000.0, "micron": 0.001}.get(unit, 1.0)
    return float(zooms[0]) * to_mm, float(zooms[1]) * to_mm


# ---------------------------------------------------------------------------------------------------------------
# DICOM through pydicom


def _read_dicom_dataset(path: Path, stop_before_pixels: bool = False):
    import pydicom

    try:
        # force: older files and some exporters leave out the 128-byte preamble; we only get here for .dcm
        # files or files with the DICM marker, so forcing does not turn random files into "DICOM".
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file", "check the path") from None
    except Exception as exc:  # noqa: BLE001 - a forced parse of a damaged file can fail in any way (struct, key, EOF)
        raise CnnkitError(f"{path}: cannot read DICOM file: {_one_line(exc)}", "re-export or remove the file") from None


def _dicom_frame_count(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):  # a malformed value; pydicom itself treats it as one frame
        return 1


def _transfer_syntax_name(ds) -> str:
    uid = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    return getattr(uid, "name", None) or (str(uid) if uid else "unknown transfer syntax")


def _read_dicom(path: Path, slice_index: int | None) -> Intensity:
    ds = _read_dicom_dataset(path)
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise CnnkitError(
            f"{path}: DICOM file has no pixel data",
            "it is not an image (a report, structured report or presentation state?); remove it from the data",
        )
    frames = _dicom_frame_count(ds)
    k = _pick_slice(path, slice_index, frames, "multi-frame DICOM")
    raw = _decode_dicom_frame(path, ds, k, frames)

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    window = _dicom_window(ds, k)
    if photometric == "PALETTE COLOR" and raw.ndim == 2:
        pixels = _apply_color_lut(path, raw, ds)  # RGB on the 0..255 scale, whatever the LUT's depth
        bits = 8
        window = None  # the window is defined on the indices, not on the colours they map to
    elif raw.ndim == 3:  # RGB (pydicom has already turned YBR into RGB); no modality LUT for colour
        pixels = raw.astype(np.float32)
        bits = int(ds.get("BitsStored") or 8)
    else:
        modality_source = _modality_lut_source(ds, k)
        pixels = _apply_modality_lut(raw, modality_source)
        bits = 32 if "PixelData" not in ds else int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 displays low values white; mirror within the stored range so bright means high
            # for the model, and mirror the window with it so it still covers the same tissue.
            mirror = _monochrome1_mirror(ds, modality_source, pixels)
            pixels = mirror - pixels
            if window is not None:
                window = (mirror - window[1], mirror - window[0])
    return Intensity(np.asarray(pixels, dtype=np.float32), bits=bits, window=window, spacing=_dicom_spacing(ds, k))


def _decode_dicom_frame(path: Path, ds, k: int, frames: int) -> np.ndarray:
    try:
        if frames == 1:
            return np.asarray(ds.pixel_array)
        try:
            from pydicom.pixels import pixel_array as decode_frames  # pydicom >= 3 decodes just the one frame
        except ImportError:  # pydicom 2.4: decode all, keep one
            return np.asarray(ds.pixel_array)[k]
        return np.asarray(decode_frames(ds, index=k))
    except NotImplementedError:
        raise CnnkitError(
            f"{path}: pydicom cannot decode pixel data in {_transfer_syntax_name(ds)}",
            "convert it to an uncompressed transfer syntax, e.g. gdcmconv --raw or dcmdjpeg",
        ) from None
    except Exception as exc:  # noqa: BLE001 - pydicom reports decoder problems as RuntimeError/ValueError/...
        reason = _one_line(exc)
        if all(word in reason.lower() for word in _MISSING_PLUGIN_WORDS):
            raise CnnkitError(
                f"{path}: no decoder installed for {_transfer_syntax_name(ds)} pixel data", _DICOM_DECODER_HINT
            ) from None
        raise CnnkitError(
            f"{path}: cannot decode DICOM pixel data ({_transfer_syntax_name(ds)}): {reason}", "re-export or remove the file"
        ) from None


def _functional_group_item(ds, frame: int, sequence_keyword: str):
    """Enhanced multi-frame DICOM keeps rescale, window and spacing per frame (or shared) in functional groups."""
    for groups_keyword, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(groups_keyword)
        if groups and index < len(groups):
            inner = groups[index].get(sequence_keyword)
            if inner:
                return inner[0]
    return None


def _modality_lut_source(ds, frame: int):
    if any(keyword in ds for keyword in ("ModalityLUTSequence", "RescaleSlope", "RescaleIntercept")):
        return ds
    return _functional_group_item(ds, frame, "PixelValueTransformationSequence") or ds


def _apply_modality_lut(raw: np.ndarray, source) -> np.ndarray:
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.4
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return np.asarray(apply_modality_lut(raw, source), dtype=np.float64)


def _apply_color_lut(path: Path, raw: np.ndarray, ds) -> np.ndarray:
    """PALETTE COLOR indices -> float32 RGB on the 0..255 scale. LUT entries are 8 or 16 bits (the descriptor's
    third value); 16-bit entries span 0..65535 and are scaled down, unless the whole table stays within 0..255,
    which some writers store in 16-bit entries. Taking 16-bit colours as 8-bit ones would clip all but the
    darkest to white."""
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom 2.4
        from pydicom.pixel_data_handlers.util import apply_color_lut
    try:
        colours = np.asarray(apply_color_lut(raw, ds))[..., :3]  # an alpha LUT, if any, dropped
        if colours.dtype.itemsize > 1:
            descriptor = ds.RedPaletteColorLookupTableDescriptor
            first, count = int(descriptor[1]), int(descriptor[0]) or 2**16
            table = np.asarray(apply_color_lut(np.arange(first, first + count), ds))[..., :3]  # every entry
            if int(table.max(initial=0)) > 255:
                return colours.astype(np.float32) * np.float32(255.0 / 65535.0)
        return colours.astype(np.float32)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise CnnkitError(f"{path}: cannot apply the DICOM colour palette (PALETTE COLOR): {_one_line(exc)}",
                          "re-export the file as RGB") from None


def _monochrome1_mirror(ds, modality_source, pixels: np.ndarray) -> float:
    """low + high of the values the file can hold after the modality LUT (v -> mirror - v flips that range)."""
    bits_stored = ds.get("BitsStored")
    if not bits_stored or "PixelData" not in ds:  # float pixel data has no stored range: use the image's own
        return float(np.nanmin(pixels) + np.nanmax(pixels))
    bits_stored = int(bits_stored)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        raw_range = np.array([-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1], dtype=np.int64)
    else:
        raw_range = np.array([0, 2**bits_stored - 1], dtype=np.int64)
    mapped = _apply_modality_lut(raw_range, modality_source)
    return float(mapped.min() + mapped.max())


def _first_value(value) -> float | None:
    """Window values may be multi-valued (several presets); the first is the default."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _dicom_window(ds, frame: int) -> tuple[float, float] | None:
    source = ds if "WindowCenter" in ds else _functional_group_item(ds, frame, "FrameVOILUTSequence")
    if source is None:
        return None
    center, width = _first_value(source.get("WindowCenter")), _first_value(source.get("WindowWidth"))
    if center is None or width is None or not width > 0:
        return None
    return center - width / 2, center + width / 2


def _dicom_spacing(ds, frame: int) -> tuple[float, float] | None:
    """PixelSpacing is (row spacing, column spacing) in mm. ImagerPixelSpacing is left out on purpose:
    it is measured at the detector, magnified relative to the patient."""
    source = ds if "PixelSpacing" in ds else _functional_group_item(ds, frame, "PixelMeasuresSequence")
    spacing = source.get("PixelSpacing") if source is not None else None
    try:
        row, column = (float(v) for v in spacing)
    except (TypeError, ValueError):  # absent, single-valued or not numbers
        return None
    return (row, column) if row > 0 and column > 0 else None
