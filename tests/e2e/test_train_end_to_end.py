"""End-to-end runs of each tree's train.py, val.py and detect.py on tiny synthetic data (CPU, seconds each; the
Jittor tree's first run compiles its kernels for these shapes, later runs take them from its cache)."""
import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import YOLOv5Jittor.utils.checkpoint as jittor_checkpoint
import YOLOv5Pytorch.utils.checkpoint as pytorch_checkpoint
from yolocore.config import ConfigError, load_data_yaml, load_hyp, save_yaml
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training import loop
from yolocore.training.run import resume_options
from YOLOv5Jittor import detect as jittor_detect
from YOLOv5Jittor import export as jittor_export
from YOLOv5Jittor import train as jittor_train
from YOLOv5Jittor import val as jittor_val
from YOLOv5Pytorch import detect as pytorch_detect
from YOLOv5Pytorch import export as pytorch_export
from YOLOv5Pytorch import train as pytorch_train
from YOLOv5Pytorch import val as pytorch_val

TREES = {
    "pytorch": SimpleNamespace(train=pytorch_train, val=pytorch_val, detect=pytorch_detect, export=pytorch_export,
                               ckpt=pytorch_checkpoint, array_type=torch.Tensor),
    "jittor": SimpleNamespace(train=jittor_train, val=jittor_val, detect=jittor_detect, export=jittor_export,
                              ckpt=jittor_checkpoint, array_type=np.ndarray),
}
RUN_FILES = ("results.csv", "results.png", "opt.yaml", "hyp.yaml", "labels.jpg", "train_batch0.jpg",
             "val_batch0_labels.jpg", "val_batch0_pred.jpg", "confusion_matrix.png", "per_class.csv", "coco.csv",
             "annotations.json", "predictions.json")


@pytest.fixture(scope="module", params=list(TREES))
def tree(request):
    return TREES[request.param]


def weights(run, name, tree):
    return run / "weights" / f"{name}{tree.ckpt.SUFFIX}"


def assert_run_files(run, tree):
    for f in RUN_FILES:
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    for name in ("last", "best"):
        assert weights(run, name, tree).is_file(), name
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard event files"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=1))


def run_train(tree, tmp_path, data, *args, name="exp"):
    argv = ["--data", data, "--imgsz", "64", "--batch-size", "8", "--workers", "0", "--hyp",
            str(tree.train.TREE / "hyp.scratch-low.yaml"), "--project", str(tmp_path), "--name", name, *args]
    return tree.train.train(tree.train.parse_opt(argv))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, data, tree):
    return run_train(tree, tmp_path_factory.mktemp("teacher"), data, "--cfg", "yolov5n.yaml", "--epochs", "1")


def test_one_epoch_writes_every_output(teacher_run, tree):
    assert_run_files(teacher_run, tree)
    rows = read_csv(teacher_run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0]
    assert float(rows[0]["train/box_loss"]) > 0
    ckpt = tree.ckpt.load_checkpoint(weights(teacher_run, "best", tree))
    assert ckpt["names"] == ["airplane", "ship", "storage-tank", "tennis-court", "small-vehicle"]
    assert all(isinstance(v, tree.array_type) for v in ckpt["model"].values())
    assert ckpt["epoch"] == 0 and ckpt["opt"]["imgsz"] == 64
    assert ckpt["training"]["epochs"] == 1 and ckpt["training"]["seconds"] > 0
    assert ckpt["training"]["device"].startswith("CPU, ")


def test_cached_images_train_exactly_as_the_image_files_do(tmp_path, data, tree, teacher_run):
    run = run_train(tree, tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "1", "--cache")
    assert read_csv(run / "results.csv") == read_csv(teacher_run / "results.csv")
    assert sorted(p.name for p in Path(data).parent.glob("labels/*.bin")) == ["train.images-64-linear.bin",
                                                                            "val.images-64-area.bin"]


def interrupt_at(monkeypatch, tree, epoch):
    real = loop.train_one_epoch

    def crashing(run, e, backend):
        if e == epoch:
            raise KeyboardInterrupt
        return real(run, e, backend)

    monkeypatch.setattr(loop, "train_one_epoch", crashing)


