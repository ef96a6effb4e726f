"""Text-line data for recognition: labels.tsv files, the charset, line images at a fixed height, batches padded
to their widest line.

    ROOT/train/labels.tsv     images/000001.png<TAB>Total: $12.50      (paths relative to the file's folder)
    ROOT/val/labels.tsv       the same; without it --val-split of train is held out

Every problem is a one-line CnnkitError naming the file and line: a line without a tab, an empty text, an
image that is missing or smaller than 2 x 2 pixels (read from its header only), a character outside
--charset (saying which).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cnnkit.data.textlines import fit_height, pad_lines, to_tensor
from cnnkit.errors import CnnkitError

LABELS = "labels.tsv"


@dataclass(frozen=True)
class Line:
    path: Path
    text: str
    where: str  # "labels.tsv:LINE", for messages


@dataclass
class LineData:
    root: Path
    classes: list[str]  # the charset; class k + 1 of the model is classes[k] (0 is CTC's blank)
    splits: dict[str, list[Line]]


def read_labels(path: Path) -> list[Line]:
    """The lines of one labels.tsv (see the module docstring), each image checked to exist and be at least 2 x 2."""
    if not path.is_file():
        raise CnnkitError(f"{path}: no such labels file", "each split folder needs labels.tsv: PATH<TAB>TEXT per line")
    lines = []
    for number, row in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not row.strip():
            continue
        where = f"{path}:{number}"
        if "\t" not in row:
            raise CnnkitError(f"{where}: no tab between the image path and the text", "write PATH<TAB>TEXT")
        name, text = row.split("\t", 1)
        if not text:
            raise CnnkitError(f"{where}: empty text for {name}", "give every line its text, or leave the line out")
        image = path.parent / name
        try:
            with Image.open(image) as im:
                width, height = im.size
        except FileNotFoundError:
            raise CnnkitError(f"{where}: image {name} does not exist", f"paths are relative to {path.parent}") from None
        except (OSError, Image.DecompressionBombError) as exc:  # a bomb is refused by its header, never decoded
            raise CnnkitError(f"{where}: image {name} cannot be read ({exc})") from None
        if width < 2 or height < 2:
            raise CnnkitError(f"{where}: image {name} is {width} x {height} pixels", "a text line needs at least 2 x 2 pixels")
        lines.append(Line(image, text, where))
    if not lines:
        raise CnnkitError(f"{path}: no lines", "write PATH<TAB>TEXT per line")
    return lines


def read_charset(path: str | Path) -> list[str]:
    """A charset file: its characters in order (one line, or one per line; line breaks do not count; a space counts)."""
    file = Path(path)
    if not file.is_file():
        raise CnnkitError(f"--charset {path}: no such file")
    chars = [c for c in file.read_text(encoding="utf-8") if c not in "\r\n"]
    unique = list(dict.fromkeys(chars))
    if not unique:
        raise CnnkitError(f"--charset {path}: the file is empty")
    return unique


def check_charset(lines: list[Line], charset: list[str]) -> None:
    known = set(charset)
    for line in lines:
        unknown = sorted({c for c in line.text if c not in known})
        if unknown:
            raise CnnkitError(f"{line.where}: characters outside the charset: {' '.join(repr(c) for c in unknown)}",
                              "add them to --charset, or leave --charset out to take the training labels' characters")


def hold_out_val(train: list, val_split: float, seed: int, root: Path, what: str) -> tuple[list, list]:
    """(train, val): a seeded ``val_split`` of ``train`` held out, both in their file order (no val/ folder)."""
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, round(len(train) * val_split))
    if len(train) - n_val < 1:
        raise CnnkitError(f"{root}: {len(train)} training {what}(s), none left after holding out val", f"add {what}s or a val/ split")
    return [train[i] for i in sorted(order[n_val:])], [train[i] for i in sorted(order[:n_val])]


def load_line_data(cfg, root: Path) -> LineData:
    """train/ and val/ (or --val-split of train) and the charset of a recognition dataset."""
    root = Path(root)
    train = read_labels(root / "train" / LABELS)
    if (root / "val" / LABELS).is_file():
        val = read_labels(root / "val" / LABELS)
    else:
        train, val = hold_out_val(train, cfg.val_split, cfg.seed, root, "line")
    # by default every character of the labels, val's too: a character only val holds is one the model can
    # still be asked for (and gets wrong), not a reason to stop
    charset = read_charset(cfg.charset) if cfg.charset else sorted({c for line in train + val for c in line.text})
    check_charset(train + val, charset)
    return LineData(root, charset, {"train": train, "val": val})


def read_line(path: Path, height: int, max_width: int) -> np.ndarray:
    """[height, w, 3] uint8 RGB: the image scaled to ``height``, aspect kept, at most ``max_width`` wide."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CnnkitError(f"{path}: cannot be read as an image")
    if min(image.shape[:2]) < 2:
        raise CnnkitError(f"{path}: the image is {image.shape[1]} x {image.shape[0]} pixels", "a text line needs at least 2 x 2 pixels")
    return fit_height(image[..., ::-1], height, max_width)


def augment_line(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """What suits text (no flips): a slight rotation and slant, a width change, light, blur and noise."""
    h, w = image.shape[:2]
    angle, shear = rng.uniform(-2, 2), rng.uniform(-0.15, 0.15)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    matrix[0, 1] += shear
    matrix[0, 2] -= shear * h / 2
    image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    stretch = rng.uniform(0.85, 1.15)
    image = cv2.resize(image, (max(4, round(w * stretch)), h), interpolation=cv2.INTER_LINEAR)
    out = image.astype(np.float32)
    out = (out - 128) * rng.uniform(0.75, 1.25) + 128 + rng.uniform(-25, 25)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.2:
        out += rng.normal(0, rng.uniform(2, 10), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode(text: str, index: dict[str, int]) -> list[int]:
    return [index[c] for c in text]


class LineSet(Dataset):
    """(image [3, H, W], target indices) per line; ``train`` adds augment_line (a new draw every epoch)."""

    def __init__(self, lines: list[Line], charset: list[str], height: int, max_width: int, mean, std, train: bool = False,
                 seed: int = 0):
        self.lines, self.height, self.max_width, self.train, self.seed = lines, height, max_width, train, seed
        self.index = {c: i + 1 for i, c in enumerate(charset)}
        self.mean, self.std = mean, std
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, k: int):
        line = self.lines[k]
        image = read_line(line.path, self.height, self.max_width)
        if self.train:
            image = fit_height(augment_line(np.random.default_rng([self.seed, self.epoch, k]), image), self.height, self.max_width)
        return to_tensor(image, self.mean, self.std), torch.tensor(encode(line.text, self.index), dtype=torch.long)


def collate_lines(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [B, 3, H, W] padded on the right to the widest line (a multiple of 4), widths [B], targets (all
    lines' indices, concatenated) [sum], target lengths [B]), CTC's input."""
    images, targets = zip(*batch)
    padded, widths = pad_lines(list(images))
    return padded, widths, torch.cat(targets), torch.tensor([len(t) for t in targets])
