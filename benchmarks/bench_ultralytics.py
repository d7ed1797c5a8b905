"""Our PyTorch training step against ultralytics YOLOv5's, side by side on the same workload, and our KD step
against our student step.

Per model and image size, one workload: the first mosaic batch of the built-in synthetic data (uint8 images and
targets), one set of initial weights (ours, seed 0; the state-dict keys are ultralytics'), the loss gains train.py
uses. Each program times its own full training step on it, one fresh process per measurement, the programs
alternated round by round so that load from other processes spreads over all of them:
- ours: train.py's train_step + optimizer_step (images to float, forward, ComputeLoss, backward, unscale, clip,
  SGD, EMA), float32 (--noamp) and under bfloat16 autocast (--amp, where the CPU has native bfloat16);
- ultralytics: the body of its train.py's loop (PyPI yolov5 7.0.14: DetectionModel, ComputeLoss, smart_optimizer,
  ModelEMA), float32: its autocast is CUDA's only;
- KD (students other than --teacher): train.py's --mode KD step, the teacher loaded as train.py loads it (float32,
  or bfloat16 under --amp), the student in float32 or under autocast; the KD / student ratio compares steps of the
  same precision.
Both programs run on this environment's torch: ultralytics' package needs torchvision only for what a training
step does not call (NMS, transforms, datasets), so its child process imports it with an empty stand-in for
torchvision and for its `ultralytics` requirements check. A venv that sees this project's packages and adds
ultralytics' code and the few it imports:

    python -m venv --system-site-packages ~/ul && ~/ul/bin/pip install --no-deps yolov5==7.0.14 \
        && ~/ul/bin/pip install 'pandas<2.3' 'numpy<2' seaborn requests pillow psutil
    python benchmarks/bench_ultralytics.py [--ul-python ~/ul/bin/python] [--cfgs yolov5n yolov5s] [--imgsz 320 512]

Printed: the median ms of each, the ratios, and each program's first loss on the workload (the same to float32
rounding: both compute the same loss on the same weights and batch). OMP_WAIT_POLICY defaults to PASSIVE.
"""
import argparse
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_train.py
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.bench_train import data_and_hyp, load_text, trainer
from yolocore.training.host_memory import retain_freed_memory
from yolocore.training.recipe import loss_gains
from YOLOv5Pytorch import train
from YOLOv5Pytorch.KD.distiller import build_fgd, load_teacher
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.checkpoint import save_checkpoint
from YOLOv5Pytorch.utils.dataloader import create_dataloader, set_epoch
from YOLOv5Pytorch.utils.framework import init_seeds, mixed_precision

CPU = torch.device("cpu")


def write_workload(folder, cfg, imgsz, batch_size, teacher_cfg):
    """The batch, the initial weights (and a teacher checkpoint) both programs read."""
    data, hyp = data_and_hyp()
    loader, _ = create_dataloader(data["train"], imgsz, batch_size, data["nc"], hyp, augment=True, shuffle=True,
                                  workers=0, prefix="bench: ")
    set_epoch(loader, 0)
    imgs, targets, _, _ = next(iter(loader))
    init_seeds(0)
    model = Model(cfg, nc=data["nc"])
    torch.save({"imgs": torch.as_tensor(np.asarray(imgs)), "targets": torch.as_tensor(np.asarray(targets)),
                "state_dict": model.state_dict(), "yaml": model.yaml, "nc": data["nc"], "names": data["names"],
                "gains": loss_gains(hyp, model.model[-1].nl, data["nc"], imgsz), "hyp": hyp}, folder / "workload.pt")
    teacher = Model(teacher_cfg, nc=data["nc"])
    save_checkpoint({"model": teacher.state_dict(), "yaml": teacher.yaml, "nc": data["nc"], "names": data["names"]},
                    folder / "teacher.pt")


def timed_steps(step, warmup, iters):
    """(ms of each timed step, the loss of the first)."""
    first, times = None, []
    for _ in range(warmup + iters):
        start = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - start) * 1e3)
        first = loss if first is None else first
    return times[warmup:], first


