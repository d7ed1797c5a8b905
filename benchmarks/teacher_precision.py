"""How far FGD's loss moves when the frozen KD teacher runs in low precision, against that loss's run-to-run noise.

Under mixed precision (--amp on a CPU with native bfloat16, the default on CUDA) train.py loads the teacher in
bfloat16 (float16 on CUDA) and hands FGD its maps in float32; otherwise the teacher is float32. On a trained KD run
this script computes FGDLoss on the first --batches training batches of epoch 0 (the run's student and FGD modules,
its data and augmentation), once with the teacher in float32 and once in low precision, and prints both losses and
their relative gaps. The noise it compares with: how far the logged train/fgd_loss of the same run and of its
calibration rerun (--perturb 1e-7, which changes only the initial weights' float32 rounding) lie apart, per epoch.

    python benchmarks/teacher_precision.py --run runs/study/pytorch/student_fgd \
        --rerun runs/study/pytorch/student_fgd_rerun [--batches 8]
"""
import argparse
import csv
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_train.py
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from yolocore.training.loop import prepare_data
from YOLOv5Pytorch.KD.distiller import build_fgd, load_teacher
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, load_weights, model_from_checkpoint
from YOLOv5Pytorch.utils.dataloader import create_dataloader, set_epoch
from YOLOv5Pytorch.utils.framework import images_to_tensor, init_seeds, select_device, teacher_precision


def fgd_losses(run, batches, device, data_yaml=None):
    """FGDLoss on the run's first training batches: {teacher dtype: [loss per batch]}."""
    ckpt = load_checkpoint(Path(run) / "weights" / "last.pt")
    opt = ckpt["opt"]
    init_seeds(opt["seed"])
    student = model_from_checkpoint(ckpt, device, use_ema=False).train()  # as it trains: batch statistics
    data = prepare_data(argparse.Namespace(data=data_yaml or opt["data"]))
    loader, _ = create_dataloader(data["train"], opt["imgsz"], opt["batch_size"], data["nc"], ckpt["hyp"],
                                  augment=True, shuffle=True, workers=0, seed=opt["seed"], prefix="batches: ")
    set_epoch(loader, 0)
    losses = {}
    for amp in (False, True):
        teacher = load_teacher(opt["teacher"], data["names"], device, amp)
        fgd = build_fgd(student, teacher, ckpt["kd_layers"], ckpt["hyp"], opt["imgsz"], device)
        load_weights(fgd, ckpt["fgd"], "fgd")
        values = losses.setdefault(next(teacher.parameters()).dtype, [])
        for i, (imgs, targets, _, _) in enumerate(loader):
            if i == batches:
                break
            im = images_to_tensor(imgs, device)
            with torch.no_grad():
                s_feats = student(im, feature_layers=ckpt["kd_layers"])[1]
                values.append(fgd(s_feats, teacher.features(im, ckpt["kd_layers"]), targets.to(device))[0].item())
    return losses


def logged_fgd_loss(run):
    with open(Path(run) / "results.csv") as f:
        return [float(row["train/fgd_loss"]) for row in csv.DictReader(f)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished --mode KD run's folder")
    p.add_argument("--rerun", help="its calibration rerun's folder (--perturb 1e-7), for the noise")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--data", help="the run's dataset yaml where it has moved (default: the run's own)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = select_device(args.device)
    low = teacher_precision(device, amp=True)
    if low == torch.float32:
        sys.exit(f"teacher_precision.py: {device} has no native low precision; the teacher runs float32 there")
    losses = fgd_losses(args.run, args.batches, device, args.data)
    gaps = [(a - b) / b for a, b in zip(losses[low], losses[torch.float32])]
    print(f"FGDLoss on {len(gaps)} training batches, teacher float32 / {low}:")
    for a, b in zip(losses[torch.float32], losses[low]):
        print(f"  {a:.6f} / {b:.6f} ({(b - a) / a:+.3%})")
    sizes = [abs(g) for g in gaps]
    print(f"relative gap: mean size {statistics.mean(sizes):.2%}, largest {max(sizes):.2%}; signed mean "
          f"{statistics.mean(gaps):+.2%} ± {statistics.stdev(gaps) / len(gaps) ** 0.5:.2%} (standard error)")
    if args.rerun:
        run, rerun = logged_fgd_loss(args.run), logged_fgd_loss(args.rerun)
        noise = [abs(a - b) / a for a, b in zip(run, rerun)]
        print(f"run-to-run noise, logged train/fgd_loss of the run against its calibration rerun over {len(noise)} "
              f"epochs: median {statistics.median(noise):.2%}, epoch 0 {noise[0]:.2%}, last {noise[-1]:.2%}")


if __name__ == "__main__":
    main()
