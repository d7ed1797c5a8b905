"""The Jittor tree's own data loader: batches in order, and an error in the step that consumes them surfaces (an
error in a worker: tests/test_core_workers.py)."""
import threading

import numpy as np
import pytest

import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags before anything imports jittor)
from yolocore.config import load_data_yaml
from yolocore.synthetic import make_synthetic_dataset
from YOLOv5Jittor.utils.dataloader import create_dataloader


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data_yaml(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=24, n_val=4, imgsz=128,
                                                 seed=1))


def test_workers_give_the_batches_of_the_single_process_loader(data):
    (serial, _), (forked, _) = (create_dataloader(data["train"], 64, 8, data["nc"], workers=w) for w in (0, 2))
    for a, b in zip(serial, forked, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_an_error_in_the_consumer_with_large_batches_in_flight_surfaces(data):
    """An error in the step that uses a batch (here, the first) closes the loader while workers are still sending
    batches of 12 MB, far beyond a pipe's buffer. With Pool.terminate() there, val.py on NWPU hung for good and
    never showed its error; this small case did not hang that way, so it pins the outcome, not that hang."""
    loader, _ = create_dataloader(data["train"], 512, 16, data["nc"], workers=2)
    outcome = []

    def fail_on_the_first_batch():
        try:
            for _ in loader:
                raise RuntimeError("the training step failed")
        except RuntimeError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=fail_on_the_first_batch, daemon=True)
    worker.start()
    worker.join(120)
    assert outcome == ["the training step failed"], "the loader hung instead of letting the error through"