def ours(work, args, amp, kd):
    retain_freed_memory()  # as train.py does
    w = torch.load(work / "workload.pt", weights_only=True)
    model = Model(w["yaml"], nc=w["nc"]).train()
    model.load_state_dict(w["state_dict"])
    teacher = load_teacher(str(work / "teacher.pt"), w["names"], CPU, amp) if kd else None  # as train.py loads it
    fgd = build_fgd(model, teacher, args.layers, w["hyp"], args.imgsz, CPU).train() if kd else None
    run = trainer(model, w["hyp"], w["nc"], args.imgsz, args.batch_size, CPU, mixed_precision(CPU, not amp, amp),
                  [fgd] if kd else [])
    run.device, run.parallel_model, run.world_size = CPU, model, 1
    run.teacher, run.fgd, run.parallel_fgd, run.opt = teacher, fgd, fgd, SimpleNamespace(kd_layers=args.layers)

    def step():
        loss, _ = train.train_step(run, w["imgs"], w["targets"], w["hyp"]["kd_weight"])
        train.optimizer_step(run)
        return loss

    return timed_steps(step, args.warmup, args.iters)


class _NoTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torchvision and any of its submodules as empty modules whose attributes are further stand-ins (a class for a
    capitalised name, a submodule otherwise): ultralytics' modules name them at import, a training step calls none."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torchvision":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def stand_in(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return importlib.import_module(f"{spec.name}.{attr}") if attr.islower() else type(attr, (), {})

        module.__getattr__ = stand_in
        return module

    def exec_module(self, module):
        pass


