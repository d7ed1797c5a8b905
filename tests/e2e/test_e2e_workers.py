"""Both trees' data-loading workers (yolocore.data.workers): started from a small fork server, they hold none of the
trainer's memory, an error in one reaches the training loop, and persistent ones live from one epoch to the next
and load its first batches ahead, giving the batches a plain loader gives."""
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from noting_dataset import noting
from processes import parent_of, process_tree, resident_mb
from torch.utils.data import dataloader as torch_dataloader

import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags before anything imports jittor)
from yolocore.config import ROOT, load_data_yaml, load_hyp
from yolocore.data.dataset import epoch_order
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.data.workers import EpochBatches
from YOLOv5Jittor.utils.dataloader import create_dataloader as jittor_loader
from YOLOv5Pytorch.utils.dataloader import create_dataloader as pytorch_loader

LOADERS = pytest.mark.parametrize("create_dataloader", [pytorch_loader, jittor_loader], ids=["pytorch", "jittor"])


@pytest.fixture
def data(tmp_path):
    return load_data_yaml(make_synthetic_dataset(tmp_path / "syn", n_train=24, n_val=4, imgsz=128, seed=1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process memory from /proc")
@LOADERS
def test_workers_hold_none_of_the_trainers_memory(data, create_dataloader):
    """Workers forked from the trainer itself each mapped all of its memory, and kept the pages it rewrote:
    with a trainer of 1 GB, each held over 1 GB. From the fork server they hold its few hundred MB at most."""
    loader, _ = create_dataloader(data["train"], 64, 4, data["nc"], workers=2)
    trainer_memory = np.ones(2**27)  # 1 GiB, written, as a training step writes its buffers
    for i, _ in enumerate(loader):
        if i == 1:  # mid-epoch: the workers are loading
            workers = {pid: resident_mb(pid) for pid in process_tree(os.getpid())[1:]}
    assert len(workers) >= 2, workers
    assert max(workers.values()) < trainer_memory.nbytes / 2**20 / 2, f"resident MB per process: {workers}"


@LOADERS
def test_a_worker_error_reaches_the_consumer(data, create_dataloader):
    loader, dataset = create_dataloader(data["train"], 64, 4, data["nc"], workers=2)
    Path(dataset.im_files[13]).unlink()  # gone after the scan: only the worker loading image 13 finds out
    with pytest.raises(FileNotFoundError, match=Path(dataset.im_files[13]).name):
        list(loader)


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
with open({marks!r}, "a") as f:
    f.write(__name__ + "\\n")
if __name__ == "__main__":
    from yolocore.config import load_data_yaml
    from {tree}.utils.dataloader import create_dataloader
    data = load_data_yaml({data!r})
    loader, _ = create_dataloader(data["train"], 64, 4, data["nc"], workers=2)
    for _ in range(2):
        assert len(list(loader)) == 6
"""


@pytest.mark.parametrize("tree", ["YOLOv5Pytorch", "YOLOv5Jittor"])
def test_workers_do_not_import_the_script_being_run(tmp_path, data, tree):
    """A fork server's children import the main script first, as spawned processes do (train.py: torch or jittor
    and every model); the loaders start their workers without it. Here the script notes each import of itself."""
    marks = tmp_path / "imports.txt"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(root=str(Path(__file__).resolve().parents[2]), marks=str(marks), tree=tree,
                                    data=str(data["yaml_file"])))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    assert marks.read_text().split() == ["__main__"]


INTERRUPTED = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import {tree}
from yolocore.config import load_data_yaml
from {tree}.utils.dataloader import create_dataloader
data = load_data_yaml({data!r})
loader, _ = create_dataloader(data["train"], 64, 4, data["nc"], workers=2, persistent=True)
try:
    for i, _ in enumerate(loader):
        if i == 1:
            os.killpg(0, signal.SIGINT)  # as Ctrl-C in a terminal: to every process of the group
            time.sleep(10)
except KeyboardInterrupt:
    time.sleep(2)  # before the workers are stopped: one that took Ctrl-C as its own prints its traceback meanwhile
    raise
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sends signals to a process group")
@pytest.mark.parametrize("tree", ["YOLOv5Pytorch", "YOLOv5Jittor"])
def test_ctrl_c_shows_the_trainers_traceback_alone(tmp_path, data, tree):
    """The workers leave Ctrl-C to the trainer, which stops them, rather than each printing a traceback."""
    script = tmp_path / "script.py"
    script.write_text(INTERRUPTED.format(root=str(Path(__file__).resolve().parents[2]), tree=tree,
                                         data=str(data["yaml_file"])))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         start_new_session=True)
    assert run.returncode == -signal.SIGINT, run.stderr
    assert run.stderr.startswith("Traceback") and run.stderr.count("Traceback") == 1, run.stderr
    assert run.stderr.rstrip().endswith("KeyboardInterrupt") and "Process" not in run.stderr, run.stderr
    assert "leaked" not in run.stderr  # shared memory the workers had


def test_epoch_batches_tag_each_epochs_order_with_its_epoch():
    batches = EpochBatches(10, 4, seed=3, shuffle=True)
    batches.set_epoch(2)
    assert len(batches) == 3
    expected = [[(2, i) for i in epoch_order(10, 3, 2)[s:s + 4].tolist()] for s in (0, 4, 8)]
    assert list(batches) == expected
    batches.endless = True
    endless = iter(batches)
    assert [next(endless) for _ in range(6)][3:] == [[(3, i) for i in epoch_order(10, 3, 3)[s:s + 4].tolist()]
                                                      for s in (0, 4, 8)]
    share = EpochBatches(10, 8, seed=3, shuffle=True, rank=1, world_size=2)
    assert (len(share), share.batch_size) == (1, 5)
    assert list(share) == [[(0, i) for i in epoch_order(10, 3, 0, rank=1, world_size=2).tolist()]]


def augmented_loader(create_dataloader, data, persistent):
    hyp = load_hyp(ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml")
    return create_dataloader(data["train"], 64, 4, data["nc"], hyp, augment=True, shuffle=True, seed=5, workers=2,
                             persistent=persistent)


def images_of(batches):
    return [np.asarray(b[0]) for b in batches]


@LOADERS
def test_persistent_workers_give_a_plain_loaders_batches(data, create_dataloader):
    """Epoch after epoch, after a pass left unfinished, and when set_epoch jumps ahead."""
    plain, _ = augmented_loader(create_dataloader, data, persistent=False)
    persistent, _ = augmented_loader(create_dataloader, data, persistent=True)
    set_epoch = sys.modules[create_dataloader.__module__].set_epoch
    expected = {}
    for epoch in (0, 1, 2, 5):
        set_epoch(plain, epoch)
        expected[epoch] = images_of(plain)
    got = []
    for epoch in (0, 1, 2, 5):
        set_epoch(persistent, epoch)
        if epoch == 1:
            next(iter(persistent))  # a pass broken off: the stream closes
        got.append(images_of(persistent))
    persistent.close()
    for epoch, images in zip((0, 1, 2, 5), got, strict=True):
        assert len(images) == len(expected[epoch]) == 6
        assert all(np.array_equal(a, b) for a, b in zip(images, expected[epoch], strict=True)), epoch
    assert not all(np.array_equal(a, b) for a, b in zip(expected[0], expected[1])), "epochs differ"


def workers_of_a_pass(loader):
    """The loader's worker processes, seen mid-pass."""
    for i, _ in enumerate(loader):
        if i == 1:
            workers = set(process_tree(os.getpid())[1:])
    return workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
@LOADERS
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "plain"])
def test_persistent_workers_live_on_and_load_the_next_epoch_ahead(tmp_path, data, create_dataloader, persistent):
    loader, dataset = augmented_loader(create_dataloader, data, persistent)
    notes = tmp_path / "loaded.txt"
    noting(dataset, notes)
    first = workers_of_a_pass(loader)
    deadline = time.monotonic() + 60
    while persistent and "(1, " not in notes.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    ahead = "(1, " in notes.read_text()  # an item of epoch 1, loaded before its pass began
    second = workers_of_a_pass(loader)
    loader.close()
    assert len(first) >= 2
    assert ahead == persistent and (first == second) == persistent, (ahead, first, second)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
