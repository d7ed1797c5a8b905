"""Convert a checkpoint of the PyTorch tree (.pt) into this tree's format (.pkl), for tools that expect one.

    python YOLOv5Jittor/convert.py --weights runs/train/exp/weights/best.pt      # writes best.pkl beside it

This tree's train.py, val.py, detect.py and visualize.py also read the other tree's checkpoints directly, and
ultralytics YOLOv5's .pt files, which this script turns into .pkl files too. The
optimizer state is left out (its layout is framework-specific), so a converted checkpoint starts new runs
(--weights, --teacher) but does not --resume.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolocore.cli import run_script
from YOLOv5Jittor.utils.checkpoint import FRAMEWORK, SUFFIX, load_checkpoint, save_checkpoint


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint to convert (either tree's or ultralytics')")
    parser.add_argument("--out", default="", help=f"output path; default: --weights with the suffix {SUFFIX}")
    return parser.parse_args(argv)


def convert(weights, out=""):
    ckpt = load_checkpoint(weights)
    out = Path(out) if out else Path(weights).with_suffix(SUFFIX)
    if out.resolve() == Path(weights).resolve():
        raise ValueError(f"{weights}: already a {SUFFIX} checkpoint; pass --out to write a copy")
    ckpt.update(framework=FRAMEWORK, optimizer=None, converted_from=str(weights))
    ckpt.pop("path")
    save_checkpoint(ckpt, out)
    print(f"{weights} -> {out}")
    return out


if __name__ == "__main__":
    run_script(lambda: convert(**vars(parse_opt())))
