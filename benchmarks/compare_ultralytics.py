"""Our val.py, detect.py and training loss against ultralytics YOLOv5's own, on the same weights and images.

Both evaluate one checkpoint (either tree's, or an ultralytics .pt): ultralytics' val.run and our val.py on the
dataset's val split (with --save-json: pycocotools scores either's predictions json), then ultralytics' detect.run
and our detect.py on its val images, then both ComputeLoss on the train-mode outputs of our model for one augmented
training batch. Printed: both P, R, mAP50 and mAP50-95, the largest per-class AP50-95 difference, both sets of COCO
figures (AP, AP50, AP75, AP small / medium / large, AR; ultralytics' json boxes sit up to 0.4 % short in x, so its
figures differ a little, see QuestionAndAnswer.md), how far apart the detected boxes are, and both losses.
Validation follows YOLOv5 (rectangular batches, conf 0.001, IoU 0.6); detection too (conf 0.25, IoU 0.45, each
image padded to stride multiples only).

It needs ultralytics' code, from PyPI's `yolov5` package (release v7.0), in an environment of its own whose torch
has its torchvision (this project's pinned CPU torch has none):

    python -m venv ul && ul/bin/pip install torch torchvision 'numpy<2' 'opencv-python-headless<4.12' matplotlib \
        pyyaml tqdm pandas seaborn scipy requests psutil pycocotools 'setuptools<70' \
        && ul/bin/pip install --no-deps yolov5==7.0.14
    ul/bin/python benchmarks/compare_ultralytics.py --weights runs/train/exp/weights/best.pt --data data/NWPU.yaml \
        --imgsz 512

That package reaches for the network (the Hugging Face hub for weights, a font download, the `ultralytics` package
for a requirements check); this script replaces those three calls with no-ops, lets torch.load read the pickled
model that ultralytics' loader expects (in its calls only), and touches nothing that evaluates.
"""
import argparse
import contextlib
import csv
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolocore.config import ROOT, load_data_yaml, load_hyp
from yolocore.data.dataset import YoloDataset
from yolocore.data.labels import list_image_files
from yolocore.evaluation.boxes import xywhn2xyxy
from yolocore.evaluation.coco import STAT_NAMES, coco_evaluate, read_coco_csv
from yolocore.training.recipe import loss_gains
from YOLOv5Pytorch import detect, val
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Pytorch.utils.loss import ComputeLoss


def offline_yolov5():
    """ultralytics' val and detect modules, with their network calls made no-ops."""
    checks = types.ModuleType("ultralytics.utils.checks")
    checks.check_requirements = lambda *args, **kwargs: None
    for name in ("ultralytics", "ultralytics.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules.setdefault("ultralytics.utils.checks", checks)
    if importlib.util.find_spec("yolov5") is None:
        sys.exit("compare_ultralytics.py: error: ultralytics' yolov5 package is not installed here; run this script "
                 "with the environment its docstring sets up (ul/bin/python)")
    import yolov5.models.common as common
    import yolov5.utils.downloads as downloads
    import yolov5.utils.general as general
    from yolov5 import detect, val

    common.attempt_download_from_hub = downloads.attempt_download_from_hub = lambda *args, **kwargs: None
    general.check_font = lambda *args, **kwargs: None
    return val, detect


@contextlib.contextmanager
def pickled_models_loadable():
    """ultralytics loads the pickled model it saves, which torch >= 2.6 refuses by default; our own readers never
    unpickle code, so only ultralytics' calls run inside this."""
    load = torch.load
    torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "weights_only": False})
    try:
        yield
    finally:
        torch.load = load