@LOADERS
def test_a_killed_worker_is_an_error_not_a_hang(data, create_dataloader):
    """A worker killed mid-epoch (the kernel's OOM killer) loses the batches it held. The consumer gets an error,
    and the next pass starts new workers."""
    loader, _ = create_dataloader(data["train"], 128, 4, data["nc"], workers=2, persistent=True)
    with pytest.raises(RuntimeError, match="worker"):
        for i, _ in enumerate(loader):
            if i == 0:
                # Workers are the fork server's children, the test's grandchildren.
                workers = [p for p in process_tree(os.getpid()) if parent_of(parent_of(p)) == os.getpid()]
                os.kill(workers[0], signal.SIGKILL)
    assert len(list(loader)) == 6
    loader.close()


@pytest.mark.parametrize("error", [ConnectionRefusedError, ConnectionResetError, EOFError])
def test_a_batch_lost_with_its_pytorch_worker_is_a_worker_error(data, monkeypatch, error):
    """A worker killed after it queued a batch takes with it the file descriptors of the batch's tensors, and torch
    fails to fetch them in one of these ways, depending on when the worker died (the test above meets them now and
    then), before its own check for ended workers."""

    def fetch_fails(self):
        raise error

    loader, _ = pytorch_loader(data["train"], 64, 4, data["nc"], workers=2)
    monkeypatch.setattr(torch_dataloader._MultiProcessingDataLoaderIter, "_next_data", fetch_fails)
    with pytest.raises(RuntimeError, match="a data-loading worker ended while handing over a batch"):
        list(loader)


