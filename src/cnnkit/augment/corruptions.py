"""Image corruptions for robustness tests: occlusion, illumination, noise and blur, each at severity 1..5.

    from cnnkit.augment.corruptions import CORRUPTIONS, corrupt
    image = torchvision.transforms.v2.functional.pil_to_tensor(load_image("a.png"))   # uint8 [3, H, W]
    dark = corrupt(image, "dark", severity=3, generator=0)                             # uint8 [3, H, W]
    hidden = corrupt(image, "occlusion_solid", 5, generator=0, boxes=[[10, 10, 60, 40]])  # occluders on the object

Every corruption is a plain function ``fn(image, severity, generator) -> image`` on a uint8 tensor
[3, H, W] (occlusion also takes ``boxes``, xyxy pixels), deterministic given the generator. The
same generator seed at a higher severity gives the same corruption, only stronger (the same
occluders plus more, the same noise scaled up, the same shadow darker), so metric-versus-severity
curves measure the severity, not the luck of the draw.

Severities follow ImageNet-C (Hendrycks & Dietterich, ICLR 2019) where it defines them (noise,
blur, contrast); blur sizes are ImageNet-C's for 224 px scaled by sqrt(side / 224), which lands close
to CIFAR-10-C's own values at 32 px. Occlusion covers 10, 20, 30, 40, 50% of the image (or of each
box); the illumination levels are ours.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as F

from cnnkit.errors import CnnkitError

SEVERITIES = (1, 2, 3, 4, 5)

OCCLUDED_FRACTION = (0.1, 0.2, 0.3, 0.4, 0.5)
DARK_GAIN = (0.7, 0.55, 0.4, 0.3, 0.2)
BRIGHT_GAIN = (1.4, 1.8, 2.2, 2.6, 3.0)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)  # ImageNet-C
GAMMA = (1.5, 2.0, 2.5, 3.0, 3.5)  # > 1 sinks the mid-tones, as an under-exposed camera curve
SHADOW_DEPTH = (0.3, 0.45, 0.6, 0.75, 0.9)  # fraction of light taken away at the shadow's darkest
TEMPERATURE_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)  # relative gain of R against B (warm) or B against R (cool)
NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # ImageNet-C, on [0, 1] intensities
SHOT_PHOTONS = (60, 25, 12, 5, 3)  # ImageNet-C: Poisson counts per unit intensity
BLUR_SIGMA_224 = (1.0, 2.0, 3.0, 4.0, 6.0)  # ImageNet-C, pixels at 224 px
MOTION_LENGTH_224 = (10.0, 15.0, 20.0, 25.0, 30.0)  # pixels at 224 px

# occluders are rectangles of 5..15% of the region each, added until the target fraction is covered
PIECE_AREA = (0.05, 0.15)
MAX_PIECES = 1000
PALETTE = 64  # colours / texture kinds drawn up front, so more occluders never reshuffle the first ones
TEXTURES = ("noise", "stripes", "checkerboard", "elsewhere")

Boxes = torch.Tensor | Sequence[Sequence[float]] | None


# ------------------------------------------------------------------ helpers
def level(values: Sequence[float], severity: int) -> float:
    """The value of a corruption's parameter at ``severity`` (1..5); CnnkitError for any other severity."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= len(values):
        raise CnnkitError(f"severity must be 1 to {len(values)}, got {severity}")
    return values[severity - 1]


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU generator: the one given, or a new one seeded with ``seed`` (None: 0)."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed or 0))


def _child(generator: torch.Generator) -> torch.Generator:
    """An independent generator seeded from ``generator``: what one part draws cannot shift another's draws."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        shown = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise CnnkitError(f"corruptions take a uint8 tensor [3, H, W], got {shown}",
                          "torchvision.transforms.v2.functional.pil_to_tensor(rgb_image) makes one")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _blur_scale(image: torch.Tensor) -> float:
    return math.sqrt(min(image.shape[-2:]) / 224)


# ------------------------------------------------------------------ occlusion
def _regions(height: int, width: int, boxes: Boxes) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) integer regions to occlude: the whole image, or each box clipped to it
    (boxes of no area inside the image are dropped)."""
    if boxes is None:
        return [(0, 0, width, height)]
    regions = []
    for x0, y0, x1, y1 in torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).tolist():
        x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        x1, y1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if x1 > x0 and y1 > y0:
            regions.append((x0, y0, x1, y1))
    return regions


