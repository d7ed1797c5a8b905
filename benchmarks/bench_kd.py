"""Cost of an FGD knowledge-distillation training step against a plain student step.

Goals (from the issue): FGDLoss is under 10% of a KD step, and a KD step costs no more than the student step plus
one teacher forward plus that 10% (of the KD step). Timed on one mosaic batch of the synthetic data held in memory:
- student step: yolov5n forward + ComputeLoss + backward + optimizer step (train.py's optimizer_step);
- teacher forward: yolov5s in eval mode under no_grad, returning the --layers feature maps;
- FGD: FGDLoss forward + backward alone, on the real student/teacher maps of that batch (student maps detached, so
  the backward stops at them);
- KD step: train.py's --mode KD body: teacher forward, student forward with features, ComputeLoss, FGD,
  backward, optimizer step over student + FGD parameters.
The four are timed round-robin, so load from other processes spreads over all of them; medians are reported.
Weights are random: the cost of these steps does not depend on them. Freed memory is kept for reuse, as train.py
does (yolocore.training.host_memory). OMP_WAIT_POLICY defaults to PASSIVE (see below); the header prints threads, wait
policy and the load average.

    python benchmarks/bench_kd.py [--imgsz 320] [--batch-size 16] [--device cpu] [--iters 5]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: threads that spin-wait at barriers while co-tenant processes hold the cores make every
# op of a busy shared CPU tenfold slower, measuring the neighbours instead of the model. OMP_WAIT_POLICY=ACTIVE (or
# any value) given by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.bench_train import (
    data_and_hyp,
    environment_text,
    load_text,
    memory_batch,
    optimizer_step,
    timed,
    train_step,
    trainer,
)
from yolocore.training.host_memory import retain_freed_memory
from YOLOv5Pytorch.KD.distiller import build_fgd, load_teacher
from YOLOv5Pytorch.KD.fgd import FGDLoss
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.checkpoint import save_checkpoint
from YOLOv5Pytorch.utils.framework import autocast, init_seeds, mixed_precision, select_device

FGD_SHARE_GOAL = 0.10


def teacher_forward(teacher, im, layers):
    with torch.no_grad():
        return teacher.features(im, layers)


def fgd_step(fgd: FGDLoss, student_feats, teacher_feats, targets):
    for f in student_feats:
        f.grad = None
    loss, _ = fgd(student_feats, teacher_feats, targets)  # float32 under any autocast (FGDLoss)
    loss.backward()


def kd_step(run, teacher, im, targets, layers, kd_weight):
    """The --mode KD body of train.py's train_step, stepping the optimizer every time."""
    with autocast(im.device, run.amp):
        with torch.no_grad():
            t_feats = teacher.features(im, layers)
        preds, s_feats = run.model(im, feature_layers=layers)
        loss, items = run.compute_loss(preds, targets)
        kd_loss, kd_terms = run.fgd(s_feats, t_feats, targets)
        loss = loss + kd_weight * kd_loss
        torch.cat((items, kd_weight * torch.cat((kd_loss.detach()[None], kd_terms))))  # train.py's logged items
    run.scaler.scale(loss).backward()
    optimizer_step(run)


