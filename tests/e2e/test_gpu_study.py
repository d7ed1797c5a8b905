"""study.py --gpu, the full protocol in one call on one GPU, run end to end on the CPU at tiny settings (the same
code path: both phases of runs side by side, the report, the packed files), and train.py --val-period."""
import csv
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from yolocore.config import ROOT
from yolocore.data.synthetic import make_synthetic_dataset
from YOLOv5Pytorch import train
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=1))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_val_period_validates_and_checkpoints_every_n_epochs_and_picks_best_among_them(tmp_path, data, monkeypatch):
    real_run, scores = train.validate.run, iter([0.5, 0.1])  # epoch 2 scores better than epoch 3

    def scored(*args, **kwargs):  # the epochs' validations score as listed; the final one is real
        if "compute_loss" not in kwargs:
            return real_run(*args, **kwargs)
        s = next(scores)
        return (s, s, s, s, 0.0, 0.0, 0.0), np.zeros(5)

    monkeypatch.setattr(train.validate, "run", scored)
    real_save, saved = train.save_checkpoint, []

    def recorded(ckpt, path):
        saved.append((path.stem, ckpt["epoch"]))
        real_save(ckpt, path)

    monkeypatch.setattr(train, "save_checkpoint", recorded)
    run = train.train(train.parse_opt(["--data", data, "--imgsz", "64", "--batch-size", "8", "--workers", "0",
                                       "--cfg", "yolov5n.yaml", "--epochs", "3", "--val-period", "2",
                                       "--project", str(tmp_path)]))
    assert [r["metrics/mAP_0.5"] for r in read_csv(run / "results.csv")] == ["nan", "0.5", "0.1"]
    assert load_checkpoint(run / "weights" / "best.pt")["epoch"] == 1
    assert saved == [("best", 1), ("last", 1), ("last", 2)], "checkpoints with the validations, not every epoch"
    assert (run / "per_class.csv").is_file()


def test_gpu_study_runs_both_phases_side_by_side_and_packs_what_comes_back(tmp_path, data):
    project, out = tmp_path / "study", tmp_path / "out"
    subprocess.run([sys.executable, str(ROOT / "YOLOv5Pytorch" / "study.py"), "--gpu", "--data", data,
                    "--epochs", "2", "--imgsz", "64", "--batch-size", "4", "--teacher-cfg", "yolov5n.yaml",
                    "--student-width", "0.125", "--device", "cpu", "--val-period", "2",
                    "--project", str(project), "--pack", str(out)],
                   check=True, cwd=tmp_path, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    runs = ("teacher", "student", "student_rerun", "student_fgd")
    for run in runs:
        assert (project / run / "per_class.csv").is_file(), run
        assert [r["metrics/mAP_0.5"] != "nan" for r in read_csv(project / run / "results.csv")] == [False, True]
    started = {run: (project / run / "opt.yaml").stat().st_mtime for run in runs}
    ended = {run: (project / run / "per_class.csv").stat().st_mtime for run in runs}
    assert started["student"] < ended["teacher"] and started["student_rerun"] < ended["teacher"], "side by side"
    assert started["student_fgd"] > ended["teacher"], "the FGD student waits for the teacher's best weights"
    report = (project / "study.md").read_text()
    rows = ("| teacher |", "| student |", "| FGD student |", "| student again, weights moved by 1e-7 |")
    assert all(row in report for row in rows) and "validated every 2 epochs" in report

    packed = sorted(f.name for f in out.iterdir())
    assert packed == ["study.md", "study.tar.gz", "weights-1.tar"]  # flat, few files: what the GPU machine returns
    with tarfile.open(out / "study.tar.gz") as tar:
        names = tar.getnames()
    assert "study/teacher/results.csv" in names and "study/logs/teacher.log" in names
    assert not [n for n in names if "/weights" in n]
    with tarfile.open(out / "weights-1.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    for run in runs:
        original = load_checkpoint(project / run / "weights" / "best.pt")
        back = load_checkpoint(tmp_path / "back" / "study" / run / "weights" / "best.pkl")
        assert back["optimizer"] is None and back["epoch"] == original["epoch"] == 1
        for k, v in original["ema"].items():  # the EMA weights, floats in float16, counters as they were
            if v.is_floating_point():
                assert back["model"][k].dtype == torch.float16
                np.testing.assert_allclose(back["model"][k].float().numpy(), v.numpy(), rtol=1e-3, atol=1e-4)
            else:
                assert back["model"][k].dtype == v.dtype and bool((back["model"][k] == v).all())
