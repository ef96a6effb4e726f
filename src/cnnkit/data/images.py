"""Decode any image file into 8-bit RGB, the same way everywhere (train, val, predict, check): load_image for
files, load_image_in_frame for a picture an annotation describes. The header-level pieces (which files are images,
sizes, orientation, the pixel limit) live in data/decode.py and are re-exported here for the readers."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cnnkit.data.decode import (  # the readers' one import of the image helpers: re-exported (__all__)
    DEFAULT_MAX_PIXELS,
    DEEP_MODES,
    DICOM_SUFFIXES,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    MAX_PIXELS_HINT,
    ORIENTATION,
    dicom_without_suffix,
    displayed_size,
    image_errors,
    is_deep_colour_tiff,
    is_dicom_file,
    is_image_file,
    is_medical_file,
    max_pixels,
    needs_values,
    open_image,
    orientation,
    pixel_limit,
    read_picture,
    recorded_frame,
    size_mismatch,
    stem_of,
    stored_size,
    to_rgb,
    upright,
)
from cnnkit.data.intensity import read_rgb8
from cnnkit.errors import CnnkitError


def load_image(path: str | Path, intensity=None) -> Image.Image:
    """Read an image file as 8-bit RGB, upright (its EXIF orientation applied, as viewers show it); raise
    CnnkitError naming the file when it cannot be decoded or exceeds the pixel limit (see pixel_limit).

    8-bit pictures are taken as they are. 16-bit and float images, DICOM and NIfTI are read with their own values
    and normalised by ``intensity`` (an IntensitySpec; None: auto, see data/intensity.py), as is any picture
    when the spec asks for percentiles or a window."""
    path = Path(path)
    if is_medical_file(path):
        return _load_values(path, intensity)
    with image_errors(path), open_image(path) as image:
        if needs_values(image, intensity):
            return _load_values(path, intensity)
        turn = orientation(image)
        image.load()
        return to_rgb(upright(image, turn))


def load_image_in_frame(path: str | Path, width: int, height: int, intensity=None) -> Image.Image:
    """8-bit RGB in the frame of an annotation that records the image as ``width`` x ``height``: upright when
    that is the displayed size (what CVAT and Label Studio record); as stored when it is the stored size of a
    photo whose EXIF orientation turns it (a tool that ignored the orientation, so its boxes are on the
    unturned picture); upright too when it is the displayed size scaled by one factor (images resized after
    labelling; the caller scales the boxes). Any other size is a CnnkitError naming the file: scaling each
    axis on its own would put every box in the wrong place. Deep images and DICOM: as load_image (``intensity``)."""
    path = Path(path)
    if is_medical_file(path):  # no EXIF orientation: stored and displayed are one size
        picture = _load_values(path, intensity)
        if recorded_frame((width, height), picture.size, picture.size) == "mismatch":
            raise CnnkitError(size_mismatch(path, (width, height), picture.size, picture.size),
                              "fix the width and height recorded for it; `cnnkit data check` lists every such image")
        return picture
    with image_errors(path), open_image(path) as image:
        stored, displayed = stored_size(image), displayed_size(image)
        frame = recorded_frame((width, height), stored, displayed)
        if frame == "mismatch":
            raise CnnkitError(size_mismatch(path, (width, height), stored, displayed),
                              "fix the width and height recorded for it; `cnnkit data check` lists every such image")
        if needs_values(image, intensity):
            # read upright (data/medical.py applies the orientation); 16-bit photos turned by EXIF do not occur
            return _load_values(path, intensity)
        turn = orientation(image)
        image.load()
        return to_rgb(upright(image, 1 if frame == "stored" else turn))


def _load_values(path: Path, intensity) -> Image.Image:
    """Deep images, DICOM and NIfTI: their values normalised by ``intensity`` (data/intensity.py), as 8-bit RGB."""
    return read_rgb8(path, intensity)


__all__ = ["load_image", "load_image_in_frame", "DEFAULT_MAX_PIXELS", "DEEP_MODES", "DICOM_SUFFIXES", "IMAGE_EXTENSIONS", "MAX_PIXELS_ENV", "MAX_PIXELS_HINT", "ORIENTATION", "dicom_without_suffix", "displayed_size", "image_errors", "is_deep_colour_tiff", "is_dicom_file", "is_image_file", "is_medical_file", "max_pixels", "needs_values", "open_image", "orientation", "pixel_limit", "read_picture", "recorded_frame", "size_mismatch", "stem_of", "stored_size", "to_rgb", "upright"]
