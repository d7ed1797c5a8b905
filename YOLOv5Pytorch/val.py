"""Validate a checkpoint on a dataset: P, R, mAP50, mAP50-95 overall and per class.

    python YOLOv5Pytorch/val.py --weights runs/train/exp/weights/best.pt --data data/NWPU.yaml --imgsz 512
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tqdm import tqdm

from yolocore.boxes import scale_boxes, xywh2xyxy, xyxy2xywhn
from yolocore.config import increment_path, load_data_yaml
from yolocore.metrics import ConfusionMatrix, ap_per_class, match_predictions
from yolocore.plots import plot_images
from yolocore.results import format_metrics_table
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Pytorch.utils.dataloader import create_dataloader
from YOLOv5Pytorch.utils.framework import autocast, images_to_tensor, select_device
from YOLOv5Pytorch.utils.general import non_max_suppression

IOUV = np.linspace(0.5, 0.95, 10)


def predictions_to_plot_targets(out, h, w):
    """NMS output per image -> (n, 7) [image, class, cx, cy, w, h, conf] normalised, for plot_images."""
    rows = []
    for i, o in enumerate(out):
        o = o.float().cpu().numpy()
        box = xyxy2xywhn(o[:, :4], w=w, h=h)
        rows.append(np.concatenate((np.full((len(o), 1), i), o[:, 5:6], box, o[:, 4:5]), 1))
    return np.concatenate(rows, 0) if rows else np.zeros((0, 7))


@torch.no_grad()
def run(model, dataloader, names, device, conf_thres=0.001, iou_thres=0.6, max_det=300, compute_loss=None,
        save_dir=None, plots=False, verbose=False):
    """Returns ((P, R, mAP50, mAP50-95, val box, obj, cls losses), per-class mAP50-95 (nc,))."""
    model.eval()
    nc = len(names)
    confusion = ConfusionMatrix(nc)
    loss = torch.zeros(3, device=device)
    stats, seen = [], 0
    bar = tqdm(dataloader, desc=f"{'val':>10}", bar_format="{l_bar}{bar:10}{r_bar}", leave=False)
    for bi, (imgs, targets, paths, shapes) in enumerate(bar):
        im = images_to_tensor(imgs, device)
        targets = targets.to(device)
        with autocast(device):
            preds, train_out = model(im)
        if compute_loss:
            loss += compute_loss(train_out, targets)[1]
        out = non_max_suppression(preds.float(), conf_thres, iou_thres, multi_label=True, max_det=max_det)
        h, w = im.shape[2:]
        targets_np = targets.cpu().numpy()
        for si, pred in enumerate(out):
            seen += 1
            labels = targets_np[targets_np[:, 0] == si, 1:]
            predn = pred.float().cpu().numpy().copy()
            shape0, ratio_pad = shapes[si]
            scale_boxes((h, w), predn[:, :4], shape0, ratio_pad)
            tbox = xywh2xyxy(labels[:, 1:5] * np.array([w, h, w, h]))
            scale_boxes((h, w), tbox, shape0, ratio_pad)
            labelsn = np.concatenate((labels[:, :1], tbox), 1)
            correct = match_predictions(predn, labelsn, IOUV) if len(predn) else np.zeros((0, len(IOUV)), bool)
            if plots:
                confusion.process_batch(predn if len(predn) else None, labelsn)
            stats.append((correct, predn[:, 4], predn[:, 5], labels[:, 0]))
        if plots and save_dir and bi < 3:
            plot_images(imgs, targets_np, paths, save_dir / f"val_batch{bi}_labels.jpg", names)
            predicted = predictions_to_plot_targets(out, h, w)
            plot_images(imgs, predicted, paths, save_dir / f"val_batch{bi}_pred.jpg", names)

    tp, conf, pred_cls, target_cls = (np.concatenate(x, 0) for x in zip(*stats))
    nt = np.bincount(target_cls.astype(int), minlength=nc)
    mp = mr = map50 = map_ = 0.0
    maps = np.zeros(nc)
    if len(tp) and tp.any():
        _, _, p, r, _, ap, ap_class = ap_per_class(tp, conf, pred_cls, target_cls, plot=plots,
                                                    save_dir=save_dir or ".", names=names)
        ap50, ap = ap[:, 0], ap.mean(1)
        mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), ap.mean()
        maps += map_
        maps[ap_class.astype(int)] = ap
        table = format_metrics_table(names, seen, nt, p, r, ap50, ap, ap_class)
    else:
        table = format_metrics_table(names, seen, nt, [], [], [], [], [])
    print(table if verbose else table.splitlines()[0] + "\n" + table.splitlines()[1])
    if plots and save_dir:
        confusion.plot(save_dir, names)
    return (float(mp), float(mr), float(map50), float(map_), *(loss.cpu() / len(dataloader)).tolist()), maps


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) to evaluate")
    parser.add_argument("--data", required=True, help="dataset yaml")
    parser.add_argument("--task", default="val", choices=("train", "val"), help="which split to evaluate")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--conf-thres", type=float, default=0.001)
    parser.add_argument("--iou-thres", type=float, default=0.6)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--device", default="")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--project", default="runs/val")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")
    return parser.parse_args(argv)


def main(opt):
    device = select_device(opt.device)
    data = load_data_yaml(opt.data)
    ckpt = load_checkpoint(opt.weights)
    if ckpt["nc"] != data["nc"] or list(ckpt["names"]) != data["names"]:
        raise ValueError(f"{opt.weights} was trained on classes {ckpt['names']}, but {opt.data} has {data['names']}")
    model = model_from_checkpoint(ckpt, device)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    loader, _ = create_dataloader(data[opt.task], opt.imgsz, opt.batch_size, data["nc"], workers=opt.workers,
                                  prefix=f"{opt.task}: ")
    results, _ = run(model, loader, data["names"], device, opt.conf_thres, opt.iou_thres, opt.max_det,
                     save_dir=save_dir, plots=True, verbose=True)
    print(f"Results saved to {save_dir}")
    return results


if __name__ == "__main__":
    try:
        main(parse_opt())
    except (FileNotFoundError, ValueError) as e:  # bad input: the message names the file; no traceback
        sys.exit(f"val.py: error: {e}")