def ultralytics(work, args):
    sys.meta_path.insert(0, _NoTorchvision())
    checks = types.ModuleType("ultralytics.utils.checks")
    checks.check_requirements = lambda *a, **k: None  # it would pip-install what it misses
    for name in ("ultralytics", "ultralytics.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["ultralytics.utils.checks"] = checks
    from yolov5.models.yolo import DetectionModel
    from yolov5.utils.loss import ComputeLoss
    from yolov5.utils.torch_utils import ModelEMA, smart_optimizer

    w = torch.load(work / "workload.pt", weights_only=True)
    model = DetectionModel(w["yaml"], ch=3, nc=w["nc"])
    model.load_state_dict(w["state_dict"])
    model.hyp = w["gains"]
    model.train()
    hyp = w["hyp"]
    optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    ema, compute_loss = ModelEMA(model), ComputeLoss(model)
    scaler = torch.cuda.amp.GradScaler(enabled=False)

    def step():  # ultralytics' train.py, batch loop and optimizer step (amp is False on a CPU)
        imgs = w["imgs"].to(CPU, non_blocking=True).float() / 255
        with torch.cuda.amp.autocast(False):
            pred = model(imgs)
            loss, _ = compute_loss(pred, w["targets"].to(CPU))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        ema.update(model)
        return loss.item()

    return timed_steps(step, args.warmup, args.iters)


VARIANTS = {  # name: (program, bfloat16 autocast, KD)
    "ours fp32": ("ours", False, False), "ours bf16": ("ours", True, False), "ultralytics fp32": ("ul", False, False),
    "KD fp32": ("ours", False, True), "KD bf16": ("ours", True, True),
}


def child(args):
    work = Path(args.child_work)
    program, amp, kd = VARIANTS[args.child]
    args.imgsz = args.imgsz[0]  # a child measures one size
    torch.set_num_threads(args.threads or torch.get_num_threads())
    times, loss = ultralytics(work, args) if program == "ul" else ours(work, args, amp, kd)
    (work / "result.json").write_text(json.dumps({"times": times, "loss": loss}))


def run_child(variant, work, args):
    python = args.ul_python if VARIANTS[variant][0] == "ul" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--child", variant, "--child-work", str(work),
           "--imgsz", str(args.imgsz[0]), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
           "--iters", str(args.iters), "--threads", str(args.threads), "--layers", *map(str, args.layers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{variant}: benchmark child failed (exit {proc.returncode})\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-3000:]}")
    return json.loads((work / "result.json").read_text())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfgs", nargs="+", default=["yolov5n", "yolov5s"], help="student models (yaml names or paths)")
    p.add_argument("--imgsz", type=int, nargs="+", default=[320, 512])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--teacher", default="yolov5s", help="the KD teacher of every other --cfgs model")
    p.add_argument("--layers", type=int, nargs="+", default=[17, 20, 23], help="distilled layers (--kd-layers)")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds, one process per program each")
    p.add_argument("--iters", type=int, default=4, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--ul-python", default=os.environ.get("UL_PYTHON", str(Path.home() / "ul" / "bin" / "python")),
                   help="the interpreter of the venv with ultralytics' yolov5 package (see above)")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--child-work", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main():
    args = parse_args()
    if args.child:
        return child(args)
    if not Path(args.ul_python).is_file():
        sys.exit(f"bench_ultralytics.py: error: no {args.ul_python}; make the venv the docstring shows, or give "
                 "--ul-python")
    bf16 = mixed_precision(CPU, amp=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?") if Path("/proc/cpuinfo").is_file() else "?"
    print(f"bench_ultralytics: batch {args.batch_size}, {args.rounds} alternated rounds of {args.iters} steps after "
          f"{args.warmup} warm-up per process; CPU {cpu}, {os.cpu_count()} cores, native bfloat16: {bf16}; "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; {load_text()}", flush=True)
    rows = []
    for cfg in args.cfgs:
        for imgsz in args.imgsz:
            variants = [v for v in VARIANTS if (bf16 or "bf16" not in v) and (cfg != args.teacher or "KD" not in v)]
            times, losses = {v: [] for v in variants}, {}
            with tempfile.TemporaryDirectory() as tmp:
                write_workload(Path(tmp), cfg, imgsz, args.batch_size, args.teacher)
                sub = argparse.Namespace(**{**vars(args), "imgsz": [imgsz]})
                for _ in range(args.rounds):
                    for v in variants:
                        result = run_child(v, Path(tmp), sub)
                        times[v] += result["times"]
                        losses[v] = result["loss"]
            ms = {v: statistics.median(t) for v, t in times.items()}
            rows.append((cfg, imgsz, ms))
            print(f"  {cfg} {imgsz}: " + ", ".join(f"{v} {m:.0f} ms" for v, m in ms.items())
                  + f"; first losses: ours {losses['ours fp32']:.6f}, ultralytics {losses['ultralytics fp32']:.6f}; "
                  + load_text(), flush=True)

    print("\n| model | imgsz | ours fp32 ms | ours bf16 ms | ultralytics fp32 ms | ours fp32 / ul | ul / ours bf16 "
          "(speed-up) |\n|---|---:|---:|---:|---:|---:|---:|")
    for cfg, imgsz, ms in rows:
        ul, fp32, half = ms["ultralytics fp32"], ms["ours fp32"], ms.get("ours bf16", float("nan"))
        print(f"| {cfg} | {imgsz} | {fp32:.0f} | {half:.0f} | {ul:.0f} | {fp32 / ul:.2f} | {ul / half:.2f}x |")
    kd_rows = [(cfg, imgsz, ms) for cfg, imgsz, ms in rows if "KD fp32" in ms]
    if kd_rows:
        print(f"\nKD step (teacher {args.teacher}, frozen in {'bfloat16' if bf16 else 'float32'}) / student step of "
              "the same precision:\n\n| student | imgsz | student fp32 ms | KD ms | KD / student | student bf16 ms "
              "| KD ms | KD / student |\n|---|---:|---:|---:|---:|---:|---:|---:|")
        for cfg, imgsz, ms in kd_rows:
            s32, k32 = ms["ours fp32"], ms["KD fp32"]
            s16, k16 = ms.get("ours bf16", float("nan")), ms.get("KD bf16", float("nan"))
            print(f"| {cfg} | {imgsz} | {s32:.0f} | {k32:.0f} | {k32 / s32:.2f}x | {s16:.0f} | {k16:.0f} "
                  f"| {k16 / s16:.2f}x |")
    print(f"\n{load_text()}")


if __name__ == "__main__":
    main()
