"""Checkpoints across the trees: each reads the other's file and ultralytics YOLOv5's, evaluates it the same way,
converts it, and refuses files that would run code. The runs that wrote them logged the same TensorBoard tags."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt  # noqa: F401
# isort: on
import pickle
from copy import deepcopy

import numpy as np
import pytest
import torch
from detection_rows import assert_same_rows, coco_rows, label_rows
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from ultralytics_like import save_ultralytics_checkpoint

from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.evaluation.coco import read_coco_csv
from yolocore.training.checkpoints import read_checkpoint, read_torch_checkpoint
from yolocore.training.run import build_model, resume_options
from YOLOv5Jittor import convert as jt_convert
from YOLOv5Jittor import detect as jt_detect
from YOLOv5Jittor import train as jt_train
from YOLOv5Jittor import val as jt_val
from YOLOv5Jittor.KD.distiller import load_teacher as jt_load_teacher
from YOLOv5Jittor.utils.checkpoint import load_checkpoint as jt_load_checkpoint
from YOLOv5Pytorch import convert as torch_convert
from YOLOv5Pytorch import detect as torch_detect
from YOLOv5Pytorch import train as torch_train
from YOLOv5Pytorch import val as torch_val
from YOLOv5Pytorch.KD.distiller import load_teacher as torch_load_teacher
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint as torch_load_checkpoint
from YOLOv5Pytorch.utils.checkpoint import model_from_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=4))


def train_one_epoch_run(tree, project, data):
    argv = ["--data", data, "--cfg", "yolov5n.yaml", "--imgsz", "64", "--batch-size", "8", "--workers", "0",
            "--epochs", "1", "--project", str(project)]
    return tree.train(tree.parse_opt(argv)) / "weights"


@pytest.fixture(scope="module")
def torch_weights(tmp_path_factory, data):
    return train_one_epoch_run(torch_train, tmp_path_factory.mktemp("torch"), data) / "best.pt"


@pytest.fixture(scope="module")
def jt_weights(tmp_path_factory, data):
    return train_one_epoch_run(jt_train, tmp_path_factory.mktemp("jittor"), data) / "best.pkl"


def assert_same_tree(expected, actual, where="checkpoint"):
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.numpy().dtype, where
        np.testing.assert_array_equal(actual, expected.numpy(), err_msg=where)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for k in expected:
            assert_same_tree(expected[k], actual[k], f"{where}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same_tree(e, a, f"{where}[{i}]")
    else:
        assert actual == expected, where


def test_torch_checkpoints_read_without_torch_as_torch_reads_them(torch_weights):
    expected = torch.load(torch_weights, map_location="cpu", weights_only=True)
    assert expected["optimizer"]["state"], "the optimizer's momentum buffers are part of the comparison"
    assert_same_tree(expected, read_torch_checkpoint(torch_weights))


def test_both_trees_runs_write_tensorboard_events_under_the_same_tags(torch_weights, jt_weights):
    """`tensorboard --logdir runs/train` sets runs of either tree side by side: results.csv's columns as scalars,
    the first training batches as images."""
    for weights in (torch_weights, jt_weights):
        run_dir = weights.parent.parent
        columns = (run_dir / "results.csv").read_text().splitlines()[0].split(",")
        events = EventAccumulator(str(run_dir))
        events.Reload()
        tags = events.Tags()
        assert sorted(tags["scalars"]) == sorted(set(columns) - {"epoch"}), run_dir
        assert tags["images"] == ["train_batch0", "train_batch1"], run_dir
        assert [s.step for s in events.Scalars("metrics/mAP_0.5")] == [0], run_dir


@pytest.mark.slow
def test_each_tree_evaluates_the_other_trees_checkpoint_the_same(tmp_path, data, torch_weights, jt_weights):
    for weights in (torch_weights, jt_weights):
        argv = ["--weights", str(weights), "--data", data, "--imgsz", "64", "--workers", "0", "--project",
                str(tmp_path)]
        expected = np.array(torch_val.main(torch_val.parse_opt(argv)))
        actual = np.array(jt_val.main(jt_val.parse_opt(argv)))
        # P, R and mAP of a 1-epoch model are near 0: the detections compared below carry the comparison.
        np.testing.assert_allclose(actual, expected, atol=1e-3, err_msg=str(weights))


def test_a_half_precision_checkpoint_evaluates_the_same_in_both_trees(tmp_path, data, torch_weights):
    """ultralytics (and our GPU study's transfer) store weights in float16: Jittor once kept that dtype, and its
    convolutions refused float16 weights with float32 images."""
    ckpt = torch.load(torch_weights, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    torch.save({**ckpt, "model": half, "ema": half, "optimizer": None}, tmp_path / "half.pt")
    argv = ["--weights", str(tmp_path / "half.pt"), "--data", data, "--imgsz", "64", "--workers", "0", "--project",
            str(tmp_path)]
    expected = np.array(torch_val.main(torch_val.parse_opt(argv)))
    np.testing.assert_allclose(np.array(jt_val.main(jt_val.parse_opt(argv))), expected, atol=1e-3)


@pytest.mark.slow
def test_each_tree_writes_the_same_coco_files(tmp_path, data, torch_weights):
    folders = []
    for tree, name in ((torch_val, "torch"), (jt_val, "jittor")):
        tree.main(tree.parse_opt(["--weights", str(torch_weights), "--data", data, "--imgsz", "64", "--workers", "0",
                                  "--project", str(tmp_path), "--name", name, "--save-json"]))
        folders.append(tmp_path / name)
    expected, actual = folders
    assert (actual / "annotations.json").read_text() == (expected / "annotations.json").read_text()
    assert read_coco_csv(actual / "coco.csv") == pytest.approx(read_coco_csv(expected / "coco.csv"), abs=1e-3)
    assert_same_rows(coco_rows(expected), coco_rows(actual), atol=2e-3)


def test_each_tree_detects_the_same_boxes_with_the_other_trees_checkpoint(tmp_path, data, torch_weights, jt_weights):
    source = data.replace("synthetic.yaml", "images/val")
    for weights in (torch_weights, jt_weights):
        outputs = []
        for tree, name in ((torch_detect, "torch"), (jt_detect, "jittor")):
            out = tree.main(tree.parse_opt(["--weights", str(weights), "--source", source, "--imgsz", "64",
                                            "--conf-thres", "0.001", "--save-txt", "--save-conf",
                                            "--project", str(tmp_path), "--name", name]))
            outputs.append(label_rows(out))
        assert_same_rows(*outputs, atol=2e-4)


def test_convert_round_trip_keeps_the_weights_and_is_not_resumable(tmp_path, torch_weights):
    pkl = jt_convert.convert(str(torch_weights), str(tmp_path / "model.pkl"))
    pt = torch_convert.convert(str(pkl), str(tmp_path / "model.pt"))
    original, converted = torch_load_checkpoint(torch_weights), torch_load_checkpoint(pt)
    assert jt_load_checkpoint(pkl)["framework"] == "jittor" and converted["framework"] == "pytorch"
    for part in ("model", "ema"):
        for k, v in original[part].items():
            if not k.endswith("num_batches_tracked"):  # Jittor keeps no BatchNorm counter
                torch.testing.assert_close(converted[part][k], v, rtol=0, atol=0, msg=k)
    with pytest.raises(ValueError, match="not a pytorch training checkpoint"):
        resume_options(torch_train.parse_opt(["--resume", str(pt)]), torch_train)
    with pytest.raises(ValueError, match="already a .pt checkpoint"):
        torch_convert.convert(str(pt))


@pytest.mark.parametrize("tree", [torch_train, jt_train], ids=["pytorch", "jittor"])
@pytest.mark.parametrize("source", ["pytorch", "jittor"])
def test_weights_start_a_run_in_either_tree(tmp_path, data, torch_weights, jt_weights, tree, source, capsys):
    """--weights takes either tree's checkpoint; with other classes the backbone and neck transfer and the
    Detect outputs (which hold the classes) keep their fresh values. The count of transferred items is the same
    whichever tree wrote the checkpoint (Jittor's lack BatchNorm's batch counters)."""
    weights = torch_weights if source == "pytorch" else jt_weights
    ema = read_checkpoint(weights)["ema"]
    for nc in (5, 3):
        opt = tree.parse_opt(["--weights", str(weights), "--data", data, "--imgsz", "64", "--workers", "0",
                              "--epochs", "1", "--project", str(tmp_path)])
        device = torch.device("cpu") if tree is torch_train else None  # Jittor's device is global
        model = build_model(opt, {"nc": nc, "names": list("abcde")[:nc]}, device, None, tree)
        state = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        detect_outputs = {k for k in state if k.startswith("model.24.m.")}
        assert len(detect_outputs) == 6
        transferred = len(state) if nc == 5 else len(state) - len(detect_outputs)
        assert f"Transferred {transferred}/{len(state)} items" in capsys.readouterr().out
        for k, v in state.items():
            if nc == 5 or k not in detect_outputs:
                np.testing.assert_array_equal(v, ema[k], err_msg=f"nc {nc}: {k}")
            else:
                assert v.shape != ema[k].shape, k


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("loader", [torch_load_checkpoint, jt_load_checkpoint], ids=["pytorch", "jittor"])
def test_checkpoints_with_code_or_garbage_are_refused(tmp_path, loader, capsys):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": Payload(), "yaml": {}, "nc": 1, "names": ["a"]}))
    with pytest.raises(ValueError, match="evil.pkl: not a checkpoint of this project"):
        loader(evil)
    assert "this must never run" not in capsys.readouterr().out
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    with pytest.raises(ValueError, match="module.pt: not a checkpoint of this project"):
        loader(module)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="garbage.pkl"):
        loader(garbage)
    with pytest.raises(FileNotFoundError, match="nothing.pkl: checkpoint not found$"):
        loader(tmp_path / "nothing.pkl")
    (tmp_path / "best.pkl").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"best.pt: checkpoint not found \(.*best.pkl exists: the jittor tree "
                                                r"writes .pkl\)"):
        loader(tmp_path / "best.pt")


@pytest.mark.parametrize("loader", [torch_load_checkpoint, jt_load_checkpoint], ids=["pytorch", "jittor"])
def test_truncated_checkpoints_are_called_truncated(tmp_path, loader):
    # What an interrupted copy or download leaves, in each tree's format.
    ckpt = {"model": {"w": np.arange(4096, dtype=np.float32)}, "yaml": {}, "nc": 1, "names": ["a"]}
    torch.save({**ckpt, "model": {"w": torch.from_numpy(ckpt["model"]["w"])}}, tmp_path / "whole.pt")
    (tmp_path / "whole.pkl").write_bytes(pickle.dumps(ckpt))
    for name in ("whole.pt", "whole.pkl"):
        data = (tmp_path / name).read_bytes()
        for size in (len(data) // 2, 100, 0):
            cut = tmp_path / f"cut{size}_{name}"
            cut.write_bytes(data[:size])
            with pytest.raises(ValueError, match=f"cut{size}_{name}: truncated.*copy it again"):
                loader(cut)


# ---------------------------------------------------------------- ultralytics YOLOv5's own .pt files


def trained_model(weights):
    ckpt = torch_load_checkpoint(weights)
    return model_from_checkpoint(ckpt), ckpt["names"]


@pytest.fixture(scope="module", params=["v7", "v6"])
def ultralytics_weights(request, tmp_path_factory, torch_weights):
    model, names = trained_model(torch_weights)
    path = tmp_path_factory.mktemp("ultralytics") / "best.pt"
    return save_ultralytics_checkpoint(model, names, path, version=request.param)


@pytest.mark.parametrize("loader", [torch_load_checkpoint, jt_load_checkpoint], ids=["pytorch", "jittor"])
def test_ultralytics_checkpoints_read_in_both_trees(ultralytics_weights, torch_weights, loader):
    """ultralytics pickles its modules in float16: each tree reads their weights (as float32), classes and yaml
    without ultralytics' code."""
    model, names = trained_model(torch_weights)
    ckpt = loader(ultralytics_weights)
    assert ckpt["framework"] == "ultralytics" and ckpt["names"] == names and ckpt["nc"] == len(names)
    assert ckpt["yaml"] == model.yaml
    expected = model.half().float().state_dict()
    assert list(ckpt["model"]) == list(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(np.asarray(ckpt["model"][k]), v.numpy(), err_msg=k)
        assert np.asarray(ckpt["model"][k]).dtype == v.numpy().dtype, k


@pytest.mark.slow
def test_ultralytics_checkpoints_evaluate_as_their_weights_do_in_both_trees(tmp_path, data, torch_weights,
                                                                            ultralytics_weights):
    model, _ = trained_model(torch_weights)
    ckpt = torch.load(torch_weights, map_location="cpu", weights_only=True)
    half = model.half().float().state_dict()
    torch.save({**ckpt, "model": half, "ema": half, "optimizer": None}, tmp_path / "half.pt")
    results = {}
    for name, weights in (("ours", tmp_path / "half.pt"), ("ultralytics", ultralytics_weights)):
        argv = ["--weights", str(weights), "--data", data, "--imgsz", "64", "--workers", "0", "--project",
                str(tmp_path)]
        results[name, "pytorch"] = np.array(torch_val.main(torch_val.parse_opt(argv)))
        results[name, "jittor"] = np.array(jt_val.main(jt_val.parse_opt(argv)))
    np.testing.assert_array_equal(results["ultralytics", "pytorch"], results["ours", "pytorch"])
    np.testing.assert_allclose(results["ultralytics", "jittor"], results["ours", "pytorch"], atol=1e-3)


@pytest.mark.parametrize("trees", [(torch_train, torch_convert, torch_load_teacher),
                                   (jt_train, jt_convert, jt_load_teacher)], ids=["pytorch", "jittor"])
def test_ultralytics_checkpoints_start_runs_and_teach_but_do_not_resume(tmp_path, data, ultralytics_weights, trees):
    train, convert, load_teacher = trees
    ckpt = read_checkpoint(ultralytics_weights)
    opt = train.parse_opt(["--weights", str(ultralytics_weights), "--data", data, "--imgsz", "64", "--workers", "0",
                           "--epochs", "1", "--project", str(tmp_path)])
    device = torch.device("cpu") if train is torch_train else None  # Jittor's device is global
    model = build_model(opt, {"nc": ckpt["nc"], "names": ckpt["names"]}, device, None, train)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ckpt["model"][k], err_msg=k)
    teacher = load_teacher(str(ultralytics_weights), ckpt["names"], device)
    assert not teacher.training
    with pytest.raises(ValueError, match="classes"):
        load_teacher(str(ultralytics_weights), ["x", *ckpt["names"][1:]], device)
    with pytest.raises(ValueError, match=f"not a {train.FRAMEWORK} training checkpoint"):
        resume_options(train.parse_opt(["--resume", str(ultralytics_weights)]), train)
    out = convert.convert(str(ultralytics_weights), str(tmp_path / f"ours{convert.SUFFIX}"))
    converted = read_checkpoint(out)
    assert converted["framework"] == train.FRAMEWORK and converted["names"] == ckpt["names"]
    for k, v in ckpt["model"].items():
        np.testing.assert_array_equal(converted["model"][k], v, err_msg=k)


def test_an_ultralytics_last_checkpoint_gives_its_ema_weights(tmp_path, torch_weights):
    """ultralytics' last.pt holds the raw model and its EMA; like ultralytics, this project runs the EMA."""
    model, names = trained_model(torch_weights)
    raw = deepcopy(model)
    with torch.no_grad():
        for p in raw.parameters():
            p.add_(1.0)
    path = save_ultralytics_checkpoint(raw, names, tmp_path / "last.pt", ema=model)
    weights = read_checkpoint(path)["model"]
    for k, v in model.half().float().state_dict().items():
        np.testing.assert_array_equal(weights[k], v.numpy(), err_msg=k)


class Launcher(torch.nn.Module):
    """A module whose pickle calls print: a checkpoint that tries to run code when it is read."""

    def __reduce__(self):
        return (print, ("this must never run",))

    def __deepcopy__(self, memo):  # the writer copies the model; only unpickling may call print
        return self


def test_ultralytics_like_checkpoints_with_code_are_refused(tmp_path, torch_weights, capsys):
    model, names = trained_model(torch_weights)
    model.model[0].act = Launcher()
    path = save_ultralytics_checkpoint(model, names, tmp_path / "evil.pt")
    for loader in (torch_load_checkpoint, jt_load_checkpoint):
        with pytest.raises(ValueError, match="evil.pt: not a checkpoint of this project.*print"):
            loader(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("change, error", [
    ({"activation": "nn.LeakyReLU(0.1)"}, "activation nn.LeakyReLU"),  # the weights would give other outputs
    ({"backbone": [[-1, 1, "Focus", [64, 3]]]}, "uses Focus, which this project does not build"),  # before v6
])
def test_ultralytics_models_this_project_cannot_build_are_refused(tmp_path, torch_weights, change, error):
    model, names = trained_model(torch_weights)
    model.yaml.update(change)
    path = save_ultralytics_checkpoint(model, names, tmp_path / "other.pt")
    for loader in (torch_load_checkpoint, jt_load_checkpoint):
        with pytest.raises(ValueError, match=f"other.pt: not a checkpoint of this project .*{error}"):
            loader(path)
