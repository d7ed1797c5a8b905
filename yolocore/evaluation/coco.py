"""COCO-style evaluation of a validation run with pycocotools, beside YOLOv5's own mAP.

The FGD paper, like most detection papers, reports COCO's AP, AP50, AP75 and AP for small, medium and large
objects (areas below 32², below 96², and above, in the original image's pixels). YOLOv5's table has no sizes, and
its interpolation differs slightly from COCO's, so a study that wants the paper's columns needs COCOeval itself.
"""
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np

from yolocore.config import write_text_atomically
from yolocore.evaluation.boxes import box_iou, greedy_keep

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCO's AP and AP50 with every class made one (merge_classes): how well a model finds and places the objects,
# whatever it calls them. On the cheap protocol, whose tiny student confuses some classes in some runs and not in
# others, this is the figure that rounding moves least (docs/protocol.md).
AGNOSTIC_NAMES = ("AP_agnostic", "AP50_agnostic")


def _xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


class CocoRecorder:
    """Collects every validated image's labels and detections, in its original pixels, as COCO json."""

    def __init__(self, names):
        self.names = list(names)
        self.images = {}

    def add(self, path, shape, labels, detections):
        """shape (h, w) of the original image; labels (n, 5) [class, x1, y1, x2, y2] and detections (k, 6)
        [x1, y1, x2, y2, conf, class], both in its pixels."""
        self.images[str(path)] = (int(shape[0]), int(shape[1]), np.asarray(labels), np.asarray(detections))

    def to_coco(self):
        """(ground truth, detections) as COCO's annotation file and result list. Image ids number the paths in
        sorted order from 1, so they do not depend on the order of the validation batches; category ids are the
        dataset's class indices. Detections are rounded as ultralytics' --save-json rounds them."""
        images, annotations, detections = [], [], []
        for image_id, path in enumerate(sorted(self.images), 1):
            h, w, labels, dets = self.images[path]
            images.append({"id": image_id, "file_name": path, "height": h, "width": w})
            for c, *box in labels.tolist():
                bbox = _xywh(box)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c),
                                    "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
            for *box, score, c in dets.tolist():
                detections.append({"image_id": image_id, "category_id": int(c),
                                   "bbox": [round(v, 3) for v in _xywh(box)], "score": round(score, 5)})
        categories = [{"id": i, "name": name} for i, name in enumerate(self.names)]
        return {"images": images, "annotations": annotations, "categories": categories}, detections


def coco_evaluate(ground_truth, detections):
    """COCOeval on boxes: (the 12 figures of STAT_NAMES, pycocotools' summary text). A figure whose objects
    are absent (no large objects, say) is -1, as pycocotools reports it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not ground_truth["annotations"]:
        raise ValueError("COCO evaluation needs labelled objects, and the split has none")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        if detections:
            coco_dt = coco_gt.loadRes(detections)
        else:  # loadRes refuses an empty list; no detections is a valid result (every AP 0)
            coco_dt = COCO()
            coco_dt.dataset = {**ground_truth, "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64), summary.getvalue().rstrip()


def merge_classes(ground_truth, detections, iou_thres=0.6):
    """(ground truth, detections) as COCO json with every class made one. Validation keeps a box once per class it
    passes the threshold for (multi-label NMS), so the detections go through a class-agnostic NMS at val's IoU
    threshold first: each box counts once, with its highest score."""
    truth = {**ground_truth, "categories": [{"id": 0, "name": "object"}],
             "annotations": [{**a, "category_id": 0} for a in ground_truth["annotations"]]}
    by_image = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    merged = []
    for image_detections in by_image.values():
        boxes = np.array([d["bbox"] for d in image_detections], dtype=np.float64)  # x, y, w, h
        boxes[:, 2:] += boxes[:, :2]
        order = np.argsort([-d["score"] for d in image_detections], kind="stable")
        sorted_boxes = boxes[order]
        kept = greedy_keep(box_iou(sorted_boxes, sorted_boxes) > iou_thres, np.zeros(len(order), bool), len(order))
        merged += [{**image_detections[i], "category_id": 0} for i in order[kept]]
    return truth, merged


def agnostic_figures(ground_truth, detections):
    """{AGNOSTIC_NAMES: figure}: COCO's AP and AP50 with every class made one."""
    stats, _ = coco_evaluate(*merge_classes(ground_truth, detections))
    return dict(zip(AGNOSTIC_NAMES, stats[:2].tolist()))


def agnostic_figures_of_files(save_dir):
    """agnostic_figures from the annotations.json and predictions.json a validation wrote, for runs whose coco.csv
    predates them; None without those files or pycocotools."""
    save_dir = Path(save_dir)
    files = [save_dir / "annotations.json", save_dir / "predictions.json"]
    if not all(f.is_file() for f in files) or importlib.util.find_spec("pycocotools") is None:
        return None
    ground_truth, detections = (json.loads(f.read_text()) for f in files)
    return agnostic_figures(ground_truth, detections) if ground_truth["annotations"] else None


def save_coco(recorder, save_dir):
    """Writes annotations.json (ground truth), predictions.json (detections) and coco.csv (the 12 figures, then
    the two of AGNOSTIC_NAMES) to save_dir, prints pycocotools' summary, and returns the figures by name.
    pycocotools reads the two json files back to the same figures:
    `COCOeval(COCO(annotations.json), COCO(...).loadRes(predictions.json), 'bbox')`.
    A split without labels (a test set scored elsewhere), or a machine without pycocotools, gets the json files
    only, and None."""
    save_dir = Path(save_dir)
    ground_truth, detections = recorder.to_coco()
    write_text_atomically(save_dir / "annotations.json", json.dumps(ground_truth))
    write_text_atomically(save_dir / "predictions.json", json.dumps(detections))
    if not ground_truth["annotations"]:
        print(f"COCO evaluation: no labelled objects; {len(detections)} detections written to predictions.json")
        return None
    if importlib.util.find_spec("pycocotools") is None:  # a training's last step should not fail for want of it
        print("COCO evaluation skipped: pycocotools is not installed (pip install -r requirements.txt); "
              "annotations.json and predictions.json are written")
        return None
    stats, summary = coco_evaluate(ground_truth, detections)
    named = {**dict(zip(STAT_NAMES, stats.tolist())), **agnostic_figures(ground_truth, detections)}
    write_text_atomically(save_dir / "coco.csv", ",".join(named) + "\n" + ",".join(f"{v:.6g}" for v in named.values())
                          + "\n")
    print(f"COCO evaluation (pycocotools; at most 100 detections an image; areas in original pixels):\n{summary}\n"
          f"With every class made one: AP {named['AP_agnostic']:.3f}, AP50 {named['AP50_agnostic']:.3f}")
    return named


def read_coco_csv(path):
    """coco.csv -> {name: figure}."""
    header, values = Path(path).read_text().splitlines()[:2]
    return dict(zip(header.split(","), (float(v) for v in values.split(","))))
