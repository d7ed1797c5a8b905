"""The per-epoch overhead of training, apart from the model's own work: what a GPU epoch costs beyond its arithmetic
(docs/study.md#the-gpu-study-in-one-call). Prints figures only, 1-4 in one process's CPU time (a core's
rate, however loaded the machine), 5 in wall time:

    python -m benchmarks.bench_overhead --data datasets/NWPU/NWPU.yaml [--imgsz 512 --batch-size 32 --workers 1]

1. an augmented training item (mosaic, perspective, HSV, flips) from the image cache (--cache ram), one process;
2. collating a batch from its items (a data-loading worker's work, beside 1);
3. validation's host bookkeeping: matching 300 detections an image (max_det, what a trained model gives at conf
   0.001) to the labels and the metrics over the split, one process; and the CPU's NMS on dense predictions, which a
   GPU run does on the device (benchmarks/bench_nms.py);
4. the host's share of a training step: yolov5n's and yolov5s's step (forward, loss, backward, SGD, EMA) at batch 2
   and imgsz 32, where the arithmetic is nearly nil and what is left is what a GPU step costs its process too
   (Python, the dispatch of each operation; a GPU adds its kernel launches);
5. the training loop itself with a model of three strided convolutions and Detect (PyTorch tree, --cache ram,
   --workers N, --noval): each epoch's wall time, the part spent in the steps (the tiny model's forward, loss,
   backward and optimizer step, the work a GPU takes over) and the rest (waiting for data, the loop's Python), and
   the end of an epoch (results, checkpoints).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import yaml

from benchmarks.bench_nms import dense_predictions
from benchmarks.bench_train import train_step, trainer
from yolocore.config import ROOT, load_data_yaml, load_hyp
from yolocore.data.dataset import YoloDataset
from yolocore.evaluation.validation import Evaluator
from yolocore.training import loop
from YOLOv5Pytorch import train
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.nms import non_max_suppression

# Three strided convolutions give Detect its maps at strides 8, 16 and 32: the outputs (and so the loss's targets
# and validation's predictions) of yolov5 at any size, at almost none of its arithmetic.
TINY_CFG = dict(nc=80, depth_multiple=1.0, width_multiple=1.0,
                anchors=[[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
                backbone=[[-1, 1, "Conv", [16, 8, 8, 0]], [-1, 1, "Conv", [16, 2, 2, 0]],
                          [-1, 1, "Conv", [16, 2, 2, 0]]],
                head=[[[0, 1, 2], 1, "Detect", ["nc", "anchors"]]])


def rate(fn, n):
    """Calls of fn per second of this process's CPU time: a core's rate, whatever else shares the machine."""
    start = time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - start)


def bookkeeping_rate(val, names, rng):
    """Images per CPU second through Evaluator.add_batch and summary, with 300 random detections an image."""
    n_images = len(val)
    items = [val[i] for i in range(n_images)]
    start = time.process_time()
    evaluator = Evaluator(names)
    for i in range(0, n_images, 32):
        imgs, targets, paths, shapes = YoloDataset.collate_fn(items[i:i + 32])
        h, w = imgs.shape[2:]
        detections = []
        for _ in range(len(imgs)):
            xy, wh = rng.uniform(0, [w, h], (300, 2)), rng.uniform(8, 120, (300, 2))
            detections.append(np.concatenate([xy - wh / 2, xy + wh / 2, rng.uniform(0.001, 1, (300, 1)),
                                              rng.integers(0, len(names), (300, 1))], 1).astype(np.float32))
        evaluator.add_batch(imgs, targets, detections, paths, shapes)
    evaluator.summary()
    return n_images / (time.process_time() - start)


def step_host_ms(cfg, nc, hyp, steps=20):
    """CPU milliseconds of a training step at batch 2, imgsz 32: (forward, loss and backward, whose arithmetic is
    then nearly nil; the optimizer step with EMA, whose arithmetic on every weight is not, so the figure bounds its
    host time from above). train.py steps the optimizer every other batch at batch 32 (NBS 64)."""
    run = trainer(Model(cfg, nc=nc).train(), hyp, nc, 32, 2, torch.device("cpu"))
    im, targets = torch.rand(2, 3, 32, 32), torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3], [1, 1, 0.4, 0.4, 0.2, 0.2]])

    def backward(i):
        loss, _ = run.compute_loss(run.model(im), targets)
        run.scaler.scale(loss).backward()

    for _ in range(3):
        train_step(run, im, targets)
    return 1000 / rate(backward, steps), 1000 / rate(lambda i: train.optimizer_step(run), steps)


def loop_figures(opt, cfg_path):
    """(epoch wall times, step times per epoch, end-of-epoch times) of a --noval run of the tiny model."""
    epochs, steps, ends = [], [], []
    real_epoch, real_end, real_step = loop.train_one_epoch, loop.end_epoch, train.train_step
    real_opt_step = train.optimizer_step

    def timed_step(*args):
        t = time.perf_counter()
        out = real_step(*args)
        steps[-1] += time.perf_counter() - t
        return out

    def timed_opt_step(*args):
        t = time.perf_counter()
        real_opt_step(*args)
        steps[-1] += time.perf_counter() - t

    def timed_epoch(*args):
        steps.append(0.0)
        t = time.perf_counter()
        out = real_epoch(*args)
        epochs.append(time.perf_counter() - t)
        return out

    def timed_end(*args):
        t = time.perf_counter()
        out = real_end(*args)
        ends.append(time.perf_counter() - t)
        return out

    loop.train_one_epoch, loop.end_epoch, train.train_step, train.optimizer_step = (
        timed_epoch, timed_end, timed_step, timed_opt_step)
    try:
        with tempfile.TemporaryDirectory() as project:
            train.train(train.parse_opt([
                "--cfg", str(cfg_path), "--data", opt.data, "--imgsz", str(opt.imgsz), "--batch-size",
                str(opt.batch_size), "--epochs", str(opt.epochs), "--workers", str(opt.workers), "--cache", "ram",
                "--noval", "--noautoanchor", "--device", "cpu", "--project", project]))
    finally:
        loop.train_one_epoch, loop.end_epoch, train.train_step, train.optimizer_step = (
            real_epoch, real_end, real_step, real_opt_step)
    return epochs, steps, ends


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument("--imgsz", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="data-loading processes of the loop's run")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the loop's run (the first warms up)")
    p.add_argument("--items", type=int, default=256, help="items timed in 1 and 2")
    opt = p.parse_args(argv)
    torch.set_num_threads(1)
    data, hyp = load_data_yaml(opt.data), load_hyp(str(ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml"))
    trainset = YoloDataset(data["train"], opt.imgsz, augment=True, hyp=hyp, nc=data["nc"], cache_images=True)
    valset = YoloDataset(data["val"], opt.imgsz, nc=data["nc"], cache_images=True, rect=True,
                         batch_size=opt.batch_size * 2)
    n = len(trainset)
    rate(lambda i: trainset[(1, i % n)], 16)  # caches mapped, allocator warm
    mosaic = rate(lambda i: trainset[(0, i % n)], opt.items)
    items = [trainset[i % n] for i in range(opt.batch_size)]
    collate = opt.batch_size * rate(lambda i: YoloDataset.collate_fn(items), max(1, opt.items // opt.batch_size))
    books = bookkeeping_rate(valset, data["names"], np.random.default_rng(0))
    pred = dense_predictions(8, data["nc"], torch.device("cpu"))
    nms = 8 * rate(lambda i: non_max_suppression(pred, 0.001, 0.6, multi_label=True, max_det=300), 2)
    print(f"imgsz {opt.imgsz}, batch {opt.batch_size}, {n} training and {len(valset)} val images; "
          "items per CPU second of one core:")
    print(f"  1. augmented item from the image cache   {mosaic:8.1f} items/s ({1000 / mosaic:.1f} ms)")
    print(f"  2. collation                             {collate:8.1f} items/s ({1000 / collate:.2f} ms)")
    print(f"  3. validation bookkeeping (300 det/img)  {books:8.1f} images/s ({1000 / books:.1f} ms)")
    print(f"     NMS of 16128 dense predictions (CPU)  {nms:8.1f} images/s ({1000 / nms:.1f} ms; on the GPU there)")
    for cfg in ("yolov5n.yaml", "yolov5s.yaml"):
        backward, step = step_host_ms(cfg, data["nc"], hyp)
        print(f"  4. host time of a {cfg[:-5]} step (batch 2, imgsz 32): forward+loss+backward {backward:6.1f} ms, "
              f"optimizer+EMA {step:6.1f} ms (an upper bound)")

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "tiny.yaml"
        cfg_path.write_text(yaml.safe_dump(TINY_CFG))
        epochs, steps, ends = loop_figures(opt, cfg_path)
    torch.set_num_threads(1)
    cores = opt.workers + 1
    print(f"  5. the loop, tiny model, --workers {opt.workers} ({cores} processes), epochs after the first, wall time:")
    for e, (t, s, end) in enumerate(zip(epochs, steps, ends)):
        if e:
            print(f"     epoch {e + 1}: {t:6.2f} s ({n / t / cores:6.1f} items/s per core), steps {s:5.2f} s, "
                  f"rest {t - s:5.2f} s ({n / (t - s) / cores:6.1f} items/s per core), end of epoch {end:5.2f} s")


if __name__ == "__main__":
    main()
