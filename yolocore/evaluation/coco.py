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

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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


def save_coco(recorder, save_dir):
    """Writes annotations.json (ground truth), predictions.json (detections) and coco.csv (the 12 figures) to
    save_dir, prints pycocotools' summary, and returns the figures by name. pycocotools reads the two json files
    back to the same figures: `COCOeval(COCO(annotations.json), COCO(...).loadRes(predictions.json), 'bbox')`.
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
    figures = ",".join(f"{v:.6g}" for v in stats)
    write_text_atomically(save_dir / "coco.csv", ",".join(STAT_NAMES) + "\n" + figures + "\n")
    print(f"COCO evaluation (pycocotools; at most 100 detections an image; areas in original pixels):\n{summary}")
    return dict(zip(STAT_NAMES, stats.tolist()))


def read_coco_csv(path):
    """coco.csv -> {name: figure}."""
    header, values = Path(path).read_text().splitlines()[:2]
    return dict(zip(header.split(","), (float(v) for v in values.split(","))))