def ultralytics_model(ckpt):
    """ultralytics' DetectionModel with our checkpoint's weights."""
    from yolov5.models.yolo import DetectionModel

    model = DetectionModel(ckpt["yaml"], ch=3, nc=ckpt["nc"])
    weights = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt["model"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        sys.exit(f"{ckpt['path']}: weights do not fit ultralytics' model ({missing + unexpected})")
    model.nc, model.names = ckpt["nc"], dict(enumerate(ckpt["names"]))
    return model


def compare_loss(ckpt, ul_model, data, imgsz, batch_size):
    """Both ComputeLoss on our model's train-mode outputs for the first augmented training batch of epoch 0:
    (ours (total, box, obj, cls), theirs)."""
    from yolov5.utils.loss import ComputeLoss as UltralyticsLoss

    hyp = load_hyp(ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml")
    dataset = YoloDataset(data["train"], imgsz, augment=True, hyp=hyp, nc=data["nc"], prefix="loss batch: ")
    imgs, targets, _, _ = YoloDataset.collate_fn([dataset[i] for i in range(min(batch_size, len(dataset)))])
    model = model_from_checkpoint(ckpt).train()
    with torch.no_grad():
        outputs = model(torch.from_numpy(imgs).float() / 255)
    gains = loss_gains(hyp, model.model[-1].nl, data["nc"], imgsz)
    ul_model.hyp = gains  # as ultralytics' train.py sets it, gains scaled the same way
    targets = torch.from_numpy(targets)
    return [[float(loss.sum()), *loss_items.tolist()] for loss, loss_items in
            (ComputeLoss(model, gains)(outputs, targets), UltralyticsLoss(ul_model)(outputs, targets))]


def ultralytics_coco_figures(predictions, annotations):
    """COCO's figures for ultralytics' --save-json detections against our annotations.json: its image ids (an
    image's stem, as a number where it is one) are mapped to ours first."""
    ground_truth = json.loads(Path(annotations).read_text())
    ids = {}
    for image in ground_truth["images"]:
        stem = Path(image["file_name"]).stem
        ids[int(stem) if stem.isnumeric() else stem] = image["id"]
    detections = [{**d, "image_id": ids[d["image_id"]]} for d in json.loads(Path(predictions).read_text())]
    return dict(zip(STAT_NAMES, coco_evaluate(ground_truth, detections)[0].tolist()))


def read_boxes(folder, sources):
    """{image stem: rows (n, 6) [cls, x1, y1, x2, y2, conf] in pixels} from detect's --save-txt --save-conf files."""
    sizes = {Path(f).stem: cv2.imread(f).shape[:2] for f in list_image_files(sources)[0]}
    boxes = {}
    for f in Path(folder).glob("*.txt"):
        rows = np.loadtxt(f, ndmin=2).reshape(-1, 6)
        h, w = sizes[f.stem]
        boxes[f.stem] = np.concatenate((rows[:, :1], xywhn2xyxy(rows[:, 1:5], w, h), rows[:, 5:]), 1)
    return boxes


def compare_detections(ours, theirs):
    """(images whose box count or classes differ, largest corner difference in pixels, largest confidence
    difference), each of our boxes set against the nearest of theirs of its class."""
    differing, corner, conf = 0, 0.0, 0.0
    for stem in sorted(set(ours) | set(theirs)):
        a, b = ours.get(stem, np.zeros((0, 6))), theirs.get(stem, np.zeros((0, 6)))
        if len(a) != len(b) or sorted(a[:, 0]) != sorted(b[:, 0]):
            differing += 1
            continue
        if not len(a):
            continue
        other_class = np.where(a[:, None, 0] != b[None, :, 0], np.inf, 0)
        distance = np.abs(a[:, None, 1:5] - b[None, :, 1:5]).max(2) + other_class
        nearest = distance.argmin(1)
        corner = max(corner, distance.min(1).max())
        conf = max(conf, np.abs(a[:, 5] - b[nearest, 5]).max())
    return differing, corner, conf


def main(opt):
    ul_val, ul_detect = offline_yolov5()
    work = Path(tempfile.mkdtemp(prefix="compare_ultralytics_"))
    data = load_data_yaml(opt.data)
    # ultralytics resolves a relative dataset path against its own package, so it gets absolute ones
    data_abs = work / "data.yaml"
    sources = [str(source) for source in data["val"]]
    data_abs.write_text(yaml.safe_dump({"path": str(Path(sources[0]).parent), "train": sources, "val": sources,
                                        "nc": data["nc"], "names": data["names"]}))
    ckpt = load_checkpoint(opt.weights)
    ul_model = ultralytics_model(ckpt)
    ul_weights = work / "ultralytics.pt"
    torch.save({"model": ul_model, "epoch": -1}, ul_weights)  # how ultralytics saves: the pickled model

    common = ["--weights", opt.weights, "--imgsz", str(opt.imgsz), "--device", opt.device, "--project", str(work)]
    ours = val.main(val.parse_opt([*common, "--data", opt.data, "--batch-size", str(opt.batch_size), "--workers",
                                   str(opt.workers), "--name", "val", "--save-json"]))[:4]
    with open(work / "val" / "per_class.csv") as f:
        our_maps = {row["class"]: float(row["AP50-95"]) for row in csv.DictReader(f)}
    with pickled_models_loadable():
        theirs, their_maps = ul_val.run(data=str(data_abs), weights=str(ul_weights), imgsz=opt.imgsz,
                                        batch_size=opt.batch_size, device=opt.device, workers=opt.workers,
                                        half=False, plots=False, save_json=True, project=str(work),
                                        name="ul_val")[:2]  # v7.0.14 returns 4
    print(f"\n{'':12}{'P':>10}{'R':>10}{'mAP50':>10}{'mAP50-95':>10}")
    for name, row in (("ours", ours), ("ultralytics", theirs[:4])):  # theirs goes on with the val losses
        print(f"{name:12}" + "".join(f"{v:10.6f}" for v in row))
    worst = max(abs(our_maps[n] - their_maps[i]) for i, n in enumerate(data["names"]) if n in our_maps)
    print(f"largest difference: {max(abs(a - b) for a, b in zip(ours, theirs)):.2e} overall, "
          f"{worst:.2e} in a class's AP50-95")
    our_coco = read_coco_csv(work / "val" / "coco.csv")
    their_coco = ultralytics_coco_figures(work / "ul_val" / "ultralytics_predictions.json",
                                          work / "val" / "annotations.json")
    print(f"\nCOCO{'':8}" + "".join(f"{n:>7}" for n in STAT_NAMES))
    for name, figures in (("ours", our_coco), ("ultralytics", their_coco)):
        print(f"{name:12}" + "".join(f"{figures[n]:7.3f}" for n in STAT_NAMES))
    print(f"largest difference: {max(abs(our_coco[n] - their_coco[n]) for n in STAT_NAMES):.2e}")

    for source in sources:
        detect.main(detect.parse_opt([*common, "--source", source, "--save-txt", "--save-conf", "--name", "detect",
                                      "--exist-ok"]))
        with pickled_models_loadable():
            ul_detect.run(weights=str(ul_weights), source=source, imgsz=(opt.imgsz, opt.imgsz), device=opt.device,
                          save_txt=True, save_conf=True, nosave=True, project=str(work), name="ul_detect",
                          exist_ok=True)
    ours_det = read_boxes(work / "detect" / "labels", sources)
    theirs_det = read_boxes(work / "ul_detect" / "labels", sources)
    differing, corner, conf = compare_detections(ours_det, theirs_det)
    print(f"detect: {sum(map(len, ours_det.values()))} boxes (ultralytics {sum(map(len, theirs_det.values()))}) in "
          f"{len(ours_det)} images; {differing} images with other boxes or classes; otherwise corners within "
          f"{corner:.2f} px (ultralytics rounds them to whole pixels), confidences within {conf:.1e}")

    ours_loss, their_loss = compare_loss(ckpt, ul_model, data, opt.imgsz, opt.batch_size)
    print(f"\n{'loss':12}{'total':>12}{'box':>12}{'obj':>12}{'cls':>12}")
    for name, row in (("ours", ours_loss), ("ultralytics", their_loss)):
        print(f"{name:12}" + "".join(f"{v:12.8f}" for v in row))
    print(f"files in {work}")


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="either tree's checkpoint, or an ultralytics .pt")
    p.add_argument("--data", required=True, help="dataset yaml (its val split is used)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_opt())
