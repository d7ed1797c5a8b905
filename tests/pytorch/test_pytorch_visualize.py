"""YOLOv5Pytorch/visualize.py on a tiny teacher/student pair and a synthetic image: files written, the maps'
shapes and value ranges, KD and plain students, and bad input refused before anything is written."""
import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yolocore.config import load_model_cfg
from yolocore.data.synthetic import SYNTHETIC_NAMES, make_synthetic_dataset
from yolocore.plots.fgd import MAP_PANELS, STUDENT_KEYS, letterboxed_sample
from YOLOv5Pytorch import visualize
from YOLOv5Pytorch.KD.fgd import FGDLoss
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, save_checkpoint
from YOLOv5Pytorch.utils.framework import init_seeds

IMGSZ = 96
LAYERS = [17, 20, 23]
GRIDS = [IMGSZ // 8, IMGSZ // 16, IMGSZ // 32]
TEACHER_CHANNELS = [64, 128, 256]  # yolov5n at layers 17, 20, 23
ROOT = Path(__file__).resolve().parents[2]


def narrow_cfg():
    """yolov5n at half its width: its maps have half the teacher's channels, so FGD needs align convs."""
    cfg = load_model_cfg("yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    return cfg


def make_ckpt(model, names=SYNTHETIC_NAMES, **extra):
    return {"model": model.state_dict(), "yaml": model.yaml, "nc": len(names), "names": list(names),
            "hyp": {"fgd_temp": 0.5}, **extra}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """teacher.pt, kd_student.pt (with trained-looking FGD modules), plain_student.pt and a synthetic image."""
    root = tmp_path_factory.mktemp("vis")
    make_synthetic_dataset(root / "syn", n_train=2, n_val=1, imgsz=128, seed=3)
    init_seeds(0)
    teacher, student = Model("yolov5n.yaml", nc=5), Model(narrow_cfg(), nc=5)
    assert teacher.feature_channels(LAYERS) == TEACHER_CHANNELS
    fgd = FGDLoss(student.feature_channels(LAYERS), TEACHER_CHANNELS)
    for p in fgd.parameters():  # not the init values, so a test can tell the checkpoint's weights were loaded
        p.data.normal_(0, 0.2)
    save_checkpoint(make_ckpt(teacher), root / "teacher.pt")
    save_checkpoint(make_ckpt(student, fgd=fgd.state_dict(), kd_layers=LAYERS), root / "kd_student.pt")
    save_checkpoint(make_ckpt(student), root / "plain_student.pt")
    return {"root": root, "image": root / "syn" / "images" / "train" / "syn_00000.jpg", "fgd": fgd,
            "teacher": root / "teacher.pt", "kd": root / "kd_student.pt", "plain": root / "plain_student.pt"}


def opt_for(files, out, student="kd", source=None, *args):
    return visualize.parse_opt(["--teacher", str(files["teacher"]), "--student", str(files[student]),
                                "--source", str(source or files["image"]), "--imgsz", str(IMGSZ), "--device", "cpu",
                                "--project", str(Path(out).parent), "--name", Path(out).name, *args])


def read_csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def maps_of(files, student="kd"):
    """fgd_maps of the synthetic image as main computes them, plus its letterboxed labels."""
    plan = visualize.prepare(opt_for(files, files["root"] / "unused", student), torch.device("cpu"))
    im, labels = letterboxed_sample(files["image"], IMGSZ, plan.stride, len(SYNTHETIC_NAMES))
    tensor = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])[None]).float() / 255
    targets = torch.from_numpy(np.concatenate([np.zeros((len(labels), 1)), labels], 1))
    levels = visualize.fgd_maps(plan.teacher, plan.student, plan.fgd, tensor, targets, plan.layers,
                                plan.kd_layers, plan.temp)
    return levels, labels, tensor, plan


