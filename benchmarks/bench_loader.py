"""Data loaders across epochs, read as train.py reads them: an epoch's training batches, then a validation pass
(batches twice as large, rectangular), with each step replaced by a sleep of --step-ms (a GPU step leaves the CPU
to the workers, as a sleep does). For loaders whose workers start anew every pass, and for persistent ones (what
train.py uses), prints the seconds an epoch and its validation take, how long the epoch's first batch kept the
step waiting and how long each later one did on average, averaged over the epochs after the first (whose workers
start in both cases). With a step longer than the workers take to load a batch (--step-ms 1500 on 2 cores), the
later batches are ready when asked for, and their wait is what handing a batch over costs the trainer. Prints
figures only:

    python benchmarks/bench_loader.py --data datasets/NWPU/NWPU.yaml --imgsz 512 --batch-size 32 --workers 2

--framework jittor times the Jittor tree's loader; --cache reads the images from train.py's image cache.
"""
import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolocore.config import ROOT, load_data_yaml, load_hyp


def timed_epochs(tree, data, hyp, opt, persistent):
    """Per epoch: (seconds of training batches, seconds of the validation pass, seconds waited for batch 0, mean
    seconds waited for each later batch)."""
    train_loader, _ = tree.create_dataloader(data["train"], opt.imgsz, opt.batch_size, data["nc"], hyp, augment=True,
                                             shuffle=True, workers=opt.workers, cache_images=opt.cache,
                                             persistent=persistent)
    val_loader, _ = tree.create_dataloader(data["val"], opt.imgsz, opt.batch_size * 2, data["nc"], workers=opt.workers,
                                           cache_images=opt.cache, rect=True, persistent=persistent)
    epochs = []
    for epoch in range(opt.epochs):
        tree.set_epoch(train_loader, epoch)
        started = asked = time.perf_counter()
        waits = []
        for _ in train_loader:
            waits.append(time.perf_counter() - asked)
            time.sleep(opt.step_ms / 1000)
            asked = time.perf_counter()
        trained = time.perf_counter()
        for _ in val_loader:
            time.sleep(opt.step_ms / 1000)
        later = statistics.mean(waits[1:]) if len(waits) > 1 else float("nan")  # an epoch of one batch has none
        epochs.append((trained - started, time.perf_counter() - trained, waits[0], later))
    train_loader.close()
    val_loader.close()
    return epochs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument("--framework", choices=("pytorch", "jittor"), default="pytorch")
    p.add_argument("--imgsz", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4, help="epochs timed per variant (the first is left out)")
    p.add_argument("--step-ms", type=float, default=20.0, help="the sleep that stands for a training step")
    p.add_argument("--cache", action="store_true", help="images from train.py's image cache")
    opt = p.parse_args(argv)
    if opt.epochs < 2:
        p.error("--epochs must be at least 2: the first epoch is left out")
    if opt.framework == "jittor":
        importlib.import_module("YOLOv5Jittor")  # Jittor's build settings, before anything imports jittor
    tree = importlib.import_module(f"YOLOv5{opt.framework.capitalize()}.utils.dataloader")
    data, hyp = load_data_yaml(opt.data), load_hyp(ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml")
    print(f"{opt.framework} loaders, imgsz {opt.imgsz}, batch {opt.batch_size}, {opt.workers} workers, step "
          f"{opt.step_ms:g} ms, {'image cache' if opt.cache else 'image files'}; mean of epochs 2-{opt.epochs}:")
    print(f"{'workers':>11} {'train s':>8} {'val s':>8} {'epoch s':>8} {'first batch s':>14} {'later batch ms':>15}")
    totals = {}
    for name, persistent in (("restarted", False), ("persistent", True)):
        train_s, val_s, first_s, later_s = (statistics.mean(column) for column in
                                            zip(*timed_epochs(tree, data, hyp, opt, persistent)[1:]))
        totals[name] = train_s + val_s
        print(f"{name:>11} {train_s:8.2f} {val_s:8.2f} {totals[name]:8.2f} {first_s:14.2f} {later_s * 1e3:15.1f}")
    print(f"persistent workers take {totals['persistent'] / totals['restarted']:.2f}x the time of an epoch")


if __name__ == "__main__":
    main()
