"""data/mot.py: MOTChallenge text files, seqinfo.ini, sequence discovery, frames of sequences and videos, and
one-line errors naming the file and line for every kind of bad input."""

import cv2
import numpy as np
import pytest
from PIL import Image

from cnnkit.data.mot import (
    MotSequence,
    SeqInfo,
    VideoFrames,
    check_frames_in_range,
    detections_by_frame,
    find_sequences,
    iter_frames,
    read_mot_file,
    read_seqinfo,
    read_sequence,
    write_mot_results,
    write_seqinfo,
)
from cnnkit.errors import CnnkitError


def _one_line_error(call, *names):
    """Run ``call``; it must raise a CnnkitError whose one-line message names every string in ``names``."""
    with pytest.raises(CnnkitError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, message
    return message


def _sequence(folder, n=3, size=(32, 24), ext=".jpg", seqinfo=True, colours=None):
    (folder / "img1").mkdir(parents=True)
    for i in range(n):
        colour = colours[i] if colours else (10 * i, 20, 30)
        Image.new("RGB", size, colour).save(folder / "img1" / f"{i + 1:06d}{ext}")
    if seqinfo:
        write_seqinfo(folder, SeqInfo(folder.name, 25, n, size[0], size[1], "img1", ext))
    return folder


# ------------------------------------------------------------------------------------------- text files

def test_results_round_trip(tmp_path):
    rows = np.array([[2, 7, 10.5, 20.25, 30, 40, 0.9],
                     [1, 9, 1, 2, 3, 4, 0.12345],
                     [1, 3, 5, 6, 7, 8, 1.0]])
    path = write_mot_results(tmp_path / "out" / "SEQ.txt", rows)
    lines = path.read_text().splitlines()
    assert lines == ["1,3,5.00,6.00,7.00,8.00,1.0000,-1,-1,-1", "1,9,1.00,2.00,3.00,4.00,0.1235,-1,-1,-1",
                     "2,7,10.50,20.25,30.00,40.00,0.9000,-1,-1,-1"]  # sorted by frame, then id
    back = read_mot_file(path, kind="result")
    assert back.shape == (3, 10) and back.dtype == np.float64
    np.testing.assert_allclose(back[:, :7], rows[[2, 1, 0]], atol=1e-4)
    assert (back[:, 7:] == -1).all()
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["SEQ.txt"]  # no temporary file left


def test_results_without_score_and_empty(tmp_path):
    write_mot_results(tmp_path / "a.txt", np.array([[1, 1, 0, 0, 5, 5]]))
    assert (tmp_path / "a.txt").read_text() == "1,1,0.00,0.00,5.00,5.00,1.0000,-1,-1,-1\n"
    write_mot_results(tmp_path / "b.txt", np.zeros((0, 10)))
    assert (tmp_path / "b.txt").read_text() == ""
    assert read_mot_file(tmp_path / "b.txt", kind="result").shape == (0, 10)
    (tmp_path / "c.txt").write_text("\n  \n")
    assert read_mot_file(tmp_path / "c.txt", kind="det").shape == (0, 10)


def test_det_with_7_and_10_columns(tmp_path):
    (tmp_path / "d7.txt").write_text("1,-1,10,20,30,40,0.8\n2,-1,1,2,3,4,0.5\n")
    (tmp_path / "d10.txt").write_text("1,-1,10,20,30,40,0.8,-1,-1,-1\n2,-1,1,2,3,4,0.5,-1,-1,-1\n")
    d7, d10 = read_mot_file(tmp_path / "d7.txt", "det"), read_mot_file(tmp_path / "d10.txt", "det")
    np.testing.assert_array_equal(d7, d10)
    np.testing.assert_array_equal(d7[0], [1, -1, 10, 20, 30, 40, 0.8, -1, -1, -1])
    (tmp_path / "d6.txt").write_text("3,-1,1,2,3,4\n")  # no score: 1
    np.testing.assert_array_equal(read_mot_file(tmp_path / "d6.txt", "det")[0, 6:], [1, -1, -1, -1])


def test_gt_with_9_and_6_columns_and_irregular_rows(tmp_path):
    (tmp_path / "gt9.txt").write_text("1,1,912,484,97,109,0,7,1\n1,2,1338,418,167,379,1,1,0.86173\n")
    gt = read_mot_file(tmp_path / "gt9.txt", "gt")
    np.testing.assert_allclose(gt[1], [1, 2, 1338, 418, 167, 379, 1, 1, 0.86173, -1])
    assert gt[0, 6] == 0 and gt[0, 7] == 7  # the consider flag and class are kept
    # 6 columns: considered, class 1, fully visible; rows of different lengths, spaces and a trailing comma
    (tmp_path / "gt_mixed.txt").write_text("1, 4, 1, 2, 3, 4\n\n2,4,1,2,3,4,0,2,\n")
    mixed = read_mot_file(tmp_path / "gt_mixed.txt", "gt")
    np.testing.assert_array_equal(mixed, [[1, 4, 1, 2, 3, 4, 1, 1, 1, -1], [2, 4, 1, 2, 3, 4, 0, 2, 1, -1]])


def test_detections_by_frame_is_xyxy(tmp_path):
    rows = np.array([[2, -1, 10, 20, 30, 40, 0.9, -1, -1, -1],
                     [1, -1, 0, 0, 5, 6, 0.3, -1, -1, -1],
                     [2, -1, 1, 1, 1, 1, 0.5, 3, -1, -1]])
    by_frame = detections_by_frame(rows)
    assert sorted(by_frame) == [1, 2]
    np.testing.assert_array_equal(by_frame[1], [[0, 0, 5, 6, 0.3, -1]])
    np.testing.assert_array_equal(by_frame[2], [[10, 20, 40, 60, 0.9, -1], [1, 1, 2, 2, 0.5, 3]])
    assert detections_by_frame(np.zeros((0, 10))) == {}
    six = detections_by_frame(np.array([[4, 1, 1, 2, 3, 4]]))  # no score or class columns
    np.testing.assert_array_equal(six[4], [[1, 2, 4, 6, 1, -1]])


BAD_ROWS = [
    ("gt", "1,1,1,1,1,1,1,1,1\na,b\n", 2, "expected at least 6 comma-separated numbers, got 'a,b'"),
    ("det", "1,-1,1,1,1,1,0.5\n\n2,-1,x,1,1,1,0.5\n", 3, "field 3 is not a number: 'x'"),
    ("gt", "1,1,1,1,1,1,1,1,1\n2,1,1,1,-5,1,1,1,1\n", 2, "negative width or height (-5 x 1)"),
    ("det", "1,-1,1,1,1,-2,0.5\n", 1, "negative width or height"),
    ("result", "1,1,1,1,1,1,1,-1,-1,-1\n0,1,1,1,1,1,1,-1,-1,-1\n", 2, "frame 0: frames are whole numbers from 1"),
    ("det", "1.5,-1,1,1,1,1,0.5\n", 1, "frame 1.5"),
    ("gt", "1,1,1,1,1,1,1,1,1\n1,2.5,1,1,1,1,1,1,1\n", 2, "id 2.5 is not a whole number"),
    ("det", "1,-1,1,1,1,1,0.5\n1,-1,nan,1,1,1,0.5\n", 2, "not a finite number"),
    ("gt", "1,1,1,1,1\n", 1, "expected at least 6"),
]


@pytest.mark.parametrize("kind,text,line,what", BAD_ROWS)
def test_bad_rows_name_file_and_line(tmp_path, kind, text, line, what):
    path = tmp_path / "SEQ" / "gt" / "gt.txt"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    message = _one_line_error(lambda: read_mot_file(path, kind), path, f"line {line}:", what)
    assert message.startswith(f"{path} line {line}: ")


def test_binary_missing_and_unknown_kind(tmp_path):
    path = tmp_path / "det.txt"
    path.write_bytes(b"\xff\xfe\x00garbage\x81")
    _one_line_error(lambda: read_mot_file(path, "det"), path, "not a text file")
    _one_line_error(lambda: read_mot_file(tmp_path / "none.txt", "det"), "none.txt", "no such file")
    (tmp_path / "ok.txt").write_text("1,-1,1,1,1,1\n")
    _one_line_error(lambda: read_mot_file(tmp_path / "ok.txt", "tracks"), "tracks")


def test_frames_past_the_sequence_end(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("1,-1,1,1,1,1,0.5\n\n5,-1,1,1,1,1,0.5\n9,-1,1,1,1,1,0.5\n")
    rows = read_mot_file(path, "det")
    check_frames_in_range(rows, 9, path)  # frame 9 of 9 is fine
    _one_line_error(lambda: check_frames_in_range(rows, 4, path), path, "line 3:", "frame 5", "4 frames")
    _one_line_error(lambda: read_mot_file(path, "det", length=8), path, "line 4:", "frame 9", "8 frames")


# ------------------------------------------------------------------------------------- seqinfo, sequences

def test_seqinfo_round_trip(tmp_path):
    info = SeqInfo("MOT17-02", 29.97, 600, 1920, 1080, "img1", ".jpg")
    path = write_seqinfo(tmp_path, info)
    assert path == tmp_path / "seqinfo.ini"
    assert path.read_text().splitlines()[:4] == ["[Sequence]", "name=MOT17-02", "imDir=img1", "frameRate=29.97"]
    assert read_seqinfo(path) == info
    write_seqinfo(tmp_path / "b" / "seqinfo.ini", SeqInfo("b", 30.0, 2, 8, 6))
    assert "frameRate=30\n" in (tmp_path / "b" / "seqinfo.ini").read_text()


@pytest.mark.parametrize("text,names", [
    ("[Sequence]\nname=A\nframeRate=30\nimWidth=10\nimHeight=10\n", ["seqLength"]),
    ("garbage\n", ["line 1:", "[Sequence]"]),
    ("[Sequence]\nname=A\nframeRate=fast\nseqLength=3\nimWidth=10\nimHeight=10\n", ["line 3:", "frameRate='fast'"]),
    ("[Sequence]\nframeRate=30\nseqLength=3.5\nimWidth=10\nimHeight=10\n", ["line 3:", "seqLength"]),
    ("[Sequence]\nframeRate=30\nframeRate=25\nseqLength=3\nimWidth=10\nimHeight=10\n", ["line 3:", "given twice"]),
    ("[Other]\nframeRate=30\n", ["no [Sequence] section"]),
    ("[Sequence]\nframeRate=30\nthis is not a key\n", ["line 3:", "key=value"]),
])
def test_bad_seqinfo(tmp_path, text, names):
    path = tmp_path / "SEQ" / "seqinfo.ini"
    path.parent.mkdir()
    path.write_text(text)
    _one_line_error(lambda: read_seqinfo(path), path, *names)
    _one_line_error(lambda: read_sequence(path.parent), "seqinfo.ini")


def test_read_sequence_with_seqinfo(tmp_path):
    seq = read_sequence(_sequence(tmp_path / "SEQ-A", n=3))
    assert isinstance(seq, MotSequence)
    assert (seq.name, seq.fps, seq.width, seq.height, seq.length) == ("SEQ-A", 25.0, 32, 24, 3)
    assert [p.name for p in seq.frames] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert seq.gt is None and seq.det is None
    (seq.root / "gt").mkdir()
    (seq.root / "gt" / "gt.txt").write_text("")
    assert seq.gt == seq.root / "gt" / "gt.txt"


def test_plain_folder_of_frames_in_name_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in (1, 2, 10):
        Image.new("RGB", (20, 10), (i, i, i)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    seq = read_sequence(folder)
    assert [p.name for p in seq.frames] == ["1.png", "2.png", "10.png"]  # numbers compared as numbers
    assert (seq.fps, seq.width, seq.height, seq.length, seq.name) == (30.0, 20, 10, 3, "clip")
    assert [int(frame[0, 0, 0]) for frame in iter_frames(seq)] == [1, 2, 10]


def test_bad_sequences(tmp_path):
    empty = tmp_path / "EMPTY"
    (empty / "img1").mkdir(parents=True)
    _one_line_error(lambda: read_sequence(empty), empty / "img1", "no frames")
    short = _sequence(tmp_path / "SHORT", n=2)
    write_seqinfo(short, SeqInfo("SHORT", 30, 5, 32, 24))
    _one_line_error(lambda: read_sequence(short), "seqLength=5", "2 .jpg frames")
    nothing = _sequence(tmp_path / "NOFRAMES", n=0)
    write_seqinfo(nothing, SeqInfo("NOFRAMES", 30, 5, 32, 24))
    _one_line_error(lambda: read_sequence(nothing), nothing / "img1", "no .jpg frames")
    assert read_sequence(nothing, require_frames=False).length == 5  # gt-only evaluation
    _one_line_error(lambda: read_sequence(tmp_path / "missing"), "missing", "no such folder")
    _one_line_error(lambda: find_sequences(tmp_path / "missing"), "missing")


def test_find_sequences_in_a_mot_root(tmp_path):
    root = tmp_path / "MOT"
    for split, names in (("train", ["B-10", "B-2"]), ("test", ["A-1"])):
        for name in names:
            _sequence(root / split / name, n=2)
    assert [s.name for s in find_sequences(root)] == ["A-1", "B-2", "B-10"]
    assert [s.name for s in find_sequences(root, split="train")] == ["B-2", "B-10"]
    assert [s.name for s in find_sequences(root / "train")] == ["B-2", "B-10"]
    assert [s.name for s in find_sequences(root / "train" / "B-2")] == ["B-2"]
    _one_line_error(lambda: find_sequences(root, split="val"), "val", "train")
    (tmp_path / "nothing" / "sub").mkdir(parents=True)
    _one_line_error(lambda: find_sequences(tmp_path / "nothing"), "nothing", "no MOTChallenge sequences")


# ------------------------------------------------------------------------------------------------ frames

def test_sequence_frames_are_rgb_in_order(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = VideoFrames(_sequence(tmp_path / "RGB", n=3, ext=".png", colours=colours))
    assert (frames.name, frames.fps, frames.width, frames.height, frames.length) == ("RGB", 25.0, 32, 24, 3)
    got = list(frames)
    assert [tuple(int(v) for v in f[0, 0]) for f in got] == colours
    assert all(f.dtype == np.uint8 and f.shape == (24, 32, 3) for f in got)
    assert len(list(frames)) == 3  # iterating again starts over


def test_frame_of_the_wrong_size(tmp_path):
    folder = _sequence(tmp_path / "SIZE", n=2, ext=".png")
    Image.new("RGB", (16, 16)).save(folder / "img1" / "000002.png")
    _one_line_error(lambda: list(iter_frames(folder)), "000002.png", "16x16")


def test_video_read_back(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), (0, 0, 40 * i + 40), np.uint8))  # BGR: red growing
    writer.release()
    video = VideoFrames(path)
    assert (video.name, video.width, video.height) == ("clip", 64, 48)
    assert video.fps == pytest.approx(12.0)
    frames = list(video)
    assert len(frames) == 5 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    reds = [float(f[..., 0].mean()) for f in frames]
    assert reds == sorted(reds) and float(frames[-1][..., 2].mean()) < 30  # RGB order, in time order
    assert len(list(iter_frames(path))) == 5


def test_unopenable_video(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    message = _one_line_error(lambda: iter_frames(path), path)
    assert "OpenCV cannot open" in message or "no frame could be read" in message
    _one_line_error(lambda: VideoFrames(tmp_path / "none.mp4"), "none.mp4", "no such file")