@pytest.mark.slow
def test_kd_student_writes_the_figure_and_every_panel(files, tmp_path):
    out = visualize.main(opt_for(files, tmp_path / "exp"))
    assert out == tmp_path / "exp" and sorted(p.name for p in tmp_path.iterdir()) == ["exp"], "staging left over"
    figure = cv2.imread(str(out / "syn_00000.png"))
    assert figure is not None and figure.shape[0] > 500 and figure.shape[1] > 1500
    expected = {"image_gt.png", "image_teacher_det.png", "image_det.png"}
    expected |= {f"layer{la}_{k}.png" for la in LAYERS for k, _, _ in MAP_PANELS}
    assert {p.name for p in (out / "syn_00000").iterdir()} == expected
    for p in (out / "syn_00000").iterdir():
        assert cv2.imread(str(p)) is not None, p
    (row,) = read_csv_rows(out / "detections.csv")
    boxes = len((files["root"] / "syn" / "labels" / "train" / "syn_00000.txt").read_text().splitlines())
    assert row["name"] == "syn_00000" and row["image"] == str(files["image"]) and int(row["boxes"]) == boxes > 0
    for who in ("", "teacher_"):
        assert 0 <= int(row[f"{who}correct"]) <= min(int(row[f"{who}detections"]), boxes)
    levels = maps_of(files)[0]
    attention = read_csv_rows(out / "attention.csv")
    assert [(r["name"], int(r["layer"])) for r in attention] == [("syn_00000", la) for la in LAYERS]
    for r, maps in zip(attention, levels):
        for kind in ("spatial", "channel"):
            t, s = maps[f"teacher_{kind}"].ravel(), maps[f"student_{kind}"].ravel()
            flat = min(t.std(), s.std()) < 1e-3  # an untrained teacher's attention is uniform
            expected = np.nan if flat else np.corrcoef(t, s)[0, 1]
            np.testing.assert_allclose(float(r[f"{kind}_corr"]), expected, atol=1e-5)
            assert float(r[f"{kind}_gap"]) == pytest.approx(np.abs(s - t).mean(), rel=1e-4)


def test_maps_have_fgd_shapes_and_ranges(files):
    levels, labels, _, plan = maps_of(files)
    assert plan.layers == LAYERS and plan.kd_layers == LAYERS and len(labels) > 0
    assert (levels[0]["fg_mask"] == 0).any(), "the finest map must have background for the bg-mask checks"
    for maps, g, c in zip(levels, GRIDS, TEACHER_CHANNELS):
        assert set(maps) == {"fg_mask", "bg_mask", *(f"{s}_{k}" for s in ("teacher", "student")
                                                      for k in ("feature", "spatial", "channel", "fg"))}
        for key in ("teacher_feature", "student_feature", "teacher_spatial", "student_spatial", "fg_mask", "bg_mask"):
            assert maps[key].shape == (g, g), key
        for side in ("teacher", "student"):
            assert maps[f"{side}_channel"].shape == (c,), "student attention is taken after the align conv"
            assert maps[f"{side}_spatial"].sum() == pytest.approx(g * g, rel=1e-4)
            assert maps[f"{side}_spatial"].min() > 0
            assert maps[f"{side}_channel"].sum() == pytest.approx(c, rel=1e-4)
            np.testing.assert_allclose(maps[f"{side}_fg"], maps[f"{side}_feature"] * maps["fg_mask"], rtol=1e-6)
        fg, bg = maps["fg_mask"], maps["bg_mask"]
        assert 0 <= fg.min() and fg.max() <= 1 and 0 <= bg.min() and bg.max() <= 1
        assert fg.max() > 0
        assert bg.sum() == pytest.approx(1 if (fg == 0).any() else 0, abs=1e-5)  # the 3x3 map may be all foreground
        np.testing.assert_array_equal(bg > 0, fg == 0)
        for _, cx, cy, _, _ in labels:  # every box centre lies in the foreground
            assert fg[min(int(cy * g), g - 1), min(int(cx * g), g - 1)] > 0


def test_student_maps_use_the_checkpoints_align_convs(files):
    levels, _, tensor, plan = maps_of(files)
    with torch.no_grad():
        feats = plan.student(tensor, feature_layers=LAYERS)[1]
        for maps, f, conv in zip(levels, feats, files["fgd"].align):
            expected = F.conv2d(f, conv.weight, conv.bias).abs().mean(1)[0].numpy()
            np.testing.assert_allclose(maps["student_feature"], expected, rtol=1e-5, atol=1e-6)