def _cover(owner: torch.Tensor, region: tuple[int, int, int, int], fraction: float, generator: torch.Generator,
           first_id: int) -> int:
    """Add rectangles inside ``region`` to ``owner`` (0: visible, k: hidden by occluder k) until
    ``fraction`` of the region is hidden; returns the next free occluder id.

    1) a rectangle of 5..15% of the region, aspect 1:2..2:1, placed uniformly inside the region;
    2) it claims only pixels no earlier occluder holds; the last one claims whole rows until the
       target is met, so the hidden area is the target to within one rectangle row;
    3) every draw is the same whatever the target, so a larger fraction hides a superset.
    """
    x0, y0, x1, y1 = region
    area = (x1 - x0) * (y1 - y0)
    target = round(fraction * area)
    view = owner[y0:y1, x0:x1]
    hidden, k = 0, first_id
    while hidden < target and k - first_id < MAX_PIECES:
        u = torch.rand(4, generator=generator).tolist()
        piece = area * (PIECE_AREA[0] + u[0] * (PIECE_AREA[1] - PIECE_AREA[0]))
        aspect = 2.0 ** (2 * u[1] - 1)
        w = min(x1 - x0, max(1, round(math.sqrt(piece * aspect))))
        h = min(y1 - y0, max(1, round(piece / w)))
        left = min(x1 - x0 - w, int(u[2] * (x1 - x0 - w + 1)))
        top = min(y1 - y0 - h, int(u[3] * (y1 - y0 - h + 1)))
        patch = view[top:top + h, left:left + w]
        free = patch == 0
        rows = free.sum(dim=1).cumsum(0)
        keep = int((rows < target - hidden).sum()) + 1  # rows until the target is reached
        free[keep:] = False
        patch[free] = k
        hidden += int(free.sum())
        k += 1
    return k


def place_occluders(height: int, width: int, fraction: float, generator: torch.Generator | int | None = None,
                    boxes: Boxes = None) -> torch.Tensor:
    """Occluder ids int64 [H, W]: 0 where the image stays visible, k >= 1 under occluder k.

    Without ``boxes`` the occluders hide ``fraction`` of the whole image; with boxes (xyxy pixels,
    [N, 4]) they hide ``fraction`` of every box and nothing outside the boxes, so a detector or
    segmenter is tested on partly hidden objects rather than on hidden background. No boxes: nothing hidden.
    """
    generator = make_generator(generator)
    owner = torch.zeros(height, width, dtype=torch.int64)
    regions = _regions(height, width, boxes)
    # one generator per region, drawn up front: a box needing more occluders leaves the next box's draws alone
    streams = [_child(generator) for _ in regions]
    next_id = 1
    for region, stream in zip(regions, streams):
        next_id = _cover(owner, region, fraction, stream, next_id)
    return owner


def occlusion_solid(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None,
                    boxes: Boxes = None) -> torch.Tensor:
    """Rectangles of solid random colours hiding 10..50% of the image (or of each box, xyxy pixels)."""
    fraction = level(OCCLUDED_FRACTION, severity)
    _check_image(image)
    generator = make_generator(generator)
    colours = torch.randint(0, 256, (PALETTE, 3), generator=generator, dtype=torch.uint8)
    owner = place_occluders(image.shape[1], image.shape[2], fraction, _child(generator), boxes)
    hidden = owner > 0
    out = image.clone()
    out[:, hidden] = colours[(owner[hidden] - 1) % PALETTE].T
    return out