def test_resume_continues_a_killed_run_exactly(tmp_path, data, tree, monkeypatch, capsys):
    full = run_train(tree, tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "3", "--noval", name="full")
    interrupt_at(monkeypatch, tree, 2)
    with pytest.raises(KeyboardInterrupt):
        run_train(tree, tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "3", "--noval", name="killed")
    killed = tmp_path / "killed"
    before = tree.ckpt.load_checkpoint(weights(killed, "last", tree))
    assert before["epoch"] == 1 and before["training"]["epochs"] == 2
    # As a tree from before --noamp wrote it: the run keeps its own precision, whatever the resuming command says.
    older = {**before, "opt": {k: v for k, v in before["opt"].items() if k != "noamp"}}
    tree.ckpt.save_checkpoint({k: v for k, v in older.items() if k != "path"}, weights(killed, "last", tree))
    assert not resume_options(tree.train.parse_opt(["--resume", str(killed), "--noamp"]), tree.train)[0].noamp
    monkeypatch.undo()
    capsys.readouterr()
    tree.train.train(tree.train.parse_opt(["--resume", str(killed), "--workers", "0"]))  # the run folder will do
    assert "\n1 epochs completed in " in capsys.readouterr().out  # the epochs this process trained
    assert [int(r["epoch"]) for r in read_csv(killed / "results.csv")] == [0, 1, 2]
    a = tree.ckpt.load_checkpoint(weights(full, "last", tree))
    b = tree.ckpt.load_checkpoint(weights(killed, "last", tree))
    assert b["epoch"] == 2
    # The resumed run's record continues the checkpoint's: the lost epoch counts nowhere.
    assert b["training"]["epochs"] == 3 and b["training"]["seconds"] > before["training"]["seconds"]
    assert b["training"]["device"] == before["training"]["device"]
    assert_same_state(a, b, ("model", "ema"))


def assert_same_state(a, b, parts):
    """Bit for bit: the seed studies' runs are killed and resumed across sessions, and a resume that restored less
    than it saved would move the resumed tree's runs (docs/protocol.md)."""
    for part in parts:
        assert a[part].keys() == b[part].keys(), part
        for k, v in a[part].items():
            np.testing.assert_array_equal(np.asarray(b[part][k]), np.asarray(v), err_msg=f"{part} {k}")


def test_resume_alone_continues_the_newest_run_of_the_project(tmp_path, data, tree, monkeypatch):
    with pytest.raises(FileNotFoundError, match=f"no last{tree.ckpt.SUFFIX} found under {tmp_path}"):
        tree.train.train(tree.train.parse_opt(["--resume", "--project", str(tmp_path), "--workers", "0"]))
    interrupt_at(monkeypatch, tree, 1)
    for name in ("older", "newer"):
        with pytest.raises(KeyboardInterrupt):
            run_train(tree, tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "2", "--noval", name=name)
    monkeypatch.undo()
    tree.train.train(tree.train.parse_opt(["--resume", "--project", str(tmp_path), "--workers", "0"]))
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "newer" / "results.csv")] == [0, 1]
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "older" / "results.csv")] == [0]


def test_weights_choose_the_model_unless_cfg_does_and_resume_rebuilds_it(tmp_path, data, tree, teacher_run, narrow_cfg,
                                                                        monkeypatch):
    """As ultralytics: --weights alone trains its checkpoint's model (the teacher's yolov5n, not the default
    yolov5s), --cfg overrides it and takes what fits. A killed run resumes with its own model either way."""
    teacher = str(weights(teacher_run, "best", tree))
    interrupt_at(monkeypatch, tree, 1)
    with pytest.raises(KeyboardInterrupt):
        run_train(tree, tmp_path, data, "--weights", teacher, "--epochs", "2", "--noval")
    monkeypatch.undo()
    run = tmp_path / "exp"
    tree.train.train(tree.train.parse_opt(["--resume", str(weights(run, "last", tree)), "--workers", "0"]))
    assert [int(r["epoch"]) for r in read_csv(run / "results.csv")] == [0, 1]
    assert tree.ckpt.load_checkpoint(weights(run, "last", tree))["yaml"]["width_multiple"] == 0.25
    narrow = run_train(tree, tmp_path, data, "--weights", teacher, "--cfg", narrow_cfg, "--epochs", "1", "--noval",
                       name="narrow")
    assert tree.ckpt.load_checkpoint(weights(narrow, "last", tree))["yaml"]["width_multiple"] == 0.125


