"""One KD step in both trees from the same trained checkpoints and batches: loss, FGD terms and every gradient.

The lockstep tests hold the trees together from fresh weights at tiny sizes; a gap between whole runs (docs/protocol.md)
asks whether they still agree where those runs spend their time: a trained student, a trained teacher, real images.
Both trees build a KD run from the same options (train.py's setup: --weights loads the student, the FGD modules start
from the seed), then take the same batches of the PyTorch loader; printed per batch: both losses, the largest relative
difference of the logged terms, the worst and median per-tensor gradient difference (relative to the tensor's largest
gradient) and both total gradient norms.

    python -m benchmarks.kd_step_parity --weights ~/fgd-cheap16/jittor/student_fgd/weights/last.pkl \
        --teacher ~/fgd-cheap16/pytorch/teacher/weights/best.pt --cfg ~/fgd-cheap16/pytorch/cfg/yolov5n-w0.125.yaml \
        --data ~/datasets/synthetic-cheap/synthetic.yaml --hyp ~/fgd-cheap16/pytorch/hyp/hyp.nbs16-nbs16.yaml
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
# isort: on
from yolocore.training import loop
from YOLOv5Jittor import train as jt_train
from YOLOv5Pytorch import train as torch_train


def gradients(name, run):
    """The gradients of the optimizer's parameters, in the groups' order, as float64 arrays; then zeroed."""
    if name == "pytorch":
        grads = [p.grad.detach().numpy().astype(np.float64) for g in run.optimizer.param_groups for p in g["params"]]
    else:
        grads = [np.asarray(g.numpy(), np.float64) for group in run.optimizer.param_groups for g in group["grads"]]
    run.optimizer.zero_grad()
    return grads


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--weights", "--teacher", "--cfg", "--data"):
        p.add_argument(flag, required=True)
    p.add_argument("--hyp", default=str(torch_train.TREE / "hyp.scratch-low.yaml"))
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--kd-weight", type=float, help="default: the hyp's kd_weight")
    args = p.parse_args(argv)
    trees = {"pytorch": torch_train, "jittor": jt_train}
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--mode", "KD", "--cfg", args.cfg, "--teacher", args.teacher, "--weights", args.weights,
                "--data", args.data, "--hyp", args.hyp, "--imgsz", str(args.imgsz),
                "--batch-size", str(args.batch_size), "--workers", "0", "--noval", "--project", tmp]
        runs = {name: loop.setup(tree.parse_opt([*argv, "--name", name]), tree) for name, tree in trees.items()}
        kd_weight = args.kd_weight if args.kd_weight is not None else runs["pytorch"].hyp["kd_weight"]
        batches = iter(runs["pytorch"].train_loader)
        for b in range(args.batches):
            imgs, targets, _, _ = next(batches)  # torch tensors: the Jittor tree takes them as numpy
            steps = {}
            for name, tree in trees.items():
                batch = (imgs, targets) if name == "pytorch" else (np.asarray(imgs), np.asarray(targets))
                loss, items = tree.train_step(runs[name], *batch, kd_weight)
                steps[name] = loss, items, gradients(name, runs[name])
            (tl, ti, tg), (jl, ji, jg) = steps["pytorch"], steps["jittor"]
            rel = [np.abs(a - c).max() / np.abs(a).max() for a, c in zip(tg, jg) if np.abs(a).max() > 0]
            terms = np.abs(ti - ji).max() / np.abs(ti).max()
            norms = [np.sqrt(sum((g ** 2).sum() for g in grads)) for grads in (tg, jg)]
            print(f"batch {b}: loss {tl:.7g} (PyTorch) {jl:.7g} (Jittor); terms {terms:.1e} apart; gradients of "
                  f"{len(rel)} tensors: worst {max(rel):.1e}, median {np.median(rel):.1e}; norm {norms[0]:.7g} / "
                  f"{norms[1]:.7g}")


if __name__ == "__main__":
    main()
