"""End-to-end runs of the Jittor tree's train.py, val.py and detect.py on tiny synthetic data (CPU; the first run
compiles Jittor's kernels for these shapes, later runs take them from its cache)."""
import csv

import numpy as np
import pytest
import yaml

from yolocore.synthetic import make_synthetic_dataset
from YOLOv5Jittor import detect, train, val
from YOLOv5Jittor.utils.checkpoint import load_checkpoint, save_checkpoint

RUN_FILES = ("results.csv", "results.png", "opt.yaml", "hyp.yaml", "labels.jpg", "train_batch0.jpg",
             "val_batch0_labels.jpg", "val_batch0_pred.jpg", "confusion_matrix.png", "weights/last.pkl",
             "weights/best.pkl")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=1))


@pytest.fixture(scope="module")
def narrow_cfg(tmp_path_factory):
    """A student half as wide as yolov5n, so FGD needs its align convs."""
    cfg = yaml.safe_load(open(train.ROOT / "yolocore" / "models" / "yolov5n.yaml"))
    cfg["width_multiple"] = 0.125
    path = tmp_path_factory.mktemp("cfg") / "yolov5p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def run_train(tmp_path, data, *args, name="exp"):
    argv = ["--data", data, "--imgsz", "64", "--batch-size", "8", "--workers", "0", "--hyp",
            str(train.TREE / "hyp.scratch-low.yaml"), "--project", str(tmp_path), "--name", name, *args]
    return train.train(train.parse_opt(argv))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, data):
    return run_train(tmp_path_factory.mktemp("teacher"), data, "--cfg", "yolov5n.yaml", "--epochs", "1")


def test_one_epoch_writes_every_output(teacher_run):
    for f in RUN_FILES:
        assert (teacher_run / f).is_file() and (teacher_run / f).stat().st_size > 0, f
    rows = read_csv(teacher_run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0]
    assert float(rows[0]["train/box_loss"]) > 0
    ckpt = load_checkpoint(teacher_run / "weights" / "best.pkl")
    assert ckpt["names"] == ["airplane", "ship", "storage-tank", "tennis-court", "small-vehicle"]
    assert all(isinstance(v, np.ndarray) for v in ckpt["model"].values())
    assert ckpt["epoch"] == 0 and ckpt["opt"]["imgsz"] == 64


def interrupt_at(monkeypatch, epoch):
    real = train.train_one_epoch

    def crashing(ctx, e):
        if e == epoch:
            raise KeyboardInterrupt
        return real(ctx, e)

    monkeypatch.setattr(train, "train_one_epoch", crashing)


def test_resume_continues_a_killed_run_exactly(tmp_path, data, monkeypatch):
    full = run_train(tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "3", "--noval", name="full")
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "3", "--noval", name="killed")
    killed = tmp_path / "killed"
    assert load_checkpoint(killed / "weights" / "last.pkl")["epoch"] == 1
    monkeypatch.undo()
    train.train(train.parse_opt(["--resume", str(killed / "weights" / "last.pkl"), "--workers", "0"]))
    assert [int(r["epoch"]) for r in read_csv(killed / "results.csv")] == [0, 1, 2]
    a, b = load_checkpoint(full / "weights" / "last.pkl"), load_checkpoint(killed / "weights" / "last.pkl")
    assert b["epoch"] == 2
    for k, v in a["ema"].items():
        np.testing.assert_allclose(b["ema"][k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_resume_of_a_finished_run_is_refused(teacher_run):
    with pytest.raises(ValueError, match="already finished"):
        train.train(train.parse_opt(["--resume", str(teacher_run / "weights" / "last.pkl"), "--workers", "0"]))


def test_kd_run_logs_fgd_terms_and_resumes(tmp_path, data, teacher_run, narrow_cfg, monkeypatch):
    teacher = str(teacher_run / "weights" / "best.pkl")
    interrupt_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path, data, "--mode", "KD", "--cfg", narrow_cfg, "--teacher", teacher, "--epochs", "2")
    run = tmp_path / "exp"
    first = load_checkpoint(run / "weights" / "last.pkl")
    align = {k: v for k, v in first["fgd"].items() if k.startswith("align.")}
    assert align and first["kd_layers"] == [17, 20, 23]
    monkeypatch.undo()
    train.train(train.parse_opt(["--resume", str(run / "weights" / "last.pkl"), "--workers", "0"]))
    rows = read_csv(run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:
        terms = [float(r[f"train/fgd_{t}"]) for t in ("fg", "bg", "mask", "relation")]
        assert float(r["train/fgd_loss"]) > 0
        assert sum(terms) == pytest.approx(float(r["train/fgd_loss"]), rel=1e-3)
    last = load_checkpoint(run / "weights" / "last.pkl")
    assert any(not np.array_equal(last["fgd"][k], v) for k, v in align.items()), "align convs were not trained"
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    results = val.main(val.parse_opt(["--weights", str(run / "weights" / "best.pkl"), "--data", data, "--imgsz", "64",
                                      "--workers", "0", "--project", str(tmp_path), "--name", "val_kd"]))
    assert all(0 <= x <= 1 for x in results[:4]), "a KD checkpoint must evaluate like a student checkpoint"


def test_kd_refuses_a_teacher_with_other_classes(tmp_path, data, teacher_run):
    ckpt = load_checkpoint(teacher_run / "weights" / "best.pkl")
    ckpt["names"] = ["a", "b", "c", "d", "e"]
    save_checkpoint(ckpt, tmp_path / "other.pkl")
    with pytest.raises(ValueError, match="classes"):
        run_train(tmp_path, data, "--mode", "KD", "--cfg", "yolov5n.yaml", "--teacher", str(tmp_path / "other.pkl"),
                  "--epochs", "1")


def test_val_and_detect_run_on_a_checkpoint(tmp_path, data, teacher_run):
    weights = str(teacher_run / "weights" / "best.pkl")
    results = val.main(val.parse_opt(["--weights", weights, "--data", data, "--imgsz", "64", "--workers", "0",
                                      "--project", str(tmp_path), "--name", "val"]))
    assert len(results) == 7 and all(0 <= x <= 1 for x in results[:4])
    source = load_checkpoint(weights)["opt"]["data"].replace("synthetic.yaml", "images/val")
    out = detect.main(detect.parse_opt(["--weights", weights, "--source", source, "--imgsz", "64", "--save-txt",
                                        "--save-conf", "--conf-thres", "0.0001", "--project", str(tmp_path)]))
    assert len(list(out.glob("*.jpg"))) == 8
    lines = [ln.split() for f in (out / "labels").glob("*.txt") for ln in f.read_text().splitlines()]
    assert lines and all(len(ln) == 6 and 0 <= float(ln[1]) <= 1 for ln in lines)


def test_missing_data_and_weights_are_clear_errors(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        run_train(tmp_path, str(tmp_path / "nope.yaml"), "--epochs", "1")
    assert not (tmp_path / "exp").exists(), "a failed start must not leave a run folder behind"
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        val.main(val.parse_opt(["--weights", str(tmp_path / "missing.pkl"), "--data", data]))
