"""Validation bookkeeping shared by both trees: match each image's detections to its labels, then summarise.

A tree runs its model and NMS, hands the numpy results of each batch to Evaluator.add_batch, and calls
summary() at the end, so P, R and mAP are computed by the same code whatever the framework."""
import csv
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yolocore.config import increment_path, load_data_yaml
from yolocore.deployment.onnx_model import inference_shape
from yolocore.evaluation.boxes import scale_boxes, xywh2xyxy, xyxy2xywhn
from yolocore.evaluation.coco import CocoRecorder, save_coco
from yolocore.evaluation.metrics import ConfusionMatrix, ap_per_class, match_predictions
from yolocore.plots.detection import plot_images
from yolocore.training.results import format_metrics_table

IOUV = np.linspace(0.5, 0.95, 10)  # IoU thresholds of mAP50-95
PLOTTED_BATCHES = 3
PER_CLASS_FIELDS = ("class", "images", "instances", "P", "R", "AP50", "AP50-95")


def detections_to_plot_targets(detections, h, w):
    """Per-image (n, 6) [x1, y1, x2, y2, conf, cls] pixels -> (N, 7) [image, class, cx, cy, w, h, conf] normalised."""
    rows = [np.concatenate((np.full((len(d), 1), i), d[:, 5:6], xyxy2xywhn(d[:, :4], w=w, h=h), d[:, 4:5]), 1)
            for i, d in enumerate(detections)]
    return np.concatenate(rows, 0) if rows else np.zeros((0, 7))


def write_per_class_csv(path, names, images, instances, p, r, ap50, ap, ap_class):
    """per_class.csv: one row per class of the dataset, in class order. images and instances (nc,) count the
    images holding the class and its boxes; p, r, ap50, ap are in ap_class order. A class with no instances in
    the split has empty P, R and AP cells (undefined, not zero); a present class that ap_class lacks scored 0."""
    metrics = {int(c): (p[i], r[i], ap50[i], ap[i]) for i, c in enumerate(np.asarray(ap_class).astype(int))}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PER_CLASS_FIELDS)
        for c, name in enumerate(names):
            values = metrics.get(c, (0.0,) * 4) if instances[c] else (None,) * 4
            writer.writerow([name, int(images[c]), int(instances[c]),
                             *("" if v is None else f"{float(v):.6g}" for v in values)])
    os.replace(tmp, path)  # a reader never sees half a table
    return path


def val_progress(dataloader):
    """The progress bar val.py shows over a loader's batches."""
    return tqdm(dataloader, desc=f"{'val':>10}", bar_format="{l_bar}{bar:10}{r_bar}", leave=False)


def checked_val_inputs(opt, load_model):
    """(data yaml dict, model) of val.py's options, once the split exists and the classes agree; load_model(weights)
    is the tree's (a checkpoint's network or an exported .onnx, with its class names)."""
    data = load_data_yaml(opt.data)
    if opt.task not in data:
        raise ValueError(f"--task {opt.task}: {opt.data} names no {opt.task} split")
    model = load_model(opt.weights)
    if list(model.names) != data["names"]:
        raise ValueError(f"{opt.weights} was trained on classes {list(model.names)}, but {opt.data} has "
                         f"{data['names']}")
    return data, model


