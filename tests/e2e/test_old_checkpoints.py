"""Checkpoints written before the shared training loop (commit 29fbbc5, tests/data/before_shared_loop, made by the
script there) still load in both trees, still start a run with --weights, and resume in the tree that wrote them:
a run of 3 epochs stopped after its first continues to its end."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import YOLOv5Jittor.utils.checkpoint as jittor_checkpoint
import YOLOv5Pytorch.utils.checkpoint as pytorch_checkpoint
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training.run import resume_options
from YOLOv5Jittor import train as jittor_train
from YOLOv5Pytorch import train as pytorch_train

OLD = Path(__file__).resolve().parents[1] / "data" / "before_shared_loop"
TREES = {"pytorch": (pytorch_train, pytorch_checkpoint, OLD / "last.pt"),
         "jittor": (jittor_train, jittor_checkpoint, OLD / "last.pkl")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The data the old runs trained on, made again: the synthetic set is a function of its arguments."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=8, n_val=4, imgsz=64, seed=1)


def moved_run(path, run_dir, data):
    """A copy of the old checkpoint in a run folder of its own, its options pointing at this test's data and
    folder. The rest of the file is as the old tree wrote it."""
    (run_dir / "weights").mkdir(parents=True)
    target = run_dir / "weights" / path.name
    if path.suffix == ".pt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        ckpt["opt"].update(data=str(data), save_dir=str(run_dir))
        torch.save(ckpt, target)
    else:
        ckpt = pickle.loads(path.read_bytes())
        ckpt["opt"].update(data=str(data), save_dir=str(run_dir))
        target.write_bytes(pickle.dumps(ckpt))
    return target


@pytest.mark.parametrize("reader", list(TREES))
@pytest.mark.parametrize("writer", list(TREES))
def test_old_checkpoints_load_in_either_tree(writer, reader):
    ckpt = TREES[reader][1].load_checkpoint(TREES[writer][2])
    assert ckpt["framework"] == writer and ckpt["epoch"] == 0 and ckpt["optimizer"]
    model = TREES[reader][1].model_from_checkpoint(ckpt)
    preds = model(torch.zeros(1, 3, 64, 64) if reader == "pytorch" else jt.zeros((1, 3, 64, 64)))[0]
    assert preds.shape[-1] == 5 + ckpt["nc"] and np.isfinite(preds.detach().numpy()).all()


@pytest.mark.parametrize("tree", list(TREES))
def test_old_checkpoints_start_and_resume_runs(tree, data, tmp_path):
    train, checkpoint, old = TREES[tree]
    started = train.train(train.parse_opt(["--weights", str(old), "--data", str(data), "--imgsz", "64",
                                           "--batch-size", "4", "--workers", "0", "--epochs", "1", "--noval",
                                           "--project", str(tmp_path), "--name", "started"]))
    assert checkpoint.load_checkpoint(started / "weights" / f"last{checkpoint.SUFFIX}")["epoch"] == 0

    last = moved_run(old, tmp_path / "resumed", data)
    opt, ckpt = resume_options(train.parse_opt(["--resume", str(last)]), train)
    assert opt.epochs == 3 and ckpt["epoch"] == 0
    train.train(train.parse_opt(["--resume", str(last), "--workers", "0"]))
    resumed = checkpoint.load_checkpoint(last)
    assert resumed["epoch"] == 2 and resumed["training"]["epochs"] == 3
    weight = "model.0.conv.weight"
    assert not np.array_equal(np.asarray(resumed["model"][weight]), np.asarray(ckpt["model"][weight]))
