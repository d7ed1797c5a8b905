"""Training and validation throughput of yolov5n/yolov5s on the built-in synthetic data.

Per model, each in a fresh child process so that its peak memory is its own:
- train img/s: one mosaic batch held in memory; forward + ComputeLoss + backward + optimizer step (train.py's
  optimizer_step: unscale, clip, SGD, EMA update) every iteration, median after warm-up. train.py only steps the
  optimizer every nbs/batch-size batches (64/16), so this is the costliest kind of iteration.
- e2e img/s: an epoch (or its first --e2e-batches batches) through the real augmenting DataLoader (mosaic,
  --workers processes, restarted each epoch as in train.py), timed from creating the iterator, so worker start-up
  counts. With --cache the images come from train.py --cache's image cache, not from their files.
- eval fwd img/s: the EMA model's inference forward on the in-memory batch (no NMS), to read val's NMS share off.
- val img/s: YOLOv5Pytorch.val.run (conf 0.001, iou 0.6; loading, NMS and metrics included) on the val split
  (or its first --val-batches batches) in batches of --batch-size (train.py validates with 2x). The weights are
  (nearly) untrained: almost every anchor passes conf 0.001, so NMS meets its worst case (up to max_nms candidates
  per image) and is slower than on a trained model.
- peak memory: the child's peak RSS (resource.getrusage, main process; loader workers are separate processes)
  on CPU, torch.cuda.max_memory_allocated on CUDA.
OMP_WAIT_POLICY defaults to PASSIVE (see below); the header prints threads, wait policy and the load average.

    python benchmarks/bench_train.py [--cfgs yolov5n yolov5s] [--imgsz 320] [--batch-size 16] [--device cpu]
"""
import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

# Before torch loads OpenMP: threads that spin-wait at barriers while co-tenant processes hold the cores make every
# op of a busy shared CPU tenfold slower, measuring the neighbours instead of the model. OMP_WAIT_POLICY=ACTIVE (or
# any value) given by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from yolocore.config import load_hyp
from yolocore.training.host_memory import retain_freed_memory
from yolocore.training.loop import prepare_data
from yolocore.training.recipe import loss_gains, scaled_weight_decay
from YOLOv5Pytorch import val as validate
from YOLOv5Pytorch.models.yolo import Model, count_parameters
from YOLOv5Pytorch.train import TREE, build_optimizer, optimizer_step
from YOLOv5Pytorch.utils.dataloader import create_dataloader, set_epoch
from YOLOv5Pytorch.utils.framework import (
    ModelEMA,
    autocast,
    grad_scaler,
    images_to_tensor,
    init_seeds,
    mixed_precision,
    select_device,
)
from YOLOv5Pytorch.utils.loss import ComputeLoss

HYP = TREE / "hyp.scratch-low.yaml"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn, *args):
    synchronize(device)
    start = time.perf_counter()
    fn(*args)
    synchronize(device)
    return time.perf_counter() - start


