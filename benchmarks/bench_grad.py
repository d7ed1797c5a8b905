"""One training step's gradient in both trees, from the same weights and batch: how far apart they are.

From a run's checkpoint (last.pt or last.pkl: the student's training weights and, in KD mode, its FGD modules), both
trees take the same training batch of --epoch and compute train.py's loss: the detection loss, plus kd_weight times
FGD in KD mode. Printed: the loss terms of both, how far apart the distilled feature maps are, and the relative
difference of the gradients, all together and for the parameters that differ most. The parity tests check this on
tiny synthetic data from initial weights; this checks it on real data, at the state where a long run has got to.
A difference far above float32 rounding (1e-6 to 1e-5) is a difference between the trees.

    python benchmarks/bench_grad.py --data data/NWPU.yaml --weights runs/train/student_fgd/weights/last.pt \
           --mode KD --teacher runs/train/teacher/weights/best.pt --epoch 50
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
import jittor as jt  # jittor before torch in one process
# isort: on
import numpy as np
import torch

from yolocore.training import loop
from yolocore.training.recipe import kd_weight_at
from YOLOv5Jittor import train as jittor_train
from YOLOv5Jittor.utils import checkpoint as jittor_checkpoint
from YOLOv5Jittor.utils import framework as jittor_framework
from YOLOv5Pytorch import train as torch_train
from YOLOv5Pytorch.utils import checkpoint as torch_checkpoint
from YOLOv5Pytorch.utils import framework as torch_framework


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a training checkpoint of either tree (last.pt, last.pkl)")
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    p.add_argument("--mode", default="train", choices=("train", "KD"))
    p.add_argument("--teacher", default="")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epoch", type=int, default=0, help="the epoch whose first batch (and kd_weight) is used")
    p.add_argument("--epochs", type=int, default=100, help="the run's length, for kd_weight's schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="runs/grad")
    p.add_argument("--top", type=int, default=8, help="how many of the most different gradients to list")
    return p.parse_args(argv)


class Tree:
    """What differs between the trees for one step: targets, arrays, no_grad, gradients."""

    def __init__(self, name):
        self.name, self.torch = name, name == "pytorch"
        self.train = torch_train if self.torch else jittor_train
        self.checkpoint = torch_checkpoint if self.torch else jittor_checkpoint
        self.numpy = (torch_framework if self.torch else jittor_framework).to_numpy

    def targets(self, targets):
        """The loader's targets as train.py feeds them to the loss (PyTorch's loader gives tensors already)."""
        return targets if self.torch else jt.array(targets)

    def no_grad(self):
        return torch.no_grad() if self.torch else jt.no_grad()

    def gradients(self, loss, params):
        if self.torch:
            loss.backward()
            return {k: self.numpy(p.grad) for k, p in params.items() if p.grad is not None}
        names = [k for k, p in params.items() if not p.is_stop_grad()]
        return {k: self.numpy(g) for k, g in zip(names, jt.grad(loss, [params[k] for k in names]))}


def step(tree, opt):
    """The loss items, distilled student maps and gradients (name -> array) of one step in one tree."""
    argv = ["--weights", opt.weights, "--data", opt.data, "--imgsz", str(opt.imgsz), "--batch-size",
            str(opt.batch_size), "--epochs", str(opt.epochs), "--seed", str(opt.seed), "--workers", "0",
            "--project", opt.project, "--name", tree.name, "--exist-ok", "--noautoanchor", "--mode", opt.mode,
            "--noamp"]  # float32 in both trees, the PyTorch teacher included
    argv += ["--teacher", opt.teacher] if opt.mode == "KD" else []
    run = loop.setup(tree.train.parse_opt(argv), tree.train)
    model, fgd = run.model, run.fgd
    ckpt = tree.checkpoint.load_checkpoint(opt.weights)
    tree.checkpoint.load_weights(model, ckpt["model"], opt.weights)  # the training weights, not the EMA
    if fgd is not None:
        if not ckpt.get("fgd"):
            raise ValueError(f"--weights {opt.weights}: no FGD modules (not a --mode KD checkpoint)")
        tree.checkpoint.load_weights(fgd, ckpt["fgd"], opt.weights)
        fgd.train()
    model.train()
    run.train_loader.batch_sampler.set_epoch(opt.epoch)
    imgs, targets, _, _ = next(iter(run.train_loader))
    im, targets = tree.train.images_to_tensor(imgs, run.device), tree.targets(targets)
    layers = run.opt.kd_layers
    if fgd is not None:
        with tree.no_grad():
            t_feats = run.teacher.features(im, layers)
    preds, s_feats = model(im, feature_layers=layers)
    loss, items = run.compute_loss(preds, targets)
    items = list(tree.numpy(items))
    if fgd is not None:
        kd_loss, kd_terms = fgd(s_feats, t_feats, targets)
        loss = loss + kd_weight_at(run.hyp, opt.epoch, opt.epochs) * kd_loss
        items += list(tree.numpy(kd_terms))
    params = {f"model.{k}": p for k, p in model.named_parameters()}
    if fgd is not None:
        params.update({f"fgd.{k}": p for k, p in fgd.named_parameters()})
    return np.array(items), [tree.numpy(f) for f in s_feats], tree.gradients(loss, params)


def relative(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)


def main(opt):
    torch_items, torch_feats, torch_grads = step(Tree("pytorch"), opt)
    jittor_items, jittor_feats, jittor_grads = step(Tree("jittor"), opt)
    names = ["box", "obj", "cls"] + (["fgd_fg", "fgd_bg", "fgd_mask", "fgd_relation"] if opt.mode == "KD" else [])
    print(f"{opt.mode} step from {opt.weights}, epoch {opt.epoch}'s first batch")
    for name, a, b in zip(names, torch_items, jittor_items):
        print(f"  {name:13s} PyTorch {a:.6g}  Jittor {b:.6g}  ({abs(b - a) / abs(a):.1e} apart)")
    for level, (a, b) in enumerate(zip(torch_feats, jittor_feats)):
        print(f"  student map {level}: {relative(a, b):.1e} apart")
    if set(torch_grads) != set(jittor_grads):
        print(f"  gradients only in PyTorch: {sorted(set(torch_grads) - set(jittor_grads))}; "
              f"only in Jittor: {sorted(set(jittor_grads) - set(torch_grads))}")
    shared = [k for k in torch_grads if k in jittor_grads]
    a = np.concatenate([torch_grads[k].ravel() for k in shared])
    b = np.concatenate([jittor_grads[k].ravel() for k in shared])
    total = np.linalg.norm(a)
    print(f"  gradient: norm {total:.4g} (PyTorch) {np.linalg.norm(b):.4g} (Jittor), {relative(a, b):.1e} apart")
    # A gradient that is zero in exact arithmetic (a bias before a softmax) is rounding noise in both trees.
    zero = [k for k in shared if np.linalg.norm(torch_grads[k]) < 1e-9 * total]
    per_param = sorted(((relative(torch_grads[k], jittor_grads[k]), k) for k in shared if k not in zero), reverse=True)
    print(f"  the most different of {len(per_param)} parameters ({len(zero)} more have gradients below 1e-9 of the "
          "norm, rounding of a zero):")
    for rel, k in per_param[:opt.top]:
        print(f"    {rel:.1e}  {k}  (norm {np.linalg.norm(torch_grads[k]):.2e})")


if __name__ == "__main__":
    main(parse_opt())
