"""visualize.py in both trees: the same maps from the same checkpoints (a PyTorch .pt and the same checkpoint as a
Jittor .pkl), the same files written, and the Jittor tree's bad-input checks. Small images keep Jittor's per-shape
kernel compiles short."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
from pathlib import Path

import numpy as np
import pytest
import torch

from yolocore.config import load_model_cfg
from yolocore.data.synthetic import SYNTHETIC_NAMES, make_synthetic_dataset
from yolocore.plots.fgd import letterboxed_sample
from YOLOv5Jittor import visualize as jt_visualize
from YOLOv5Jittor.utils.checkpoint import load_checkpoint as jt_load_checkpoint
from YOLOv5Jittor.utils.checkpoint import save_checkpoint as jt_save_checkpoint
from YOLOv5Pytorch import visualize as torch_visualize
from YOLOv5Pytorch.KD.fgd import FGDLoss
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.checkpoint import save_checkpoint
from YOLOv5Pytorch.utils.framework import init_seeds as torch_init_seeds

IMGSZ = 96
LAYERS = [17, 20, 23]
TOLERANCE = 1e-5  # largest difference relative to the map's largest value; measured: at most 9e-7


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A yolov5n teacher and a half-width KD student written by the PyTorch tree, the student also as a Jittor
    .pkl, and one synthetic image with its labels."""
    root = tmp_path_factory.mktemp("vis_parity")
    make_synthetic_dataset(root / "syn", n_train=1, n_val=1, imgsz=128, seed=5)
    torch_init_seeds(1)
    cfg = load_model_cfg("yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    teacher, student = Model("yolov5n.yaml", nc=5), Model(cfg, nc=5)
    fgd = FGDLoss(student.feature_channels(LAYERS), teacher.feature_channels(LAYERS))
    for p in fgd.parameters():  # trained-looking align convs, not their init
        p.data.normal_(0, 0.2)
    meta = {"nc": 5, "names": list(SYNTHETIC_NAMES), "hyp": {"fgd_temp": 0.5}}
    save_checkpoint({"model": teacher.state_dict(), "yaml": teacher.yaml, **meta}, root / "teacher.pt")
    save_checkpoint({"model": student.state_dict(), "yaml": student.yaml, "fgd": fgd.state_dict(),
                     "kd_layers": LAYERS, **meta}, root / "student.pt")
    jt_save_checkpoint(jt_load_checkpoint(root / "student.pt"), root / "student.pkl")
    return {"root": root, "teacher": root / "teacher.pt", "student.pt": root / "student.pt",
            "student.pkl": root / "student.pkl", "image": root / "syn" / "images" / "train" / "syn_00000.jpg"}


def argv(files, student, out, *extra):
    return ["--teacher", str(files["teacher"]), "--student", str(files[student]), "--source", str(files["image"]),
            "--imgsz", str(IMGSZ), "--device", "cpu", "--project", str(Path(out).parent), "--name", Path(out).name,
            *extra]


def tree_maps(tree, files, student):
    """fgd_maps of the synthetic image in one tree, as its main computes them."""
    plan = tree.prepare(tree.parse_opt(argv(files, student, files["root"] / "unused")), "cpu")
    im, labels = letterboxed_sample(files["image"], IMGSZ, plan.stride, len(SYNTHETIC_NAMES))
    image = np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])[None].astype(np.float32) / 255
    targets = np.concatenate([np.zeros((len(labels), 1)), labels], 1).astype(np.float32)
    if tree is torch_visualize:
        image, targets = torch.from_numpy(image), torch.from_numpy(targets)
    else:
        image, targets = jt.array(image), jt.array(targets)
    levels = tree.fgd_maps(plan.teacher, plan.student, plan.fgd, image, targets, plan.layers,
                           plan.kd_layers, plan.temp)
    return levels, plan


def max_rel_error(expected, actual):
    return float(np.abs(expected - actual).max() / (np.abs(expected).max() + 1e-12))


@pytest.mark.parametrize("student", ["student.pt", "student.pkl"])
def test_both_trees_compute_the_same_maps(files, student):
    reference, _ = tree_maps(torch_visualize, files, "student.pt")
    for tree in (torch_visualize, jt_visualize):
        levels, plan = tree_maps(tree, files, student)
        assert plan.layers == LAYERS and plan.notes == ["", "", ""]
        for layer, expected, actual in zip(LAYERS, reference, levels):
            assert set(actual) == set(expected)
            for key, value in expected.items():
                assert actual[key].shape == value.shape, (layer, key)
                assert max_rel_error(value, actual[key]) < TOLERANCE, (tree.__name__, student, layer, key)


@pytest.mark.slow
def test_jittor_tree_writes_the_same_files(files, tmp_path):
    torch_out = torch_visualize.main(torch_visualize.parse_opt(argv(files, "student.pt", tmp_path / "torch")))
    jt_out = jt_visualize.main(jt_visualize.parse_opt(argv(files, "student.pkl", tmp_path / "jittor")))
    written = sorted(p.relative_to(torch_out) for p in torch_out.rglob("*") if p.is_file())
    assert written and written == sorted(p.relative_to(jt_out) for p in jt_out.rglob("*") if p.is_file())
    assert (jt_out / "detections.csv").read_text() == (torch_out / "detections.csv").read_text()
    torch_rows, jt_rows = (np.genfromtxt(out / "attention.csv", delimiter=",", names=True)
                           for out in (torch_out, jt_out))
    assert len(torch_rows) == len(LAYERS)
    for column in ("layer", "spatial_corr", "spatial_gap", "channel_corr", "channel_gap"):
        np.testing.assert_allclose(jt_rows[column], torch_rows[column], rtol=1e-4, atol=1e-6, err_msg=column)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jittor", "torch"], "staging left over"


def test_jittor_tree_refuses_bad_input_before_writing(files, tmp_path):
    ckpt = jt_load_checkpoint(files["student.pkl"])
    ckpt["names"] = ["a", "b", "c", "d", "e"]
    jt_save_checkpoint(ckpt, tmp_path / "other_classes.pkl")
    files = {**files, "other": tmp_path / "other_classes.pkl"}
    with pytest.raises(ValueError, match="must agree"):
        jt_visualize.main(jt_visualize.parse_opt(argv(files, "other", tmp_path / "out" / "exp")))
    with pytest.raises(ValueError, match=r"layers \[24\] do not exist"):
        jt_visualize.main(jt_visualize.parse_opt(argv(files, "student.pkl", tmp_path / "out" / "exp", "--layers",
                                                      "24")))
    (tmp_path / "broken.jpg").write_bytes(b"")
    files["image"] = tmp_path / "broken.jpg"
    with pytest.raises(ValueError, match="broken.jpg: cannot read"):
        jt_visualize.main(jt_visualize.parse_opt(argv(files, "student.pkl", tmp_path / "out" / "exp")))
    assert not (tmp_path / "out").exists()
