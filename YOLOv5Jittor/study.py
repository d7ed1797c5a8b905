"""The whole NWPU VHR-10 study in one command: teacher, student and FGD student, then study.md and the plots.

    python YOLOv5Jittor/study.py --data data/NWPU.yaml --device 0          # imgsz 512, batch 32, 150 epochs
    python YOLOv5Jittor/study.py --data data/NWPU.yaml --reduced --workers 2   # the CPU protocol
    python YOLOv5Jittor/study.py --data data/NWPU.yaml --device 0 --repeats 3  # students at seeds 0, 1, 2
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolocore.cli import run_script
from yolocore.study import runner as study
from YOLOv5Jittor import train, val
from YOLOv5Jittor.utils.checkpoint import FRAMEWORK, SUFFIX
from YOLOv5Jittor.utils.framework import select_device

TREE = study.Tree("YOLOv5Jittor", train.parse_opt, train.train, val.parse_opt, val.main, select_device, SUFFIX,
                   FRAMEWORK)


def main(argv=None):
    return study.main(TREE, study.parse_opt(argv, TREE.framework))


if __name__ == "__main__":
    run_script(main)
