"""TensorBoard event files of a run (yolocore.training.tensorboard_log): read back with tensorboard's own reader,
they hold each results row under its column names and the training-batch images, and writing them imports no
framework."""
import subprocess
import sys

import cv2
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from yolocore.config import ROOT
from yolocore.training.recipe import results_row
from yolocore.training.tensorboard_log import TensorBoardLog


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_event_files_hold_each_epochs_row_and_the_batch_images(tmp_path):
    log = TensorBoardLog(tmp_path)
    cv2.imwrite(str(tmp_path / "train_batch0.jpg"), np.full((24, 32, 3), 200, np.uint8))
    log.image("train_batch0", tmp_path / "train_batch0.jpg", 0)
    rows = [results_row(0, [0.1, 0.2, 0.3, 1.5, 1.0, 0.2, 0.2, 0.1], (float("nan"),) * 7, [0.01, 0.01, 0.09]),
            results_row(1, [0.05, 0.1, 0.2, 1.2, 0.8, 0.2, 0.1, 0.1], (0.5, 0.4, 0.3, 0.2, 0.04, 0.03, 0.02),
                        [0.02, 0.02, 0.08])]
    for epoch, row in enumerate(rows):
        log.scalars(row, epoch)
    log.close()
    events = read_events(tmp_path)
    tags = events.Tags()
    assert set(tags["scalars"]) == set(rows[1]) - {"epoch"}
    assert "train/fgd_loss" in tags["scalars"] and "x/lr2" in tags["scalars"]
    assert [(s.step, round(s.value, 6)) for s in events.Scalars("train/box_loss")] == [(0, 0.1), (1, 0.05)]
    # The epoch without validation leaves a gap, as results.png does, rather than a NaN point.
    assert [(s.step, round(s.value, 6)) for s in events.Scalars("metrics/mAP_0.5")] == [(1, 0.3)]
    assert tags["images"] == ["train_batch0"]
    (image,) = events.Images("train_batch0")
    assert (image.width, image.height) == (32, 24)
    assert image.encoded_image_string == (tmp_path / "train_batch0.jpg").read_bytes()


def test_writing_event_files_imports_neither_framework():
    """The Jittor tree logs through the same module: torch must not come in with it (Jittor loads first, alone)."""
    code = ("import sys, yolocore.training.loop, yolocore.training.tensorboard_log; "
            "print(sorted({'torch', 'jittor'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