def _texture(image: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A uint8 [3, H, W] canvas of one texture: noise, stripes, a checkerboard in two random
    colours, or the image itself moved by half its size (a patch from elsewhere in the picture)."""
    _, h, w = image.shape
    if kind == "noise":
        return torch.randint(0, 256, image.shape, generator=generator, dtype=torch.uint8)
    if kind == "elsewhere":
        return image.roll((h // 2, w // 2), dims=(1, 2))
    a, b = torch.randint(0, 256, (2, 3, 1, 1), generator=generator, dtype=torch.uint8)
    period = max(2, round(min(h, w) / 8))
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if kind == "stripes":
        phase = (xs + ys) // period
    else:
        phase = xs // period + ys // period
    return torch.where((phase % 2 == 0)[None], a, b)


def occlusion_texture(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None,
                      boxes: Boxes = None) -> torch.Tensor:
    """Rectangles filled with a texture (noise, stripes, checkerboard, or another part of the image)
    hiding 10..50% of the image (or of each box, xyxy pixels): occluders with edges and detail, which
    a solid patch lacks."""
    fraction = level(OCCLUDED_FRACTION, severity)
    _check_image(image)
    generator = make_generator(generator)
    kinds = torch.randint(0, len(TEXTURES), (PALETTE,), generator=generator)
    canvases = torch.stack([_texture(image, kind, generator) for kind in TEXTURES])  # [K, 3, H, W]
    owner = place_occluders(image.shape[1], image.shape[2], fraction, _child(generator), boxes)
    out = image.clone()
    ys, xs = (owner > 0).nonzero(as_tuple=True)
    out[:, ys, xs] = canvases[kinds[(owner[ys, xs] - 1) % PALETTE], :, ys, xs].T  # [n, 3] -> [3, n]
    return out


# ------------------------------------------------------------------ illumination
def dark(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Under-exposure: intensities times 0.7 .. 0.2."""
    _check_image(image)
    return F.adjust_brightness(image, level(DARK_GAIN, severity))


def bright(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Over-exposure: intensities times 1.4 .. 3.0, clipped at white."""
    _check_image(image)
    return F.adjust_brightness(image, level(BRIGHT_GAIN, severity))


def contrast(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Lower contrast: blended towards the image's mean grey, keeping 40% .. 5% of the contrast (ImageNet-C)."""
    _check_image(image)
    return F.adjust_contrast(image, level(CONTRAST_FACTOR, severity))


def gamma(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """A gamma curve of 1.5 .. 3.5: mid-tones sink while black and white stay."""
    _check_image(image)
    return F.adjust_gamma(image, level(GAMMA, severity))


def shadow(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """A cast shadow: a random straight edge crosses the image and light fades, over a soft band, to
    70% .. 10% on one side of it."""
    depth = level(SHADOW_DEPTH, severity)
    _check_image(image)
    generator = make_generator(generator)
    angle, offset, softness = torch.rand(3, generator=generator).tolist()
    _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    theta = 2 * math.pi * angle
    # signed distance to the edge, in half-image units; the edge passes within the middle half
    distance = xs * math.cos(theta) + ys * math.sin(theta) - (offset - 0.5)
    band = 0.1 + 0.5 * softness
    shade = ((distance + band / 2) / band).clamp(0, 1)  # 0 in full light, 1 in full shadow
    return _to_uint8(image.float() / 255 * (1 - depth * shade))


def color_temperature(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """A white-balance error: warm (red up, blue down) or cool (the reverse), by 10% .. 50%."""
    shift = level(TEMPERATURE_SHIFT, severity)
    _check_image(image)
    warm = bool(torch.rand(1, generator=make_generator(generator)) < 0.5)
    gains = torch.tensor([1 + shift, 1.0, 1 - shift] if warm else [1 - shift, 1.0, 1 + shift]).view(3, 1, 1)
    return _to_uint8(image.float() / 255 * gains)


# ------------------------------------------------------------------ noise
def gaussian_noise(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Additive Gaussian noise of sigma 0.08 .. 0.38 on [0, 1] intensities (ImageNet-C)."""
    sigma = level(NOISE_SIGMA, severity)
    _check_image(image)
    noise = torch.randn(image.shape, generator=make_generator(generator))
    return _to_uint8(image.float() / 255 + sigma * noise)


def shot_noise(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Photon (Poisson) noise: 60 .. 3 photons per unit intensity (ImageNet-C); dark areas suffer least."""
    photons = level(SHOT_PHOTONS, severity)
    _check_image(image)
    counts = torch.poisson(image.float() / 255 * photons, generator=make_generator(generator))
    return _to_uint8(counts / photons)


# ------------------------------------------------------------------ blur
def gaussian_blur(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Defocus-like Gaussian blur: sigma 1 .. 6 px at 224 px (ImageNet-C), scaled by sqrt(side / 224)."""
    sigma = level(BLUR_SIGMA_224, severity) * _blur_scale(image)
    _check_image(image)
    # 3 sigma each side, but reflect padding must stay inside the image
    radius = min(math.ceil(3 * sigma), min(image.shape[1:]) - 1)
    return F.gaussian_blur(image, [2 * radius + 1] * 2, [sigma, sigma])


def motion_blur(image: torch.Tensor, severity: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Camera shake: a straight streak of 10 .. 30 px at 224 px (scaled by sqrt(side / 224)) in a random direction."""
    length = level(MOTION_LENGTH_224, severity) * _blur_scale(image)
    _check_image(image)
    theta = float(torch.rand(1, generator=make_generator(generator))) * math.pi
    radius = min(math.ceil(length / 2), min(image.shape[1:]) - 1)
    # the streak as a line of sample points, splatted bilinearly onto the kernel grid
    steps = torch.linspace(-length / 2, length / 2, max(2, 4 * math.ceil(length)))
    xs, ys = radius + steps * math.cos(theta), radius + steps * math.sin(theta)
    size = 2 * radius + 1
    kernel = torch.zeros(size, size)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        cx, cy = xs.floor() + dx, ys.floor() + dy
        weight = (1 - (xs - cx).abs()) * (1 - (ys - cy).abs())
        inside = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
        kernel.index_put_((cy[inside].long(), cx[inside].long()), weight[inside], accumulate=True)
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)
    padded = nnf.pad(image.float()[None], [radius] * 4, mode="reflect")
    return nnf.conv2d(padded, kernel, groups=3)[0].round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------ the table
Corruption = Callable[..., torch.Tensor]

CORRUPTIONS: dict[str, dict[str, Corruption]] = {
    "occlusion": {"occlusion_solid": occlusion_solid, "occlusion_texture": occlusion_texture},
    "illumination": {"dark": dark, "bright": bright, "contrast": contrast, "gamma": gamma, "shadow": shadow,
                     "color_temperature": color_temperature},
    "noise": {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise},
    "blur": {"gaussian_blur": gaussian_blur, "motion_blur": motion_blur},
}
FAMILY_OF = {name: family for family, table in CORRUPTIONS.items() for name in table}


def _unknown(kind: str, name: str, known: Sequence[str]) -> CnnkitError:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return CnnkitError(f"unknown {kind} '{name}'", f"{hint}choose from {', '.join(known)}")


def corrupt(image: torch.Tensor, name: str, severity: int, generator: torch.Generator | int | None = None,
            boxes: Boxes = None) -> torch.Tensor:
    """uint8 [3, H, W] -> the same image under corruption ``name`` at ``severity`` 1..5.
    ``boxes`` (xyxy pixels, [N, 4]) place occluders on objects; other corruptions ignore them."""
    if name not in FAMILY_OF:
        raise _unknown("corruption", name, list(FAMILY_OF))
    fn = CORRUPTIONS[FAMILY_OF[name]][name]
    if FAMILY_OF[name] == "occlusion":
        return fn(image, severity, generator, boxes=boxes)
    return fn(image, severity, generator)


def select_corruptions(families: Sequence[str] | None = None, names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """{family: [corruption, …]} limited to ``families`` and to corruption ``names`` (None: all);
    CnnkitError with a suggestion for an unknown name, or when nothing is left."""
    for family in families or []:
        if family not in CORRUPTIONS:
            raise _unknown("corruption family", family, list(CORRUPTIONS))
    for name in names or []:
        if name not in FAMILY_OF:
            raise _unknown("corruption", name, list(FAMILY_OF))
    chosen = {family: [n for n in table if not names or n in names]
              for family, table in CORRUPTIONS.items() if not families or family in families}
    chosen = {family: table for family, table in chosen.items() if table}
    if not chosen:
        raise CnnkitError(f"no corruption is in both the families ({', '.join(families or [])}) and the corruptions "
                          f"({', '.join(names or [])})", "drop one of the two filters")
    return chosen
