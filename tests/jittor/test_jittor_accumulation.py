"""Gradient accumulation in the Jittor trainer must not keep the graphs of the batches it accumulates.

Jittor computes lazily: Optimizer.backward only records the gradient, so until something executes it, each
accumulated batch keeps its whole forward and backward graph, activations included, alive until the optimizer
step. At batch 16 YOLOv5 accumulates 4 batches to the nominal 64, and a yolov5n trainer on NWPU held 3.3 GB
instead of 1.5 GB."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
import pytest

from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training import loop
from YOLOv5Jittor import train as jt_train

pytestmark = pytest.mark.slow  # an epoch of training


def test_accumulated_batches_do_not_keep_their_graphs(tmp_path, monkeypatch):
    data = make_synthetic_dataset(tmp_path / "syn", n_train=64, n_val=8, imgsz=128, seed=1)
    run = loop.setup(jt_train.parse_opt([
        "--data", str(data), "--cfg", "yolov5n.yaml", "--imgsz", "64", "--batch-size", "8", "--workers", "0",
        "--epochs", "300", "--noautoanchor", "--project", str(tmp_path / "runs")]), jt_train)
    lived = []
    images_to_tensor = jt_train.images_to_tensor

    def counting_images_to_tensor(*args):
        # Called once per batch, before its forward pass: what is alive then is what earlier batches left behind.
        lived.append(jt.liveness_info()["lived_vars"])
        return images_to_tensor(*args)

    monkeypatch.setattr(jt_train, "images_to_tensor", counting_images_to_tensor)
    epoch = 50  # past warmup: accumulation at the nominal batch, 64 / 8 = 8 batches, the whole epoch
    loop.train_one_epoch(run, epoch, jt_train)
    assert run.accumulate == 8 and len(lived) == len(run.train_loader) == 8
    assert run.last_opt_step == (epoch + 1) * 8 - 1  # the epoch's only step, at its last batch
    # Batch k starts with k - 1 batches' gradients accumulated. From the third batch on (the first two still see
    # what setup and the first backward left pending) as many variables live each time; without the trainer's sync
    # each batch added its graph, some 4,400 variables here.
    assert len(set(lived[2:])) == 1, lived
