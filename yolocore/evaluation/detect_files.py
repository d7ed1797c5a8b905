"""Framework-neutral half of detect.py (both trees): read the images of --source, write each with its boxes drawn
and, with --save-txt, its YOLO-format predictions. The tree's detect.py hands in the network as a function of one
image."""
from pathlib import Path

import cv2
from tqdm import tqdm

from yolocore.config import increment_path
from yolocore.data.augment import check_imgsz
from yolocore.data.labels import imread, list_image_files, unique_names
from yolocore.deployment.onnx_model import inference_shape
from yolocore.evaluation.boxes import xyxy2xywhn
from yolocore.plots.detection import draw_detections


def write_labels(path, det, im_shape, save_conf):
    """YOLO-format lines [cls cx cy w h (conf)] of detections (n, 6) in the pixels of an image of im_shape."""
    xywhn = xyxy2xywhn(det[:, :4], w=im_shape[1], h=im_shape[0])
    with open(path, "w") as out:
        for (cx, cy, w, h), conf, c in zip(xywhn, det[:, 4], det[:, 5]):
            out.write(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" + (f" {conf:.5f}" if save_conf else "") + "\n")


def detect_files(opt, names, stride, detect):
    """detect.py's run over opt.source, into a new folder opt.project/opt.name, which it returns. detect(BGR image)
    -> detections (n, 6) [x1, y1, x2, y2, conf, cls] in its pixels; names and stride are the model's."""
    check_imgsz(opt.imgsz, stride)
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
        det = detect(im0)
        found += len(det)
        drawn = draw_detections(im0.copy(), det[:, :4], det[:, 5].astype(int), det[:, 4], names)
        cv2.imwrite(str(save_dir / f"{name}{Path(f).suffix}"), drawn)
        if opt.save_txt:
            write_labels(save_dir / "labels" / f"{name}.txt", det, im0.shape, opt.save_conf)
    skipped = f" ({unreadable} unreadable, skipped)" if unreadable else ""
    print(f"{found} detections in {len(files) - unreadable} images{skipped}, saved to {save_dir}")
    return save_dir


def detect_main(opt, select_device, load_model, detect_image):
    """detect.py's main, given the tree's functions of those names: run --weights (a checkpoint or an .onnx) on
    --source and write what detect_files writes."""
    device = select_device(opt.device)
    model = load_model(opt.weights, device)
    opt.imgsz, _, rect = inference_shape(model, opt.imgsz, 1)
    return detect_files(opt, model.names, int(model.stride.max()), lambda im0: detect_image(
        model, im0, opt.imgsz, device, opt.conf_thres, opt.iou_thres, opt.max_det, rect))
