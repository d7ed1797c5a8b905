"""Run a checkpoint on images; write them with drawn boxes and, with --save-txt, YOLO-format predictions.
Folders are searched recursively; a name met again in another folder is written as NAME_2, NAME_3, ...

    python YOLOv5Pytorch/detect.py --weights runs/train/exp/weights/best.pt --source IMG_OR_DIR --imgsz 512
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from tqdm import tqdm

from yolocore.augment import check_imgsz, letterbox
from yolocore.boxes import scale_boxes, xyxy2xywhn
from yolocore.cli import parse_detect_options, run_script
from yolocore.config import increment_path
from yolocore.labels import imread, list_image_files, unique_names
from yolocore.plots import draw_detections
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Pytorch.utils.framework import images_to_tensor, select_device
from YOLOv5Pytorch.utils.nms import non_max_suppression


def parse_opt(argv=None):
    return parse_detect_options(argv, __doc__)


def detect_image(model, im0, imgsz, device, conf_thres=0.25, iou_thres=0.45, max_det=1000):
    """Detections (n, 6) [x1, y1, x2, y2, conf, cls] in the pixels of the BGR image im0."""
    stride = int(model.stride.max())
    im, _, _ = letterbox(im0, imgsz, auto=True, stride=stride)
    im = np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])[None]
    with torch.no_grad():
        pred = model(images_to_tensor(im, device))[0]
        det = non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det)[0].cpu().numpy()
    scale_boxes(im.shape[2:], det[:, :4], im0.shape[:2])
    return det


def main(opt):
    device = select_device(opt.device)
    model = model_from_checkpoint(load_checkpoint(opt.weights), device)
    check_imgsz(opt.imgsz, int(model.stride.max()))
    files, messages = list_image_files([opt.source])
    for m in messages:
        print(f"WARNING {m}")
    if not files:
        raise FileNotFoundError(f"--source {opt.source}: no images found")
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    found, unreadable = 0, 0
    for f, name in tqdm(list(zip(files, unique_names(files))), desc="detect"):
        im0 = imread(f)
        if im0 is None:
            print(f"WARNING {f}: cannot read this image, skipped")
            unreadable += 1
            continue
        det = detect_image(model, im0, opt.imgsz, device, opt.conf_thres, opt.iou_thres, opt.max_det)
        found += len(det)
        drawn = draw_detections(im0.copy(), det[:, :4], det[:, 5].astype(int), det[:, 4], model.names)
        cv2.imwrite(str(save_dir / f"{name}{Path(f).suffix}"), drawn)
        if opt.save_txt:
            xywhn = xyxy2xywhn(det[:, :4], w=im0.shape[1], h=im0.shape[0])
            with open(save_dir / "labels" / f"{name}.txt", "w") as out:
                for (cx, cy, w, h), conf, c in zip(xywhn, det[:, 4], det[:, 5]):
                    out.write(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" + (f" {conf:.5f}" if opt.save_conf else "")
                              + "\n")
    skipped = f" ({unreadable} unreadable, skipped)" if unreadable else ""
    print(f"{found} detections in {len(files) - unreadable} images{skipped}, saved to {save_dir}")
    return save_dir


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
