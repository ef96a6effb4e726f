"""`cnnkit data synth text --task rec`: lines of real text from installed fonts, reproducible, fonts chosen."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cnnkit.data.synth_text import CHARSET, FontFace, installed_fonts, make_text, select_fonts, synth_text_lines
from cnnkit.errors import CnnkitError
from conftest import run_cli


def read_labels(path):
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_lines_are_written_with_labels_and_are_reproducible(tmp_path):
    summary = synth_text_lines(tmp_path / "a", n=30, height=32, val_fraction=0.2, seed=3, progress=False)
    assert summary["lines"] == {"train": 24, "val": 6}
    rows = read_labels(tmp_path / "a" / "train" / "labels.tsv")
    assert len(rows) == 24 and all(len(r) == 2 and r[1] for r in rows)
    assert all(c in CHARSET for _, text in rows for c in text)
    for name, _ in rows[:5]:
        image = cv2.imread(str(tmp_path / "a" / "train" / name))
        assert image.shape[0] == 32 and image.shape[1] >= 16
    synth_text_lines(tmp_path / "b", n=30, height=32, val_fraction=0.2, seed=3, progress=False)
    for split in ("train", "val"):
        assert (tmp_path / "a" / split / "labels.tsv").read_bytes() == (tmp_path / "b" / split / "labels.tsv").read_bytes()
    first = "train/images/000001.png"
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / first).read_bytes()


def test_text_is_mostly_real_english_words():
    rng = np.random.default_rng(0)
    lines = [make_text(rng) for _ in range(300)]
    words = [w.strip(".,;:!?\"'()").lower() for line in lines for w in line.split()]
    common = {"the", "and", "of", "to", "a", "in", "for", "is", "on", "with"}
    assert sum(w in common for w in words) > 0.05 * len(words)
    assert max(len(line) for line in lines) <= 32


def test_symbol_fonts_are_left_out_and_families_can_be_chosen():
    faces = installed_fonts()
    assert faces, "matplotlib's DejaVu at least"
    families = {f.family for f in faces}
    assert not any("symbol" in f.lower() or "dingbat" in f.lower() for f in families)
    fake = [FontFace(None, "DejaVu Sans", "Book"), FontFace(None, "Liberation Serif", "Regular"),
            FontFace(None, "FreeMono", "Regular")]
    assert [f.family for f in select_fonts(fake, "!Liberation*")] == ["DejaVu Sans", "FreeMono"]
    assert [f.family for f in select_fonts(fake, "dejavu*,free*")] == ["DejaVu Sans", "FreeMono"]
    with pytest.raises(CnnkitError, match="matches no installed family"):
        select_fonts(fake, "Comic*")


def test_cli_writes_lines_and_refuses_fonts_for_other_data(tmp_path):
    code, out, err = run_cli(["data", "synth", "text", "--out", tmp_path / "t", "--n", "12"])
    assert code == 0, err
    assert "train + " in out + err and (tmp_path / "t" / "val" / "labels.tsv").is_file()
    code, out, err = run_cli(["data", "synth", "shapes", "--out", tmp_path / "s", "--fonts", "x"])
    assert code == 2 and "--fonts is for text" in err
    code, out, err = run_cli(["data", "synth", "text", "--out", tmp_path / "u", "--fonts", "Comic*"])
    assert code == 2 and "matches no installed family" in err and not (tmp_path / "u").exists()
