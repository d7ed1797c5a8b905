"""How far the Jittor tree's training drifts from the PyTorch tree's, against how far PyTorch drifts from itself.

Three runs of the same options and seed train for --epochs (no validation): PyTorch; PyTorch from its initial weights
each multiplied by (1 + 1e-7 N(0, 1)), a change of a float32 rounding step or a few (train.py --perturb 1e-7); and
Jittor, which starts from the same weights and sees the same batches. Printed: how far each of the last two ends from
the first, as a share of how far training moved the student's weights, and the relative difference of each epoch-mean
loss. Jittor no further from PyTorch than PyTorch from itself means no difference in the recipe shows at this scale; a
much larger drift in one mode (KD) than in the other points at that mode's code.

    python benchmarks/bench_drift.py --data data/NWPU.yaml --imgsz 320 --batch-size 16 [--mode KD --teacher T.pt]
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/bench_train.py
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
import jittor  # noqa: F401  (jittor before torch in one process)
# isort: on
import numpy as np

from yolocore.training import loop
from YOLOv5Jittor import train as jittor_train
from YOLOv5Pytorch import train as torch_train


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    p.add_argument("--cfg", default="yolov5n.yaml")
    p.add_argument("--mode", default="train", choices=("train", "KD"))
    p.add_argument("--teacher", default="")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1, help="epochs to train (of a 100-epoch schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--project", default="runs/drift")
    return p.parse_args(argv)


def numpy_state(module):
    return {k: (v.detach().numpy() if hasattr(v, "detach") else v.numpy()).astype(np.float64)
            for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def train_run(tree, opt, name, perturb=False):
    """(initial student weights, final student weights, final FGD module weights or None, epoch-mean losses)."""
    argv = ["--data", opt.data, "--cfg", opt.cfg, "--imgsz", str(opt.imgsz), "--batch-size", str(opt.batch_size),
            "--epochs", "100", "--seed", str(opt.seed), "--workers", str(opt.workers), "--project", opt.project,
            "--name", f"{opt.mode}_{name}", "--exist-ok"]
    if opt.mode == "KD":
        argv += ["--mode", "KD", "--teacher", opt.teacher]
    if perturb:
        argv += ["--perturb", "1e-7"]
    run = loop.setup(tree.parse_opt(argv), tree)
    initial = numpy_state(run.model)
    losses = [loop.train_one_epoch(run, epoch, tree) for epoch in range(opt.epochs)]
    fgd = numpy_state(run.fgd) if run.fgd is not None else None
    return initial, numpy_state(run.model), fgd, np.array(losses)


def distance(a, b):
    return sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5


def main(opt):
    initial, reference, reference_fgd, reference_losses = train_run(torch_train, opt, "pytorch")
    moved = distance(reference, initial)
    others = (("PyTorch, weights moved by 1e-7", torch_train, "pytorch_perturbed", True),
              ("Jittor", jittor_train, "jittor", False))
    for label, tree, name, perturb in others:
        _, final, fgd, losses = train_run(tree, opt, name, perturb)
        line = (f"{opt.mode} {label}: student {100 * distance(final, reference) / moved:.2f} % of its movement from "
                f"PyTorch's")
        if fgd is not None:
            norm = sum((v ** 2).sum() for v in reference_fgd.values()) ** 0.5
            line += f", FGD modules {100 * distance(fgd, reference_fgd) / norm:.3f} % of their norm"
        relative = 100 * (losses - reference_losses) / np.abs(reference_losses)
        print(f"{line}; epoch losses {np.array2string(relative, precision=2, suppress_small=True)} % off", flush=True)


if __name__ == "__main__":
    main(parse_opt())
