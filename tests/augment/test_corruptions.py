"""The corruptions of augment/corruptions.py: each changes the image, more at each severity; occluders
hide the stated share of the image (or of each box, and nothing outside the boxes); same seed, same
image; bad severities and names are one-line CnnkitErrors. Pure tensor code: the file runs in about a second."""

from __future__ import annotations

import pytest
import torch

from cnnkit.augment.corruptions import (
    CORRUPTIONS,
    FAMILY_OF,
    OCCLUDED_FRACTION,
    SEVERITIES,
    corrupt,
    occlusion_solid,
    place_occluders,
    select_corruptions,
)
from cnnkit.errors import CnnkitError

NAMES = list(FAMILY_OF)
RANDOM = ["occlusion_solid", "occlusion_texture", "shadow", "gaussian_noise", "shot_noise", "motion_blur"]


def picture(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A uint8 [3, H, W] test picture with what every corruption acts on: mid-tones (gamma),
    edges (blur), colour (white balance) and fine detail (noise)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    base = torch.stack([xs * 200 // width + 30, ys * 200 // height + 30, (xs + ys) * 100 // (height + width) + 80])
    blocks = ((xs // 8 + ys // 8) % 2 * 40)[None]
    return (base + blocks + torch.randint(0, 20, (3, height, width), generator=g)).clamp(0, 255).to(torch.uint8)


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[H, W] bool: pixels where any channel differs."""
    return (a != b).any(dim=0)


@pytest.mark.parametrize("name", NAMES)
def test_every_corruption_changes_the_image_more_at_each_severity(name):
    image = picture()
    before = image.clone()
    diffs = []
    for severity in SEVERITIES:
        out = corrupt(image, name, severity, generator=3)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        diffs.append(mean_abs_diff(out, image))
    assert torch.equal(image, before), "the input must not be modified"
    assert diffs[0] > 0.5, diffs
    assert all(b >= a for a, b in zip(diffs, diffs[1:])), diffs
    assert diffs[-1] > 1.5 * diffs[0], diffs


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_image_and_odd_sizes(name):
    image = picture(40, 56)
    a = corrupt(image, name, 3, generator=7)
    b = corrupt(image, name, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    if name in RANDOM:
        assert not torch.equal(a, corrupt(image, name, 3, generator=8))
    for height, width in ((1, 1), (3, 5), (8, 8)):  # digits are 8 x 8; nothing may fail on tiny images
        assert corrupt(picture(height, width), name, 5, generator=0).shape == (3, height, width)


@pytest.mark.parametrize("height, width", [(64, 64), (48, 80)])
def test_occluders_hide_ten_to_fifty_percent_and_grow_by_adding(height, width):
    previous = None
    for severity, fraction in zip(SEVERITIES, OCCLUDED_FRACTION):
        hidden = place_occluders(height, width, fraction, generator=5) > 0
        assert abs(hidden.float().mean().item() - fraction) < 0.01, (severity, hidden.float().mean())
        if previous is not None:  # the same seed at a higher severity hides a superset
            assert torch.equal(hidden & previous, previous)
        previous = hidden
    # painted: on a flat grey image every solid occluder shows (a random colour is hardly ever exactly that
    # grey); a texture may not (a patch from elsewhere in a flat image is the same grey), but it never hides more
    flat = torch.full((3, height, width), 128, dtype=torch.uint8)
    for severity, fraction in zip(SEVERITIES, OCCLUDED_FRACTION):
        share = changed(corrupt(flat, "occlusion_solid", severity, generator=11), flat).float().mean().item()
        assert abs(share - fraction) < 0.02, (severity, share)
        share = changed(corrupt(flat, "occlusion_texture", severity, generator=11), flat).float().mean().item()
        assert 0 < share < fraction + 0.01, (severity, share)


def test_occluders_land_inside_the_boxes_and_cover_each_one():
    image = picture(64, 96)
    boxes = torch.tensor([[10.4, 5.0, 40.0, 45.6], [60.0, 30.0, 120.0, 70.0], [0.0, 0.0, 0.0, 10.0]])  # 2nd leaves the image, 3rd is empty
    inside = torch.zeros(64, 96, dtype=torch.bool)
    inside[5:46, 10:40] = True
    inside[30:64, 60:96] = True
    for name in CORRUPTIONS["occlusion"]:
        for severity, fraction in zip(SEVERITIES, OCCLUDED_FRACTION):
            hit = changed(corrupt(image, name, severity, generator=2, boxes=boxes), image)
            assert not (hit & ~inside).any(), f"{name} s{severity}: occluder outside the boxes"
            for region in (hit[5:46, 10:40], hit[30:64, 60:96]):
                assert abs(region.float().mean().item() - fraction) < 0.05, (name, severity, region.float().mean())
    # a list of boxes works like a tensor, and an image without objects is left alone
    assert torch.equal(occlusion_solid(image, 3, 2, boxes=boxes.tolist()), occlusion_solid(image, 3, 2, boxes=boxes))
    assert torch.equal(occlusion_solid(image, 3, 2, boxes=torch.zeros(0, 4)), image)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True])
def test_bad_severity_is_a_cnnkit_error(severity):
    for name in NAMES:
        with pytest.raises(CnnkitError, match=f"severity must be 1 to 5, got {severity}"):
            corrupt(picture(8, 8), name, severity)


def test_bad_names_and_images_are_cnnkit_errors():
    with pytest.raises(CnnkitError, match="unknown corruption 'gausian_blur'") as error:
        corrupt(picture(8, 8), "gausian_blur", 1)
    assert "gaussian_blur" in error.value.hint
    with pytest.raises(CnnkitError, match=r"uint8 tensor \[3, H, W\]"):
        corrupt(picture(8, 8).float(), "dark", 1)
    with pytest.raises(CnnkitError, match=r"uint8 tensor \[3, H, W\]"):
        corrupt(picture(8, 8).permute(1, 2, 0), "dark", 1)


def test_select_corruptions():
    assert select_corruptions() == {family: list(table) for family, table in CORRUPTIONS.items()}
    assert select_corruptions(["occlusion", "illumination"]).keys() == {"occlusion", "illumination"}
    assert select_corruptions(None, ["dark", "motion_blur"]) == {"illumination": ["dark"], "blur": ["motion_blur"]}
    with pytest.raises(CnnkitError, match="unknown corruption family 'ilumination'") as error:
        select_corruptions(["ilumination"])
    assert "illumination" in error.value.hint
    with pytest.raises(CnnkitError, match="no corruption is in both"):
        select_corruptions(["noise"], ["dark"])