def test_plain_student_leaves_the_align_maps_out_and_says_so(files, tmp_path, capsys):
    levels, _, _, plan = maps_of(files, "plain")
    assert plan.fgd is None and plan.layers == LAYERS
    for maps in levels:
        assert not set(STUDENT_KEYS) & set(maps) and {"teacher_spatial", "fg_mask", "bg_mask"} <= set(maps)
    assert all("plain student" in n for n in plan.notes)
    out = visualize.main(opt_for(files, tmp_path / "exp", "plain", None, "--layers", "17"))
    assert "student maps left out" in capsys.readouterr().out
    panels = {p.name for p in (out / "syn_00000").iterdir()}
    assert "layer17_teacher_spatial.png" in panels and "layer17_student_spatial.png" not in panels
    assert (out / "syn_00000.png").is_file()
    assert read_csv_rows(out / "attention.csv") == [], "no student maps, nothing to compare"


def test_a_student_as_wide_as_the_teacher_needs_no_align_conv(files, tmp_path):
    """The teacher as its own plain student: identity align, so student maps equal the teacher's."""
    opt = visualize.parse_opt(["--teacher", str(files["teacher"]), "--student", str(files["teacher"]),
                               "--source", str(files["image"]), "--imgsz", str(IMGSZ), "--device", "cpu"])
    plan = visualize.prepare(opt, torch.device("cpu"))
    assert plan.notes == ["", "", ""]
    im = torch.rand(1, 3, IMGSZ, IMGSZ)
    for maps in visualize.fgd_maps(plan.teacher, plan.student, None, im, torch.zeros(0, 6), LAYERS):
        np.testing.assert_allclose(maps["student_spatial"], maps["teacher_spatial"])
        np.testing.assert_allclose(maps["bg_mask"], 1 / maps["bg_mask"].size, rtol=1e-6)  # no boxes: all background


def other_classes(files, tmp_path):
    ckpt = load_checkpoint(files["kd"])
    ckpt["names"] = ["a", "b", "c", "d", "e"]
    save_checkpoint(ckpt, tmp_path / "other_classes.pt")
    return tmp_path / "other_classes.pt"


def other_teacher(files, tmp_path):
    """A teacher twice as wide as the one the KD student's align convs were trained for."""
    cfg = load_model_cfg("yolov5n.yaml")
    cfg["width_multiple"] = 0.5
    save_checkpoint(make_ckpt(Model(cfg, nc=5)), tmp_path / "wide_teacher.pt")
    return tmp_path / "wide_teacher.pt"


def unreadable_image(files, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a_good.jpg").write_bytes(files["image"].read_bytes())
    (folder / "b_broken.jpg").write_bytes(b"not a jpeg")
    return folder


def bad_options(case, files, tmp_path):
    """The flags that make each case of bad input."""
    if case == "missing_teacher":
        return {"--teacher": [str(tmp_path / "nope.pt")]}
    if case == "other_classes":
        return {"--student": [str(other_classes(files, tmp_path))]}
    if case == "other_teacher":
        return {"--teacher": [str(other_teacher(files, tmp_path))]}
    if case == "unreadable_image":
        return {"--source": [str(unreadable_image(files, tmp_path))]}
    if case == "missing_layer":
        return {"--layers": ["17", "30"]}
    return {"--imgsz": ["100"]}


@pytest.mark.parametrize("case, match", [
    ("missing_teacher", "checkpoint not found"),
    ("other_classes", "must agree"),
    ("other_teacher", "another teacher"),
    ("unreadable_image", "b_broken.jpg: cannot read"),
    ("missing_layer", r"layers \[30\] do not exist"),
    ("bad_imgsz", "multiple"),
])
def test_bad_input_is_an_error_and_writes_nothing(files, tmp_path, case, match):
    flags = {"--teacher": [str(files["teacher"])], "--student": [str(files["kd"])], "--source": [str(files["image"])],
             "--imgsz": [str(IMGSZ)], "--device": ["cpu"], "--project": [str(tmp_path / "out")]}
    flags.update(bad_options(case, files, tmp_path))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        visualize.main(visualize.parse_opt([x for flag, values in flags.items() for x in (flag, *values)]))
    assert not (tmp_path / "out").exists()


def test_cli_error_is_one_line(files, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "YOLOv5Pytorch" / "visualize.py"), "--teacher",
                        str(tmp_path / "nope.pt"), "--student", str(files["kd"]), "--source", str(files["image"]),
                        "--project", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "nope.pt" in r.stderr
    assert not (tmp_path / "exp").exists()
