"""Both trees' data-loading workers (yolocore.workers): started from a small fork server, they hold none of the
trainer's memory, and an error in one reaches the training loop."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from processes import process_tree, resident_mb

import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags before anything imports jittor)
from yolocore.config import load_data_yaml
from yolocore.synthetic import make_synthetic_dataset
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
    script.write_text(SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), marks=str(marks), tree=tree,
                                    data=str(data["yaml_file"])))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    assert marks.read_text().split() == ["__main__"]
