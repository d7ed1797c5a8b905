"""Convert a checkpoint of the PyTorch tree (.pt) into this tree's format (.pkl), for tools that expect one.

    python YOLOv5Jittor/convert.py --weights runs/train/exp/weights/best.pt      # writes best.pkl beside it

This tree's train.py, val.py, detect.py and visualize.py also read the other tree's checkpoints directly, and
ultralytics YOLOv5's .pt files, which this script turns into .pkl files too. The
optimizer state is left out (its layout is framework-specific), so a converted checkpoint starts new runs
(--weights, --teacher) but does not --resume.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolocore.cli import parse_convert_options, run_script
from yolocore.training.checkpoints import convert_checkpoint
from YOLOv5Jittor.utils.checkpoint import FRAMEWORK, SUFFIX, load_checkpoint, save_checkpoint


def parse_opt(argv=None):
    return parse_convert_options(argv, __doc__, SUFFIX)


def convert(weights, out=""):
    return convert_checkpoint(weights, out, load_checkpoint, save_checkpoint, FRAMEWORK, SUFFIX)


if __name__ == "__main__":
    run_script(lambda: convert(**vars(parse_opt())))
