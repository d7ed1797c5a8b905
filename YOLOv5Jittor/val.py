"""Validate a checkpoint on a dataset: P, R, mAP50, mAP50-95 overall and per class; --save-json adds COCO's AP
for small, medium and large objects.

    python YOLOv5Jittor/val.py --weights runs/train/exp/weights/best.pkl --data data/NWPU.yaml --imgsz 512

--weights also takes an .onnx written by export.py, run by ONNX Runtime on the CPU.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
import jittor as jt
# isort: on
import numpy as np

from yolocore.cli import parse_val_options, run_script
from yolocore.config import increment_path
from yolocore.deployment.onnx_model import inference_shape
from yolocore.evaluation.validation import Evaluator, checked_val_inputs, val_progress
from YOLOv5Jittor.utils.checkpoint import load_model
from YOLOv5Jittor.utils.dataloader import create_dataloader
from YOLOv5Jittor.utils.framework import autocast, images_to_tensor, mixed_precision, select_device
from YOLOv5Jittor.utils.nms import non_max_suppression


def run(model, dataloader, names, device, conf_thres=0.001, iou_thres=0.6, max_det=300, compute_loss=None,
        save_dir=None, plots=False, verbose=False, save_json=False, amp=True):
    """Returns ((P, R, mAP50, mAP50-95, val box, obj, cls losses), per-class mAP50-95 (nc,)). save_json adds
    COCO's evaluation and its json files in save_dir; amp=False keeps float32 where the tree would use mixed
    precision."""
    model.eval()
    evaluator = Evaluator(names, plots, save_dir, save_json)
    loss = np.zeros(3)
    for imgs, targets, paths, shapes in val_progress(dataloader):
        im = images_to_tensor(imgs, device)
        targets = jt.array(targets)
        with jt.no_grad(), autocast(device, amp):
            preds, train_out = model(im)
            if compute_loss:
                loss += compute_loss(train_out, targets)[1].numpy()
            out = non_max_suppression(preds.float(), conf_thres, iou_thres, multi_label=True, max_det=max_det)
        evaluator.add_batch(imgs, targets.numpy(), [o.numpy() for o in out], paths, shapes)
    metrics, maps = evaluator.summary(verbose)
    return (*metrics, *(loss / len(dataloader)).tolist()), maps


def parse_opt(argv=None):
    return parse_val_options(argv, __doc__)


def main(opt):
    device = select_device(opt.device)
    data, model = checked_val_inputs(opt, lambda weights: load_model(weights, device))
    imgsz, batch_size, rect = inference_shape(model, opt.imgsz, opt.batch_size)
    loader, _ = create_dataloader(data[opt.task], imgsz, batch_size, data["nc"], workers=opt.workers,
                                  prefix=f"{opt.task}: ", rect=rect)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    results, _ = run(model, loader, data["names"], device, opt.conf_thres, opt.iou_thres, opt.max_det,
                     save_dir=save_dir, plots=True, verbose=True, save_json=opt.save_json,
                     amp=mixed_precision(device, opt.noamp))
    print(f"Results saved to {save_dir}")
    return results


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
