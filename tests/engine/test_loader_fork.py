"""Loader workers forked after the main process used OpenCV must not hang. They did: a worker forked while
OpenCV's thread pool was busy or just idle inherits its lock state without its threads, and waits forever in
its first OpenCV call (text detection's validation runs OpenCV in the main process between epochs)."""

import os
import signal
import subprocess
import sys

SCENARIO = """
import cv2, numpy as np
from torch.utils.data import Dataset
from cnnkit.engine.trainer import make_loader

class Warped(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, k):
        return cv2.warpAffine(np.ones((1000, 1000), np.float32), np.float32([[1, 0, k], [0, 1, 0]]), (1000, 1000)).sum()

big = np.random.default_rng(0).random((2000, 2000)).astype(np.float32)
cv2.setNumThreads(2)  # OpenCV's default on a 2-core machine, whatever this one has
loader = make_loader(Warped(), 2, 1, False, 0)  # made once, a fresh worker forked every epoch, as fit does
for _ in range(12):  # without the fix about a third of these forks hung
    cv2.GaussianBlur(big, (0, 0), 3)  # the main process runs OpenCV right before the next fork
    assert len(list(loader)) == 2
"""


def test_loader_workers_survive_opencv_in_the_main_process(tmp_path):
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        # its own session, so that a hung worker (a grandchild) can be killed with it
        proc = subprocess.Popen([sys.executable, "-c", SCENARIO], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = "hung"
    assert code == 0, f"{code}: {log.read_text()[-2000:]}"