SMALL_SHARED_MEMORY = """
import sys, warnings
sys.path.insert(0, {root!r})
import {tree}
import numpy as np
from yolocore.config import load_data_yaml
from {tree}.utils.dataloader import create_dataloader
data = load_data_yaml({data!r})
(serial, _), (forked, _) = (create_dataloader(data["train"], 160, 8, data["nc"], workers=w) for w in (0, 2))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for a, b in zip(serial, forked, strict=True):
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
print(sum("/dev/shm" in str(w.message) for w in caught), "warnings")
"""


def with_small_shared_memory(command):
    """command in a mount namespace of its own, whose /dev/shm holds 512 KB (a batch of 8 images of 160 px: 600 KB)."""
    return ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=512k tmpfs /dev/shm && exec {command}"]


def can_shrink_shared_memory():
    return shutil.which("unshare") is not None and subprocess.run(with_small_shared_memory("true"),
                                                                  stderr=subprocess.DEVNULL).returncode == 0


@pytest.mark.skipif(not can_shrink_shared_memory(), reason="needs unshare and the right to mount (root)")
@pytest.mark.parametrize("tree", ["YOLOv5Pytorch", "YOLOv5Jittor"])
def test_batches_too_large_for_shared_memory_arrive_through_pipes(tmp_path, data, tree):
    """/dev/shm is 64 MB in a Docker container, too small for a few batches of 32 images of 512 px. The PyTorch
    tree's trainer then waited for good: torch's queue-feeding thread in the worker failed to move the batch there
    and dropped it. Both trees now send such batches through pipes, and warn."""
    script = tmp_path / "script.py"
    script.write_text(SMALL_SHARED_MEMORY.format(root=str(Path(__file__).resolve().parents[2]), tree=tree,
                                                 data=str(data["yaml_file"])))
    run = subprocess.Popen(with_small_shared_memory(shlex.join([sys.executable, str(script)])), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = run.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a hung loader's workers too
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, stderr
    assert int(stdout.split()[-2]) >= 1, stdout