def test_with_noval_the_validated_last_epoch_is_best_even_at_fitness_0(tmp_path, data, tree, narrow_cfg,
                                                                        monkeypatch):
    validate = tree.train.validate
    real_run = validate.run

    def scores_nothing(*args, **kwargs):  # the epoch's validation of a model that finds nothing yet
        return ((0.0,) * 7, np.zeros(5)) if "compute_loss" in kwargs else real_run(*args, **kwargs)

    monkeypatch.setattr(validate, "run", scores_nothing)
    run = run_train(tree, tmp_path, data, "--cfg", narrow_cfg, "--epochs", "2", "--noval")
    assert [row["metrics/mAP_0.5"] for row in read_csv(run / "results.csv")] == ["nan", "0"]
    assert tree.ckpt.load_checkpoint(weights(run, "best", tree))["epoch"] == 1


def test_a_new_run_in_a_reused_folder_keeps_no_records_of_the_old_one(tmp_path, data, tree, teacher_run, narrow_cfg,
                                                                      monkeypatch):
    run = run_train(tree, tmp_path, data, "--cfg", narrow_cfg, "--epochs", "2", "--noval")
    assert (run / "per_class.csv").is_file() and len(read_csv(run / "results.csv")) == 2
    interrupt_at(monkeypatch, tree, 0)
    with pytest.raises(KeyboardInterrupt):
        run_train(tree, tmp_path, data, "--cfg", narrow_cfg, "--epochs", "2", "--noval", "--exist-ok")
    assert not (run / "per_class.csv").exists(), "the old run's final validation would mark this one finished"
    assert not (run / "coco.csv").exists()
    assert not (run / "results.csv").exists()
    monkeypatch.undo()
    kd = run_train(tree, tmp_path, data, "--mode", "KD", "--teacher", str(weights(teacher_run, "best", tree)),
                   "--cfg", narrow_cfg, "--epochs", "1", "--exist-ok")
    assert kd == run and [int(r["epoch"]) for r in read_csv(run / "results.csv")] == [0]
    assert "train/fgd_loss" in read_csv(run / "results.csv")[0]


def test_resume_of_a_finished_run_is_refused(teacher_run, tree):
    with pytest.raises(ValueError, match="already finished"):
        tree.train.train(tree.train.parse_opt(["--resume", str(weights(teacher_run, "last", tree)), "--workers", "0"]))