def load_text():
    return "load average (1/5/15 min) " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def environment_text(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads, policy, load = torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", ""), os.getloadavg()[0]
    text = f"{threads} torch threads, OMP_WAIT_POLICY={policy or 'unset'}"
    if threads > 1 and load > (os.cpu_count() or 1) and policy.upper() != "PASSIVE":
        text += (f" (WARNING: load {load:.1f} exceeds {os.cpu_count()} cores; spinning OpenMP threads "
                 "may inflate these times tenfold: try OMP_WAIT_POLICY=PASSIVE or --threads 1)")
    return text


def data_and_hyp(data_yaml=""):
    """train.py's data preparation: an empty --data means the synthetic set in datasets/synthetic."""
    return prepare_data(argparse.Namespace(data=data_yaml)), load_hyp(HYP)


def memory_batch(data, hyp, imgsz, batch_size, device):
    """The first mosaic batch of epoch 0, as tensors on the device, so timed steps exclude data loading."""
    loader, _ = create_dataloader(data["train"], imgsz, batch_size, data["nc"], hyp, augment=True, shuffle=True,
                                  workers=0, prefix="bench: ")
    set_epoch(loader, 0)
    imgs, targets, _, _ = next(iter(loader))
    return images_to_tensor(imgs, device), targets.to(device)


def trainer(model, hyp, nc, imgsz, batch_size, device, amp, extra_modules=()):
    """The parts of a yolocore.training.run.Run that train.py's optimizer_step needs, built with train.py's own
    functions; amp is framework.mixed_precision's answer."""
    trained = [model, *extra_modules]
    optimizer = build_optimizer(trained, hyp, scaled_weight_decay(hyp, batch_size))
    return SimpleNamespace(model=model, optimizer=optimizer, scaler=grad_scaler(device, amp), ema=ModelEMA(model),
                           amp=amp,
                           compute_loss=ComputeLoss(model, loss_gains(hyp, model.model[-1].nl, nc, imgsz)))


def train_step(run, im, targets):
    """The plain (non-KD) body of train.py's train_step, stepping the optimizer every time."""
    with autocast(im.device, run.amp):
        loss, _ = run.compute_loss(run.model(im), targets)
    run.scaler.scale(loss).backward()
    optimizer_step(run)


def epoch_steps(run, loader, device, batches):
    """The first batches of an epoch, from creating the iterator (so loader workers start inside the timing)."""
    for i, (imgs, targets, _, _) in enumerate(loader):
        train_step(run, images_to_tensor(imgs, device), targets.to(device))
        if i + 1 == batches:
            break


def peak_memory_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class FirstBatches:
    """The first n batches of a DataLoader, for val.run (which needs only iteration and len)."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, min(n, len(loader))
        self.images = min(self.n * loader.batch_sampler.batch_size, len(loader.dataset))

    def __len__(self):
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def eval_forward(model, im, amp):
    with torch.no_grad(), autocast(im.device, amp):
        model(im)


def measure(cfg, args):
    """All figures for one model; runs inside the child process."""
    retain_freed_memory()  # as train.py does
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, hyp = data_and_hyp(args.data)
    init_seeds(0)
    model = Model(cfg, nc=data["nc"]).to(device).train()
    run = trainer(model, hyp, data["nc"], args.imgsz, args.batch_size, device,
                  mixed_precision(device, args.noamp, args.amp))
    im, targets = memory_batch(data, hyp, args.imgsz, args.batch_size, device)
    step_times = [timed(device, train_step, run, im, targets) for _ in range(args.warmup + args.iters)]
    step = statistics.median(step_times[args.warmup:])

    loader, _ = create_dataloader(data["train"], args.imgsz, args.batch_size, data["nc"], hyp, augment=True,
                                  shuffle=True, workers=args.workers, prefix="bench: ", cache_images=bool(args.cache))
    set_epoch(loader, 1)
    batches = min(args.e2e_batches or len(loader), len(loader))
    # Batches come in order; the last may be short.
    e2e_images = min(batches * loader.batch_sampler.batch_size, len(loader.dataset))
    e2e = timed(device, epoch_steps, run, loader, device, batches)

    evaluated = run.ema.ema.eval()
    forwards = [timed(device, eval_forward, evaluated, im, run.amp) for _ in range(args.iters + 1)]
    forward = statistics.median(forwards[1:])
    val_loader, _ = create_dataloader(data["val"], args.imgsz, args.batch_size, data["nc"], workers=args.workers,
                                      prefix="bench val: ", cache_images=bool(args.cache), rect=True)
    val_loader = FirstBatches(val_loader, args.val_batches or len(val_loader))
    val = timed(device, lambda: validate.run(evaluated, val_loader, data["names"], device, 0.001, 0.6, amp=run.amp))
    return dict(cfg=cfg, params=count_parameters(model), step_s=step, train_ips=im.shape[0] / step,
                e2e_ips=e2e_images / e2e, e2e_batches=batches, fwd_ips=im.shape[0] / forward,
                val_ips=val_loader.images / val, val_images=val_loader.images, peak_mib=peak_memory_mib(device),
                environment=environment_text(device), workers=loader.num_workers, device=device.type)


def run_child(cfg, args):
    """measure(cfg) in a fresh interpreter; its chatter is shown only if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in vars(args).items()
                 if k not in ("cfgs", "child_out") and v is not False]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cfgs", cfg, "--child-out", str(result), *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{cfg}: benchmark child failed (exit {proc.returncode})\n{proc.stdout[-3000:]}"
                     f"\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfgs", nargs="+", default=["yolov5n", "yolov5s"], help="model yamls (names or paths)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes for the e2e and val figures")
    p.add_argument("--iters", type=int, default=5, help="timed in-memory training steps (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed in-memory steps first")
    p.add_argument("--e2e-batches", type=int, default=0, help="first N batches of an epoch; 0 = the whole epoch")
    p.add_argument("--val-batches", type=int, default=0, help="first N val batches for val.run; 0 = all")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    p.add_argument("--cache", nargs="?", const="ram", default="", choices=("", "ram", "disk"),
                   help="images from train.py --cache's image cache")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--noamp", action="store_true", help="float32 on CUDA too (train.py --noamp)")
    precision.add_argument("--amp", action="store_true", help="bfloat16 autocast on a CPU that has it (train.py --amp)")
    p.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main():
    args = parse_args()
    if args.child_out:
        Path(args.child_out).write_text(json.dumps(measure(args.cfgs[0], args)))
        return
    data_and_hyp(args.data)  # build the synthetic set once, before the children race to it
    print(f"bench_train: imgsz {args.imgsz}, batch {args.batch_size}, device {args.device}, "
          f"{'--amp, ' if args.amp else '--noamp, ' if args.noamp else ''}"
          f"median of {args.iters} steps after {args.warmup} warm-up; {load_text()}")
    rows = []
    for cfg in args.cfgs:
        started = time.perf_counter()
        rows.append(run_child(cfg, args))
        print(f"  {cfg}: done in {time.perf_counter() - started:.0f} s; {load_text()}", flush=True)
    r = rows[0]
    memory = "peak CUDA alloc MiB" if r["device"] == "cuda" else "peak RSS MiB"
    print(f"\n{r['environment']}; {r['workers']} loader workers, images from "
          f"{'the image cache (--cache)' if args.cache else 'their files'}; e2e over {r['e2e_batches']} batches, "
          f"val.run over {r['val_images']} images\n")
    print(f"| model | params M | step ms | train img/s | e2e img/s | eval fwd img/s | val img/s | {memory} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {Path(r['cfg']).stem} | {r['params'] / 1e6:.2f} | {r['step_s'] * 1e3:.0f} | {r['train_ips']:.1f} "
              f"| {r['e2e_ips']:.1f} | {r['fwd_ips']:.1f} | {r['val_ips']:.1f} | {r['peak_mib']:.0f} |")
    print(f"\n{load_text()}")


if __name__ == "__main__":
    main()
