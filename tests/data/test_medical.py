"""Full-range reading for segmentation: 16-bit/float images, DICOM (modality LUT, window, MONOCHROME1), NIfTI slices."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from cnnkit.config import parse_window
from cnnkit.data.medical import (
    MEDICAL_EXTENSIONS,
    Intensity,
    count_slices,
    is_volume,
    normalise,
    read_intensity,
    to_rgb_float,
)
from cnnkit.errors import CnnkitError

SLOPE, INTERCEPT = 2.0, -1024.0
CENTER, WIDTH = 40.0, 400.0  # a soft-tissue window: -160..240 HU


def _raw_12bit(shape=(6, 7), seed=0) -> np.ndarray:
    """12-bit values in a 16-bit container, including both ends of the stored range."""
    raw = np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)
    raw.flat[0], raw.flat[1] = 0, 4095
    return raw


def _write_dicom(path, raw=None, *, photometric="MONOCHROME2", pixels=True, frames=1, transfer_syntax=None):
    """A small CT-like DICOM written by pydicom in the DICOM file format (preamble + DICM + file meta)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    raw = _raw_12bit() if raw is None else raw
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = raw.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    ds.WindowCenter, ds.WindowWidth = [CENTER, 400.0 + CENTER], [WIDTH, 2000.0]  # multi-valued: first is default
    ds.PixelSpacing = [0.5, 0.75]
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels and transfer_syntax is None:
        ds.PixelData = raw.astype("<u2").tobytes()
    elif pixels:  # compressed: the bytes are never decoded in these tests, only the plugin lookup runs
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8not really compressed\xff\xd9"])
        ds["PixelData"].VR = "OB"
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.save_as(path, write_like_original=False)  # pydicom 2.4
    return raw


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


# --- PNG / TIFF -----------------------------------------------------------------------------------------------


def test_16bit_png_keeps_exact_values_and_percentile_spans_zero_to_one(tmp_path):
    values = np.linspace(100, 4000, 48).astype(np.uint16).reshape(6, 8)
    path = _png(tmp_path / "cells.png", values)
    assert Image.open(path).mode.startswith("I;16")  # really a 16-bit file, not an 8-bit one

    image = read_intensity(path)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (6, 8)
    np.testing.assert_array_equal(image.pixels, values)  # no clipping at 255, no rescale
    assert image.bits == 16 and image.window is None and image.spacing is None
    assert count_slices(path) == 1

    stretched = normalise(image, "percentile")
    assert stretched.dtype == np.float32 and stretched.shape == (6, 8)
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    assert np.all(np.diff(stretched.ravel()) >= 0)  # monotone: order of intensities kept
    np.testing.assert_array_equal(normalise(image), stretched)  # auto on 16-bit = percentile

    dark = normalise(image, "range")  # what dividing by 65535 does to 12-bit data
    assert dark.max() == pytest.approx(4000 / 65535) and dark.max() < 0.07