def test_kd_run_logs_fgd_terms_and_resumes(tmp_path, data, tree, teacher_run, narrow_cfg, monkeypatch):
    teacher = str(weights(teacher_run, "best", tree))
    kd = ("--mode", "KD", "--cfg", narrow_cfg, "--teacher", teacher, "--epochs", "2")
    full = run_train(tree, tmp_path, data, *kd, "--noval", name="full")
    interrupt_at(monkeypatch, tree, 1)
    with pytest.raises(KeyboardInterrupt):
        run_train(tree, tmp_path, data, *kd)
    run = tmp_path / "exp"
    first = tree.ckpt.load_checkpoint(weights(run, "last", tree))
    align = {k: np.asarray(v) for k, v in first["fgd"].items() if k.startswith("align.")}
    assert align and first["kd_layers"] == [17, 20, 23]
    monkeypatch.undo()
    tree.train.train(tree.train.parse_opt(["--resume", str(weights(run, "last", tree)), "--workers", "0"]))
    rows = read_csv(run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:
        terms = [float(r[f"train/fgd_{t}"]) for t in ("fg", "bg", "mask", "relation")]
        assert float(r["train/fgd_loss"]) > 0
        assert sum(terms) == pytest.approx(float(r["train/fgd_loss"]), rel=1e-3)
    last = tree.ckpt.load_checkpoint(weights(run, "last", tree))
    assert any(not np.array_equal(np.asarray(last["fgd"][k]), v) for k, v in align.items()), "align convs untrained"
    # Validation does not touch the training state, so the run validated each epoch ends as --noval's does.
    assert_same_state(tree.ckpt.load_checkpoint(weights(full, "last", tree)), last, ("model", "ema", "fgd"))
    assert_run_files(run, tree)
    events = EventAccumulator(str(run))
    events.Reload()
    for tag in ("train/fgd_loss", "train/fgd_relation", "metrics/mAP_0.5:0.95", "x/lr0"):
        assert [s.step for s in events.Scalars(tag)] == [0, 1], tag  # the resumed epoch in a second event file
    onnx_path = tree.export.main(tree.export.parse_opt(["--weights", str(weights(run, "best", tree)), "--imgsz", "64"]))
    initializers = [t.name for t in onnx.load(str(onnx_path)).graph.initializer]
    assert initializers and not [n for n in initializers if "align" in n or "gc_" in n], "the student alone"
    results = tree.val.main(tree.val.parse_opt(["--weights", str(weights(run, "best", tree)), "--data", data,
                                                "--imgsz", "64", "--workers", "0", "--project", str(tmp_path),
                                                "--name", "val_kd"]))
    assert all(0 <= x <= 1 for x in results[:4]), "a KD checkpoint must evaluate like a student checkpoint"


def test_kd_at_kd_weight_0_trains_the_student_as_plain_training_does(tmp_path, data, tree, teacher_run):
    """A seed fixes the initial weights and the batches in both modes, so the FGD student differs from the plain
    student of its seed by the FGD term alone: the study's comparison by seed rests on this."""
    hyp = load_hyp(tree.train.TREE / "hyp.scratch-low.yaml")
    hyp["kd_weight"] = 0.0
    save_yaml(tmp_path / "hyp.yaml", hyp)
    common = ("--cfg", "yolov5n.yaml", "--epochs", "2", "--seed", "3", "--noval", "--hyp", str(tmp_path / "hyp.yaml"))
    plain = run_train(tree, tmp_path, data, *common, name="plain")
    kd = run_train(tree, tmp_path, data, *common, "--mode", "KD", "--teacher", str(weights(teacher_run, "best", tree)),
                   name="kd")
    a, b = (tree.ckpt.load_checkpoint(weights(run, "last", tree)) for run in (plain, kd))
    assert b["fgd"] and a["model"].keys() == b["model"].keys()
    # PyTorch agrees bit for bit; Jittor to float rounding (its fused kernels sum the FGD branch's zero gradients
    # and the optimizer's norm over more parameters in another order). Another start or batch order moves the
    # weights by 1e-3 and more.
    for k, v in a["model"].items():
        np.testing.assert_allclose(np.asarray(b["model"][k]), np.asarray(v), rtol=1e-4, atol=1e-6, err_msg=k)


def test_kd_weight_falls_to_its_final_fraction(tmp_path, data, tree, teacher_run):
    hyp = load_hyp(tree.train.TREE / "hyp.scratch-low.yaml")
    hyp["kd_weightf"] = 0.0
    save_yaml(tmp_path / "hyp.yaml", hyp)
    run = run_train(tree, tmp_path, data, "--cfg", "yolov5n.yaml", "--epochs", "2", "--noval", "--hyp",
                    str(tmp_path / "hyp.yaml"), "--mode", "KD", "--teacher", str(weights(teacher_run, "best", tree)))
    first, last = (float(row["train/fgd_loss"]) for row in read_csv(run / "results.csv"))
    assert first > 0 and last == 0


def test_kd_refuses_a_teacher_with_other_classes(tmp_path, data, tree, teacher_run):
    ckpt = tree.ckpt.load_checkpoint(weights(teacher_run, "best", tree))
    ckpt["names"] = ["a", "b", "c", "d", "e"]
    other = tmp_path / f"other{tree.ckpt.SUFFIX}"
    tree.ckpt.save_checkpoint(ckpt, other)
    with pytest.raises(ValueError, match="classes"):
        run_train(tree, tmp_path, data, "--mode", "KD", "--cfg", "yolov5n.yaml", "--teacher", str(other),
                  "--epochs", "1")


def test_kd_refuses_a_hyp_without_the_fgd_weights(tmp_path, data, tree, teacher_run):
    shipped = load_hyp(tree.train.TREE / "hyp.scratch-low.yaml")
    plain = tmp_path / "plain.yaml"
    save_yaml(plain, {k: v for k, v in shipped.items() if not k.startswith(("kd_", "fgd_"))})
    with pytest.raises(ConfigError, match="plain.yaml.*--mode KD.*kd_weight"):
        run_train(tree, tmp_path, data, "--mode", "KD", "--cfg", "yolov5n.yaml", "--hyp", str(plain),
                  "--teacher", str(weights(teacher_run, "best", tree)), "--epochs", "1")
    assert not (tmp_path / "exp").exists(), "a failed start must not leave a run folder behind"


def test_val_and_detect_run_on_a_checkpoint(tmp_path, data, tree, teacher_run):
    best = str(weights(teacher_run, "best", tree))
    results = tree.val.main(tree.val.parse_opt(["--weights", best, "--data", data, "--imgsz", "64", "--workers", "0",
                                                "--project", str(tmp_path), "--name", "val"]))
    assert len(results) == 7 and all(0 <= x <= 1 for x in results[:4])
    source = tree.ckpt.load_checkpoint(best)["opt"]["data"].replace("synthetic.yaml", "images/val")
    out = tree.detect.main(tree.detect.parse_opt(["--weights", best, "--source", source, "--imgsz", "64",
                                                  "--save-txt", "--save-conf", "--conf-thres", "0.0001",
                                                  "--project", str(tmp_path)]))
    assert len(list(out.glob("*.jpg"))) == 8
    lines = [ln.split() for f in (out / "labels").glob("*.txt") for ln in f.read_text().splitlines()]
    assert lines and all(len(ln) == 6 and 0 <= float(ln[1]) <= 1 for ln in lines)


def test_detect_keeps_same_named_images_of_different_folders_apart(tmp_path, data, tree, teacher_run, capsys):
    # NWPU's "positive image set/001.jpg" and "negative image set/001.jpg" are such a pair
    image = sorted((Path(data).parent / "images" / "val").glob("*.jpg"))[0]
    for folder in ("positive", "negative"):
        (tmp_path / "source" / folder).mkdir(parents=True)
        shutil.copy(image, tmp_path / "source" / folder / "001.jpg")
    (tmp_path / "source" / "negative" / "002.jpg").write_bytes(b"not a jpeg")
    out = tree.detect.main(tree.detect.parse_opt(["--weights", str(weights(teacher_run, "best", tree)), "--source",
                                                  str(tmp_path / "source"), "--imgsz", "64", "--save-txt",
                                                  "--project", str(tmp_path)]))
    printed = capsys.readouterr().out
    assert "002.jpg: cannot read this image, skipped" in printed and "in 2 images (1 unreadable, skipped)" in printed
    assert sorted(p.name for p in out.glob("*.jpg")) == ["001.jpg", "001_2.jpg"]
    assert sorted(p.name for p in (out / "labels").glob("*.txt")) == ["001.txt", "001_2.txt"]


def test_data_the_loaders_refuse_leave_no_run_folder(tmp_path, data, tree):
    no_val_images = tmp_path / "data.yaml"
    (tmp_path / "empty").mkdir()
    save_yaml(no_val_images, dict(load_data_yaml(data), val=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="no images found"):
        run_train(tree, tmp_path, str(no_val_images), "--epochs", "1")
    with pytest.raises(ValueError, match="imgsz 72 must be a multiple"):
        run_train(tree, tmp_path, data, "--imgsz", "72", "--epochs", "1")
    assert not (tmp_path / "exp").exists(), "a failed start must not leave a run folder behind"


def test_val_evaluates_a_test_split_when_the_data_names_one(tmp_path, data, tree, teacher_run):
    split = load_data_yaml(data)
    with_test = tmp_path / "with_test.yaml"
    save_yaml(with_test, dict(split, test=split["val"]))

    def val(data_yaml, task):
        return tree.val.main(tree.val.parse_opt(["--weights", str(weights(teacher_run, "best", tree)), "--data",
                                                 str(data_yaml), "--task", task, "--imgsz", "64", "--workers", "0",
                                                 "--project", str(tmp_path), "--name", task]))

    assert val(with_test, "test") == val(with_test, "val")
    with pytest.raises(ValueError, match="--task test: .*synthetic.yaml names no test split"):
        val(data, "test")


def test_val_and_detect_refuse_an_imgsz_off_the_stride_and_leave_no_folder(tmp_path, data, tree, teacher_run):
    best = str(weights(teacher_run, "best", tree))
    common = ["--weights", best, "--imgsz", "72", "--project", str(tmp_path)]
    with pytest.raises(ValueError, match="imgsz 72 must be a multiple"):
        tree.val.main(tree.val.parse_opt([*common, "--data", data, "--workers", "0"]))
    with pytest.raises(ValueError, match="imgsz 72 must be a multiple"):
        tree.detect.main(tree.detect.parse_opt([*common, "--source", str(teacher_run)]))
    assert not (tmp_path / "exp").exists(), "a failed start must not leave an output folder behind"


def test_missing_data_and_weights_are_clear_errors(tmp_path, data, tree):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        run_train(tree, tmp_path, str(tmp_path / "nope.yaml"), "--epochs", "1")
    assert not (tmp_path / "exp").exists(), "a failed start must not leave a run folder behind"
    missing = tmp_path / f"missing{tree.ckpt.SUFFIX}"
    with pytest.raises(FileNotFoundError, match=missing.name):
        tree.val.main(tree.val.parse_opt(["--weights", str(missing), "--data", data]))
