"""The Jittor tree's own data loader: batches in order, an error in the step that consumes them surfaces (an
error in a worker: tests/e2e/test_e2e_workers.py), and the shared memory its workers hand images over in is freed
whatever happens."""
import errno
import multiprocessing
import os
import shutil
import signal
import threading

import numpy as np
import pytest
from processes import parent_of, process_tree

import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags before anything imports jittor)
from yolocore.config import load_data_yaml
from yolocore.data import workers
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.data.workers import BATCHES_AHEAD
from YOLOv5Jittor.utils.dataloader import create_dataloader


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data_yaml(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=24, n_val=4, imgsz=128,
                                                 seed=1))


@pytest.fixture
def new_shared_memory():
    """Lists the blocks of Python's shared memory in /dev/shm that the test made: not those there before it."""
    before = set(python_shared_memory())
    return lambda: sorted(set(python_shared_memory()) - before)


def python_shared_memory():
    return [name for name in os.listdir("/dev/shm") if name.startswith("psm_")]


@pytest.mark.parametrize("rect", [False, True], ids=["square", "rect"])
def test_workers_give_the_batches_of_the_single_process_loader(data, rect):
    (serial, _), (forked, _) = (create_dataloader(data["train"], 64, 8, data["nc"], workers=w, rect=rect)
                                for w in (0, 2))
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


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="lists Linux's shared memory and processes")
def test_batch_images_travel_in_shared_memory_that_closing_frees(data, new_shared_memory):
    """Each worker has BATCHES_AHEAD slots; a killed worker's are freed too, and the next pass has new ones."""
    loader, _ = create_dataloader(data["train"], 64, 4, data["nc"], workers=2, rect=True, persistent=True)
    during = []
    for i, _ in enumerate(loader):
        if i == 0:
            during = new_shared_memory()
    assert len(during) == loader.num_workers * BATCHES_AHEAD
    with pytest.raises(RuntimeError, match="worker"):
        for i, _ in enumerate(loader):
            if i == 0:
                # Workers are the fork server's children, the test's grandchildren.
                worker_pids = [p for p in process_tree(os.getpid()) if parent_of(parent_of(p)) == os.getpid()]
                os.kill(worker_pids[0], signal.SIGKILL)
    assert new_shared_memory() == []
    assert len(list(loader)) == 6
    loader.close()
    assert new_shared_memory() == []


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="lists Linux's shared memory")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the loader starts one worker per core at most")
def test_a_worker_that_fails_to_start_leaves_no_process_or_shared_memory(data, new_shared_memory, monkeypatch):
    loader, _ = create_dataloader(data["train"], 64, 4, data["nc"], workers=2)
    start, started = multiprocessing.process.BaseProcess.start, []

    def start_one(process):
        if started:
            raise OSError("no more processes")
        started.append(process)
        start(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_one)
    with pytest.raises(OSError, match="no more processes"):
        list(loader)
    assert len(started) == 1 and not any(process.is_alive() for process in started)
    assert new_shared_memory() == []


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="reserves Linux's shared memory")
def test_without_room_in_shared_memory_batches_travel_through_pipes(data, new_shared_memory, monkeypatch):
    """A worker's slots take their pages from /dev/shm when it starts; where it has none left (other loaders' slots
    took them), the batches come through the pipes."""
    (serial, _), (piped, _) = (create_dataloader(data["train"], 64, 8, data["nc"], workers=w) for w in (0, 2))

    def no_room(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(workers.os, "posix_fallocate", no_room)
    monkeypatch.setattr(workers.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**26, 2**26, 0))
    with pytest.warns(UserWarning, match="/dev/shm has 0 MB free"):
        batches = list(piped)
    assert new_shared_memory() == []
    for a, b in zip(serial, batches, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
