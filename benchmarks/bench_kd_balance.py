"""How large FGD's gradient is against the detection gradient in a KD step, and what train.py's clip does to them.

train.py's KD loss is the detection loss plus kd_weight times FGD, and the sum's gradient is clipped at norm 10, so
an FGD term that is large against detection both pulls the student elsewhere and shrinks its detection step. For a
number of training batches this prints the gradient norm over the student's parameters of each part (and of FGD's
four terms: foreground, background, attention, relation), of their sum, the cosine between the detection and the FGD
gradients (below 0: FGD pulls against detection), the clip factor min(1, 10 / norm) and the detection part after
the clip (det*clip). With --weights (a KD run's last.pt) the student and its FGD modules are those of the run at
that point; without, a fresh student as a KD run starts. Check it when you change the teacher, the image size or the
batch size.

    python benchmarks/bench_kd_balance.py --data data/NWPU.yaml --teacher runs/train/teacher/weights/best.pt \
           [--weights runs/train/kd/weights/last.pt --epoch 40] [--imgsz 320 --batch-size 16 --batches 8]
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/bench_train.py
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from yolocore.training import loop
from yolocore.training.recipe import kd_weight_at
from YOLOv5Pytorch import train as torch_train
from YOLOv5Pytorch.utils import checkpoint

CLIP_NORM = 10.0  # train.py's optimizer_step
TERMS = ("alpha", "beta", "gamma", "lambda_")  # FGDLoss's weights of its fg, bg, attention and relation terms


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher checkpoint a KD run distils")
    p.add_argument("--weights", default="", help="a KD run's checkpoint (student and FGD modules); empty = fresh")
    p.add_argument("--cfg", default="yolov5n.yaml", help="the student's model, for a fresh student")
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    p.add_argument("--hyp", default="", help="hyperparameter yaml (kd_weight and FGD's weights); default the tree's")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epoch", type=int, default=0, help="the epoch whose batches (and kd_weight) are used")
    p.add_argument("--epochs", type=int, default=100, help="the run's length, for kd_weight's schedule")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="runs/kd_balance")
    return p.parse_args(argv)


def setup(opt):
    """train.py's KD run set up as a run would be (student, FGD modules, teacher, loader), weights loaded."""
    argv = ["--mode", "KD", "--teacher", opt.teacher, "--cfg", opt.cfg, "--data", opt.data, "--imgsz", str(opt.imgsz),
            "--batch-size", str(opt.batch_size), "--epochs", str(opt.epochs), "--seed", str(opt.seed),
            "--workers", "0", "--project", opt.project, "--name", "balance", "--exist-ok", "--noautoanchor", "--noamp"]
    argv += ["--hyp", opt.hyp] if opt.hyp else []
    run = loop.setup(torch_train.parse_opt(argv), torch_train)
    if opt.weights:
        ckpt = checkpoint.load_checkpoint(opt.weights)
        if not ckpt.get("fgd"):
            raise ValueError(f"--weights {opt.weights}: no FGD modules (not a --mode KD checkpoint)")
        checkpoint.load_weights(run.model, ckpt["model"], opt.weights)  # the training weights, not the EMA
        checkpoint.load_weights(run.fgd, ckpt["fgd"], opt.weights)
    run.model.train()
    run.fgd.train()
    return run


def gradient(loss, params):
    """The gradient of loss over params, flattened into one float64 vector."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).double().flatten() for g, p in zip(grads, params)])


def term_losses(fgd, s_feats, t_feats, targets):
    """FGD's loss with one term's weight kept and the others' at 0, for each term: FGDLoss hands its terms back
    detached, so a term's gradient needs its own pass."""
    weights = {name: getattr(fgd, name) for name in TERMS}
    losses = []
    try:
        for kept in TERMS:
            for name in TERMS:
                setattr(fgd, name, weights[name] if name == kept else [0.0] * len(weights[name]))
            losses.append(fgd(s_feats, t_feats, targets)[0])
    finally:
        for name, value in weights.items():
            setattr(fgd, name, value)
    return losses


def main(opt):
    run = setup(opt)
    kd_weight = kd_weight_at(run.hyp, opt.epoch, opt.epochs)
    params = [p for p in run.model.parameters() if p.requires_grad]
    run.train_loader.batch_sampler.set_epoch(opt.epoch)
    print(f"{opt.weights or 'a fresh ' + opt.cfg} distilling {opt.teacher}: epoch {opt.epoch}'s batches, "
          f"kd_weight {kd_weight:g}, gradient norms over the student's parameters")
    columns = ("detection", "FGD", "fg", "bg", "attention", "relation", "sum", "FGD/det", "cos", "clip",
               "det*clip")
    print(" ".join(f"{c:>9}" for c in ("batch",) + columns))
    rows = []
    for i, (imgs, targets, _, _) in enumerate(run.train_loader):
        if i == opt.batches:
            break
        im = torch_train.images_to_tensor(imgs, run.device)
        with torch.no_grad():
            t_feats = run.teacher.features(im, run.opt.kd_layers)
        preds, s_feats = run.model(im, feature_layers=run.opt.kd_layers)
        detection, _ = run.compute_loss(preds, targets)
        g_det = gradient(detection, params)
        g_terms = [gradient(kd_weight * t, params) for t in term_losses(run.fgd, s_feats, t_feats, targets)]
        g_fgd = sum(g_terms)  # FGD's loss is the sum of its terms, so its gradient is theirs
        det, kd, total = float(g_det.norm()), float(g_fgd.norm()), float((g_det + g_fgd).norm())
        clip = min(1.0, CLIP_NORM / total)
        rows.append((det, kd, *(float(g.norm()) for g in g_terms), total, kd / det, float(g_det @ g_fgd) / (det * kd),
                     clip, det * clip))
        print(f"{i:9d} " + " ".join(f"{v:9.2f}" for v in rows[-1]), flush=True)
    print(f"{'mean':>9} " + " ".join(f"{v:9.2f}" for v in np.mean(rows, 0)))

if __name__ == "__main__":
    main(parse_opt())
