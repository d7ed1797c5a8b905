"""Validate a checkpoint on a dataset: P, R, mAP50, mAP50-95 overall and per class; --save-json adds COCO's AP
for small, medium and large objects.

    python YOLOv5Pytorch/val.py --weights runs/train/exp/weights/best.pt --data data/NWPU.yaml --imgsz 512

--weights also takes an .onnx written by export.py, run by ONNX Runtime on the CPU.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from yolocore.cli import parse_val_options, run_script
from yolocore.evaluation.validation import val_main, validate
from YOLOv5Pytorch.utils.checkpoint import load_model
from YOLOv5Pytorch.utils.dataloader import create_dataloader
from YOLOv5Pytorch.utils.framework import autocast, images_to_tensor, mixed_precision, select_device
from YOLOv5Pytorch.utils.nms import non_max_suppression


def run(model, dataloader, names, device, conf_thres=0.001, iou_thres=0.6, max_det=300, compute_loss=None,
        save_dir=None, plots=False, verbose=False, save_json=False, amp=False):
    """yolocore.evaluation.validation.validate with this tree's model, NMS and loss; amp (framework.mixed_precision's
    answer) runs the forward under autocast."""
    model.eval()

    @torch.no_grad()
    def predict(imgs, targets):
        with autocast(device, amp):
            preds, train_out = model(images_to_tensor(imgs, device))
            loss = compute_loss(train_out, targets.to(device))[1].cpu().numpy() if compute_loss else 0
            out = non_max_suppression(preds.float(), conf_thres, iou_thres, multi_label=True, max_det=max_det)
        return [o.cpu().numpy() for o in out], loss

    return validate(dataloader, names, predict, plots, save_dir, save_json, verbose)


def parse_opt(argv=None):
    return parse_val_options(argv, __doc__)


def main(opt):
    return val_main(opt, select_device, load_model, create_dataloader, run, mixed_precision)


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