def test_8bit_grey_and_rgb_png(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    image = read_intensity(_png(tmp_path / "grey.png", grey))
    assert image.pixels.shape == (6, 8) and image.bits == 8
    np.testing.assert_array_equal(image.pixels, grey)
    np.testing.assert_allclose(normalise(image), grey / 255.0, rtol=1e-6)  # auto on 8-bit = /255

    rgb = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = read_intensity(_png(tmp_path / "rgb.png", rgb))
    assert image.pixels.shape == (6, 8, 3) and image.pixels.dtype == np.float32 and image.bits == 8
    np.testing.assert_array_equal(image.pixels, rgb)


def test_rgba_png_is_composited_on_black(tmp_path):
    rgba = np.full((4, 4, 4), 200, dtype=np.uint8)
    rgba[:, :, 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent pixel
    rgba[2, 2, 3] = 128  # half transparent: half the colour
    image = read_intensity(_png(tmp_path / "rgba.png", rgba, "RGBA"))
    assert image.pixels.shape == (4, 4, 3)
    np.testing.assert_array_equal(image.pixels[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(image.pixels[1, 1], [200, 200, 200])
    np.testing.assert_allclose(image.pixels[2, 2], [100, 100, 100], atol=1)


def test_float_tiff_keeps_values_and_range_is_min_max(tmp_path):
    values = np.linspace(-3.25, 7.5, 30, dtype=np.float32).reshape(5, 6)
    path = tmp_path / "phase.tif"
    Image.fromarray(values, "F").save(path)

    image = read_intensity(path)
    assert image.bits == 32 and image.pixels.dtype == np.float32
    np.testing.assert_array_equal(image.pixels, values)
    scaled = normalise(image, "range")
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    np.testing.assert_allclose(scaled, (values + 3.25) / 10.75, atol=1e-6)


# --- DICOM -----------------------------------------------------------------------------------------------------


def test_dicom_applies_rescale_and_reads_window_and_spacing(tmp_path):
    path = tmp_path / "ct.dcm"
    raw = _write_dicom(path)

    image = read_intensity(path)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == raw.shape
    np.testing.assert_array_equal(image.pixels, SLOPE * raw.astype(np.float64) + INTERCEPT)  # Hounsfield units
    assert image.bits == 12
    assert image.window == (CENTER - WIDTH / 2, CENTER + WIDTH / 2) == (-160.0, 240.0)
    assert image.spacing == (0.5, 0.75)
    assert count_slices(path) == 1

    expected = np.clip((image.pixels + 160.0) / 400.0, 0, 1)
    np.testing.assert_allclose(normalise(image), expected, atol=1e-6)  # auto uses the file's window
    np.testing.assert_allclose(normalise(image, "window"), expected, atol=1e-6)
    bone = normalise(image, "auto", window=(-1000.0, 2000.0))  # an explicit window wins
    np.testing.assert_allclose(bone, np.clip((image.pixels + 1000.0) / 3000.0, 0, 1), atol=1e-6)


def test_dicom_without_suffix_is_found_by_its_preamble(tmp_path):
    path = tmp_path / "IM0001"
    raw = _write_dicom(path)
    np.testing.assert_array_equal(read_intensity(path).pixels, SLOPE * raw + INTERCEPT)


def test_monochrome1_is_inverted_so_bright_means_high(tmp_path):
    raw = _write_dicom(tmp_path / "m2.dcm")
    _write_dicom(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1")
    normal, inverted = read_intensity(tmp_path / "m2.dcm"), read_intensity(tmp_path / "m1.dcm")

    # mirrored within the stored range after rescale: lowest + highest = -1024 + (2 * 4095 - 1024) = 6142
    np.testing.assert_array_equal(inverted.pixels, 6142.0 - normal.pixels)
    assert inverted.pixels.flat[0] == inverted.pixels.max()  # raw 0 is white in MONOCHROME1
    assert inverted.window == (6142.0 - 240.0, 6142.0 + 160.0)  # same tissue, mirrored
    np.testing.assert_allclose(normalise(inverted), 1.0 - normalise(normal), atol=1e-6)


def test_dicom_without_pixel_data_is_a_one_line_error(tmp_path):
    path = tmp_path / "report.dcm"
    _write_dicom(path, pixels=False)
    with pytest.raises(CnnkitError) as info:
        read_intensity(path)
    assert info.value.message == f"{path}: DICOM file has no pixel data"
    assert "\n" not in str(info.value) and info.value.hint


def test_multi_frame_dicom_needs_a_frame(tmp_path):
    frames = np.stack([_raw_12bit(seed=s) for s in range(3)])
    path = tmp_path / "cine.dcm"
    _write_dicom(path, frames, frames=3)

    assert count_slices(path) == 3
    np.testing.assert_array_equal(read_intensity(path, 1).pixels, SLOPE * frames[1] + INTERCEPT)
    np.testing.assert_array_equal(read_intensity(path, 2).pixels, SLOPE * frames[2] + INTERCEPT)
    with pytest.raises(CnnkitError, match="3 slices; pick one"):
        read_intensity(path)
    with pytest.raises(CnnkitError, match="slice 3 is out of range"):
        read_intensity(path, 3)


# --- NIfTI -----------------------------------------------------------------------------------------------------


def test_nifti_volume_slices_along_last_axis(tmp_path):
    import nibabel

    volume = np.random.default_rng(2).integers(-1000, 2000, (5, 7, 4)).astype(np.int16)
    path = tmp_path / "liver.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([0.8, 0.6, 2.5, 1.0])), path)

    assert is_volume(path) and not is_volume(tmp_path / "x.png")
    assert count_slices(path) == 4
    for k in (0, 3):
        image = read_intensity(path, k)
        assert image.pixels.shape == (5, 7) and image.pixels.dtype == np.float32
        np.testing.assert_array_equal(image.pixels, volume[:, :, k])
    image = read_intensity(path, 1)
    assert image.bits == 16 and image.window is None
    assert image.spacing == pytest.approx((0.8, 0.6))

    with pytest.raises(CnnkitError, match="4 slices; pick one"):
        read_intensity(path)
    with pytest.raises(CnnkitError, match="out of range"):
        read_intensity(path, 4)


def test_nifti_4d_uses_first_volume_and_2d_needs_no_slice(tmp_path):
    import nibabel

    series = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2)
    nibabel.save(nibabel.Nifti1Image(series, np.eye(4)), tmp_path / "fmri.nii")
    assert count_slices(tmp_path / "fmri.nii") == 5
    np.testing.assert_array_equal(read_intensity(tmp_path / "fmri.nii", 2).pixels, series[:, :, 2, 0])

    flat = np.arange(12, dtype=np.uint8).reshape(3, 4)
    nibabel.save(nibabel.Nifti1Image(flat, np.eye(4)), tmp_path / "flat.nii.gz")
    assert count_slices(tmp_path / "flat.nii.gz") == 1
    image = read_intensity(tmp_path / "flat.nii.gz")
    np.testing.assert_array_equal(image.pixels, flat)
    assert image.bits == 8


# --- normalise, to_rgb_float, parse_window, errors --------------------------------------------------------------


def test_normalise_plain_arrays_constant_images_and_bad_modes():
    np.testing.assert_allclose(normalise(np.array([[0, 51, 255]], dtype=np.uint8)), [[0, 0.2, 1]], rtol=1e-6)
    wide = np.array([[100, 200, 4000]], dtype=np.uint16)
    assert normalise(wide).max() == 1.0  # auto on 16-bit stretches by percentiles
    assert normalise(wide, "range").max() < 0.07

    constant = Intensity(np.full((3, 3), 7.0, dtype=np.float32), bits=32)
    for mode in ("percentile", "range", "auto"):
        np.testing.assert_array_equal(normalise(constant, mode), np.zeros((3, 3)))

    with_nan = np.array([[0.0, np.nan, 2.0, np.inf]], dtype=np.float32)
    np.testing.assert_array_equal(normalise(with_nan, "range"), [[0.0, 0.0, 1.0, 0.0]])

    with pytest.raises(CnnkitError, match="needs a window"):
        normalise(constant, "window")
    with pytest.raises(CnnkitError, match="unknown normalisation"):
        normalise(constant, "zscore")


def test_to_rgb_float_replicates_grey():
    grey = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rgb = to_rgb_float(grey)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.float32
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)
    assert to_rgb_float(rgb).shape == (3, 4, 3)
    with pytest.raises(ValueError):
        to_rgb_float(np.zeros((3, 4, 2)))


def test_parse_window():
    assert parse_window("-160,240") == (-160.0, 240.0)
    assert parse_window(" 0.5 , 99 ") == (0.5, 99.0)
    for bad in ("240,-160", "5,5", "1,2,3", "abc", "", "-160", "nan,1"):
        with pytest.raises(CnnkitError, match="--window"):
            parse_window(bad)


def test_missing_and_broken_files_name_the_file(tmp_path):
    assert MEDICAL_EXTENSIONS == (".dcm", ".dicom", ".nii", ".nii.gz")
    for name in ("gone.png", "gone.dcm", "gone.nii.gz"):
        with pytest.raises(CnnkitError, match="no such file") as info:
            read_intensity(tmp_path / name)
        assert str(tmp_path / name) in info.value.message
        with pytest.raises(CnnkitError, match="no such file"):
            count_slices(tmp_path / name)

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip at all")
    for name in ("broken.png", "broken.nii.gz"):
        with pytest.raises(CnnkitError, match="cannot read") as info:
            read_intensity(tmp_path / name)
        assert str(tmp_path / name) in info.value.message and "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="out of range"):
        read_intensity(_png(tmp_path / "one.png", np.zeros((2, 2), np.uint8)), 1)
