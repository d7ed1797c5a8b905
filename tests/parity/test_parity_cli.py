"""Counts, sizes and thresholds on the command line: every script of both trees refuses one outside its range
before it starts, naming the flag."""
import argparse

import pytest

from yolocore.cli import fraction, non_negative_int, positive_int
from yolocore.study import runner as study
from YOLOv5Jittor import detect as jittor_detect
from YOLOv5Jittor import export as jittor_export
from YOLOv5Jittor import train as jittor_train
from YOLOv5Jittor import val as jittor_val
from YOLOv5Jittor import visualize as jittor_visualize
from YOLOv5Pytorch import detect as pytorch_detect
from YOLOv5Pytorch import export as pytorch_export
from YOLOv5Pytorch import train as pytorch_train
from YOLOv5Pytorch import val as pytorch_val
from YOLOv5Pytorch import visualize as pytorch_visualize

CHECKPOINTS = ["--weights", "w.pt"]
SCRIPTS = {
    "train": ([pytorch_train, jittor_train], [], ["--epochs", "--batch-size", "--imgsz"], ["--workers", "--patience"]),
    "val": ([pytorch_val, jittor_val], CHECKPOINTS + ["--data", "d.yaml"], ["--imgsz", "--batch-size", "--max-det"],
            ["--workers"]),
    "detect": ([pytorch_detect, jittor_detect], CHECKPOINTS + ["--source", "img"], ["--imgsz", "--max-det"], []),
    "export": ([pytorch_export, jittor_export], CHECKPOINTS, ["--imgsz"], []),
    "visualize": ([pytorch_visualize, jittor_visualize], ["--teacher", "t.pt", "--student", "s.pt", "--source", "i"],
                  ["--imgsz"], []),
}
CASES = [(script, module, required, flag, value)
         for script, (modules, required, positive, non_negative) in SCRIPTS.items() for module in modules
         for flag, value in [(f, "0") for f in positive] + [(f, "-1") for f in non_negative] + [(positive[0], "2x")]]
THRESHOLDS = [(module, SCRIPTS[script][1], flag, value) for script in ("val", "detect", "visualize")
              for module in SCRIPTS[script][0]
              for flag, value in (("--conf-thres", "1.5"), ("--iou-thres", "-0.1"), ("--conf-thres", "high"))]


def test_the_types():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    for parse, text in ((positive_int, "0"), (non_negative_int, "-1"), (positive_int, "1.5")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{text}' is not an integer|{text} is below"):
            parse(text)
    assert fraction("0") == 0 and fraction("1") == 1 and fraction("0.25") == 0.25
    for text in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{text}' is not a number|{text} is not in"):
            fraction(text)


@pytest.mark.parametrize("script, module, required, flag, value", CASES,
                         ids=[f"{m.__name__.split('.')[0]}.{s}{f}={v}" for s, m, _, f, v in CASES])
def test_a_count_below_its_range_is_refused(capsys, script, module, required, flag, value):
    with pytest.raises(SystemExit):
        module.parse_opt(required + [flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("module, required, flag, value", THRESHOLDS,
                         ids=[f"{m.__name__}{f}={v}" for m, _, f, v in THRESHOLDS])
def test_a_threshold_outside_0_1_is_refused(capsys, module, required, flag, value):
    with pytest.raises(SystemExit):
        module.parse_opt(required + [flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--repeats", "0"), ("--workers", "-1")])
def test_the_study_refuses_them_too(capsys, flag, value):
    with pytest.raises(SystemExit):
        study.parse_opt([flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("module", [pytorch_train, jittor_train], ids=["pytorch", "jittor"])
def test_train_options_are_one_parser_with_each_trees_defaults(capsys, module):
    """Both trees' train.py share one parser: KD without a teacher is refused (a resume carries its own), and the
    defaults that differ are the tree's hyperparameter yaml and the suffix its --resume help names."""
    with pytest.raises(SystemExit):
        module.parse_opt(["--mode", "KD"])
    assert "--mode KD needs --teacher CKPT" in capsys.readouterr().err
    assert module.parse_opt(["--mode", "KD", "--resume"]).resume == "last"
    opt = module.parse_opt([])
    assert opt.hyp == str(module.TREE / "hyp.scratch-low.yaml")
    assert (opt.mode, opt.epochs, opt.batch_size, opt.imgsz, opt.cache, opt.noamp) == ("train", 100, 16, 640, "", False)
    assert module.parse_opt(["--cache"]).cache == "ram" and module.parse_opt(["--noamp"]).noamp
    with pytest.raises(SystemExit):
        module.parse_opt(["--help"])
    assert f"continue a run: its last{module.SUFFIX}, its folder" in " ".join(capsys.readouterr().out.split())