class Evaluator:
    def __init__(self, names, plots=False, save_dir=None, save_json=False):
        """save_json: also evaluate as COCO does, writing its json files to save_dir (yolocore.evaluation.coco)."""
        if save_json and save_dir is None:
            raise ValueError("save_json needs a save_dir for its json files")
        self.names, self.plots, self.save_dir = names, plots and save_dir is not None, save_dir
        self.confusion = ConfusionMatrix(len(names))
        self.coco = CocoRecorder(names) if save_json else None
        self.stats, self.seen, self.batches = [], 0, 0

    def add_batch(self, imgs, targets, detections, paths, shapes):
        """imgs (B, 3, H, W) as fed to the model, targets (n, 6) [image, class, cx, cy, w, h] normalised,
        detections per image (k, 6) [x1, y1, x2, y2, conf, cls] in the pixels of imgs, shapes from the dataset."""
        h, w = imgs.shape[2:]
        for si, det in enumerate(detections):
            self.seen += 1
            labels = targets[targets[:, 0] == si, 1:]
            predn = det.copy()
            shape0, ratio_pad = shapes[si]
            scale_boxes((h, w), predn[:, :4], shape0, ratio_pad)
            tbox = xywh2xyxy(labels[:, 1:5] * np.array([w, h, w, h]))
            scale_boxes((h, w), tbox, shape0, ratio_pad)
            labelsn = np.concatenate((labels[:, :1], tbox), 1)
            correct = match_predictions(predn, labelsn, IOUV) if len(predn) else np.zeros((0, len(IOUV)), bool)
            if self.plots:
                self.confusion.process_batch(predn if len(predn) else None, labelsn)
            if self.coco:
                self.coco.add(paths[si], shape0, labelsn, predn)
            self.stats.append((correct, predn[:, 4], predn[:, 5], labels[:, 0]))
        if self.plots and self.batches < PLOTTED_BATCHES:
            b = self.batches
            plot_images(imgs, targets, paths, self.save_dir / f"val_batch{b}_labels.jpg", self.names)
            plot_images(imgs, detections_to_plot_targets(detections, h, w), paths,
                        self.save_dir / f"val_batch{b}_pred.jpg", self.names)
        self.batches += 1

    def summary(self, verbose=False):
        """Prints the metrics table; returns ((P, R, mAP50, mAP50-95), per-class mAP50-95 (nc,)). With plots, also
        writes the curves, the confusion matrix and per_class.csv (P, R, AP50, AP50-95 of every class) to save_dir;
        with save_json, COCO's figures and files (coco.csv, the json files)."""
        nc = len(self.names)
        tp, conf, pred_cls, target_cls = (np.concatenate(x, 0) for x in zip(*self.stats))
        nt = np.bincount(target_cls.astype(int), minlength=nc)
        mp = mr = map50 = map_ = 0.0
        maps = np.zeros(nc)
        p = r = ap50 = ap = ap_class = np.zeros(0)
        if len(tp) and tp.any():
            _, _, p, r, _, ap, ap_class = ap_per_class(tp, conf, pred_cls, target_cls, plot=self.plots,
                                                        save_dir=self.save_dir or ".", names=self.names)
            ap50, ap = ap[:, 0], ap.mean(1)
            mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), ap.mean()
            maps += map_
            maps[ap_class.astype(int)] = ap
        table = format_metrics_table(self.names, self.seen, nt, p, r, ap50, ap, ap_class)
        print(table if verbose else "\n".join(table.splitlines()[:2]))
        if self.plots:
            self.confusion.plot(self.save_dir, self.names)
            images = np.zeros(nc, int)
            for *_, labels in self.stats:
                images[np.unique(labels.astype(int))] += 1
            write_per_class_csv(Path(self.save_dir) / "per_class.csv", self.names, images, nt, p, r, ap50, ap,
                                ap_class)
        if self.coco:
            save_coco(self.coco, self.save_dir)
        return (float(mp), float(mr), float(map50), float(map_)), maps


def validate(dataloader, names, predict, plots=False, save_dir=None, save_json=False, verbose=False):
    """val.py's pass over a loader, in either tree: predict(images, targets) as the loader gives them -> (detections
    per image, numpy (k, 6) [x1, y1, x2, y2, conf, cls]; loss items, numpy (3,), or 0). Returns ((P, R, mAP50,
    mAP50-95, val box, obj, cls losses), per-class mAP50-95 (nc,)). save_json adds COCO's evaluation and its json
    files in save_dir."""
    evaluator = Evaluator(names, plots, save_dir, save_json)
    loss = np.zeros(3)
    for imgs, targets, paths, shapes in val_progress(dataloader):
        detections, items = predict(imgs, targets)
        loss += items
        evaluator.add_batch(np.asarray(imgs), np.asarray(targets), detections, paths, shapes)
    metrics, maps = evaluator.summary(verbose)
    return (*metrics, *(loss / len(dataloader)).tolist()), maps


def val_main(opt, select_device, load_model, create_dataloader, run, mixed_precision):
    """val.py's main, given the tree's functions of those names: validate --weights (a checkpoint or an .onnx) on
    the --task split, into a new folder under --project."""
    device = select_device(opt.device)
    data, model = checked_val_inputs(opt, lambda weights: load_model(weights, device))
    imgsz, batch_size, rect = inference_shape(model, opt.imgsz, opt.batch_size)
    loader, _ = create_dataloader(data[opt.task], imgsz, batch_size, data["nc"], workers=opt.workers,
                                  prefix=f"{opt.task}: ", rect=rect)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    results, _ = run(model, loader, data["names"], device, opt.conf_thres, opt.iou_thres, opt.max_det,
                     save_dir=save_dir, plots=True, verbose=True, save_json=opt.save_json,
                     amp=mixed_precision(device, opt.noamp, opt.amp))
    print(f"Results saved to {save_dir}")
    return results