def teacher_from_checkpoint(cfg, names, device, folder, amp):
    """A random-weight teacher saved and loaded through distiller.load_teacher, so it is set up as in KD runs."""
    model = Model(cfg, nc=len(names))
    path = Path(folder) / "teacher.pt"
    save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "nc": len(names), "names": list(names)}, path)
    return load_teacher(path, names, device, amp)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="yolov5n")
    p.add_argument("--teacher", default="yolov5s")
    p.add_argument("--layers", type=int, nargs="+", default=[17, 20, 23], help="distilled layers (--kd-layers)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    p.add_argument("--iters", type=int, default=5, help="timed rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--noamp", action="store_true", help="float32 throughout (train.py)")
    precision.add_argument("--amp", action="store_true", help="the student under bfloat16 autocast on a CPU that has "
                           "it (train.py --amp), the teacher in low precision with it")
    return p.parse_args(argv)


def verdict(ok):
    return "met" if ok else "NOT met"


def main():
    args = parse_args()
    retain_freed_memory()
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, hyp = data_and_hyp(args.data)
    names = data["names"]
    init_seeds(0)
    student = Model(args.student, nc=data["nc"]).to(device).train()
    amp = mixed_precision(device, args.noamp, args.amp)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = teacher_from_checkpoint(args.teacher, names, device, tmp, amp)
    fgd = build_fgd(student, teacher, args.layers, hyp, args.imgsz, device).train()
    plain = trainer(student, hyp, data["nc"], args.imgsz, args.batch_size, device, amp)
    distil = trainer(student, hyp, data["nc"], args.imgsz, args.batch_size, device, amp, [fgd])
    distil.fgd = fgd
    im, targets = memory_batch(data, hyp, args.imgsz, args.batch_size, device)
    with autocast(device, amp):
        s_feats = [f.detach().requires_grad_() for f in student(im, feature_layers=args.layers)[1]]
    t_feats = teacher_forward(teacher, im, args.layers)

    print(f"bench_kd: {args.student} student, {args.teacher} teacher, layers {args.layers}, imgsz {args.imgsz}, "
          f"batch {args.batch_size} ({len(targets)} boxes), device {device}, student "
          f"{'under autocast' if amp else 'float32'}, teacher {next(teacher.parameters()).dtype}; "
          f"{environment_text(device)}")
    print(f"  feature maps: student {[tuple(f.shape[1:]) for f in s_feats]}, "
          f"teacher {[tuple(f.shape[1:]) for f in t_feats]}")
    print(f"  median of {args.iters} round-robin rounds after {args.warmup} warm-up; {load_text()}", flush=True)
    steps = {
        "student step": (train_step, plain, im, targets),
        "teacher forward": (teacher_forward, teacher, im, args.layers),
        "FGD fwd+bwd": (fgd_step, fgd, s_feats, t_feats, targets),
        "KD step": (kd_step, distil, teacher, im, targets, args.layers, hyp["kd_weight"]),
    }
    times = {name: [] for name in steps}
    started = time.perf_counter()
    for _ in range(args.warmup + args.iters):
        for name, (fn, *fn_args) in steps.items():
            times[name].append(timed(device, fn, *fn_args))
    t = {name: statistics.median(v[args.warmup:]) for name, v in times.items()}

    print("\n| part | median ms | min ms | max ms |\n|---|---:|---:|---:|")
    for name, v in times.items():
        timed_runs = v[args.warmup:]
        print(f"| {name} | {t[name] * 1e3:.0f} | {min(timed_runs) * 1e3:.0f} | {max(timed_runs) * 1e3:.0f} |")
    kd, student_s, teacher_s, fgd_s = t["KD step"], t["student step"], t["teacher forward"], t["FGD fwd+bwd"]
    share = fgd_s / kd
    budget = student_s + teacher_s + FGD_SHARE_GOAL * kd
    print(f"\nKD step / student step: {kd / student_s:.2f}x")
    print(f"FGD share of the KD step: {share:.1%} (goal < {FGD_SHARE_GOAL:.0%}): {verdict(share < FGD_SHARE_GOAL)}")
    print(f"KD step / (student + teacher + FGD measured): {kd / (student_s + teacher_s + fgd_s):.2f}x")
    print(f"KD step {kd * 1e3:.0f} ms vs budget student + teacher + {FGD_SHARE_GOAL:.0%} of KD = {budget * 1e3:.0f} ms "
          f"({kd / budget:.2f}x): {verdict(kd <= budget)}")
    print(f"\ntimed in {time.perf_counter() - started:.0f} s; {load_text()}")


if __name__ == "__main__":
    main()
