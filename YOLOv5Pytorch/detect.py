"""Run a checkpoint on images; write them with drawn boxes and, with --save-txt, YOLO-format predictions.
Folders are searched recursively; a name met again in another folder is written as NAME_2, NAME_3, ...

    python YOLOv5Pytorch/detect.py --weights runs/train/exp/weights/best.pt --source IMG_OR_DIR --imgsz 512
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from yolocore.cli import parse_detect_options, run_script
from yolocore.data.augment import letterbox, network_input
from yolocore.evaluation.boxes import scale_boxes
from yolocore.evaluation.detect_files import detect_files
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Pytorch.utils.framework import images_to_tensor, select_device
from YOLOv5Pytorch.utils.nms import non_max_suppression


def parse_opt(argv=None):
    return parse_detect_options(argv, __doc__)


def detect_image(model, im0, imgsz, device, conf_thres=0.25, iou_thres=0.45, max_det=1000):
    """Detections (n, 6) [x1, y1, x2, y2, conf, cls] in the pixels of the BGR image im0."""
    stride = int(model.stride.max())
    im, _, _ = letterbox(im0, imgsz, auto=True, stride=stride)
    im = network_input(im)
    with torch.no_grad():
        pred = model(images_to_tensor(im, device))[0]
        det = non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det)[0].cpu().numpy()
    scale_boxes(im.shape[2:], det[:, :4], im0.shape[:2])
    return det


def main(opt):
    device = select_device(opt.device)
    model = model_from_checkpoint(load_checkpoint(opt.weights), device)
    return detect_files(opt, model.names, int(model.stride.max()), lambda im0: detect_image(
        model, im0, opt.imgsz, device, opt.conf_thres, opt.iou_thres, opt.max_det))


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
