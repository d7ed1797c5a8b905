"""export.py's framework-neutral half (both trees): the output's name, the fixed input, ultralytics' metadata (class
names and stride), and the check of the written graph against the tree's own model. Each tree's export.py writes the
graph itself (torch.onnx.export, in the Jittor tree through the PyTorch tree's Model)."""
from pathlib import Path

import numpy as np

from yolocore.data.augment import check_imgsz
from yolocore.deployment.onnx_model import OnnxModel, require

OPSET = 17  # ultralytics YOLOv5's default; ONNX Runtime has run it since 1.14
INPUT, OUTPUT = "images", "output0"  # ultralytics' names, which its DetectMultiBackend and ONNX tools expect
DYNAMIC_AXES = {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 1: "anchors"}}
# Largest relative difference between ONNX Runtime's predictions and the tree's model accepted without a warning:
# float32 arithmetic in another order; float16 keeps about three decimal digits.
TOLERANCE = {np.float32: 1e-4, np.float16: 1e-2}


def onnx_path(weights):
    """Where export.py writes: beside the checkpoint, with its name (best.pt -> best.onnx), as ultralytics does."""
    return Path(weights).with_suffix(".onnx")


def fixed_input(imgsz, half=False):
    """The image (1, 3, imgsz, imgsz) in [0, 1) that the graph is traced on and checked with: the same every time."""
    image = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    return image.astype(np.float16) if half else image


def finish_graph(path, names, stride):
    """Keep the predictions alone as the graph's output (the model's eval output also holds the training maps),
    and write the class names and stride into its metadata as ultralytics does (str of a dict, str of an int)."""
    (onnx,) = require("onnx")
    model = onnx.load(str(path))
    del model.graph.output[1:]
    for key, value in (("stride", str(int(stride))), ("names", str(dict(enumerate(names))))):
        meta = model.metadata_props.add()
        meta.key, meta.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def relative_difference(actual, expected):
    """Per output column (x, y, w, h, objectness, each class), the largest difference over the column's largest
    magnitude; the worst column. Scale-aware where an element-wise ratio would blow up on near-zero scores."""
    actual, expected = (np.asarray(a, np.float64).reshape(-1, a.shape[-1]) for a in (actual, expected))
    scale = np.maximum(np.abs(expected).max(0), np.finfo(np.float32).tiny)
    return float((np.abs(actual - expected).max(0) / scale).max())


def export_checkpoint(opt, model, write_onnx, predict):
    """export.py's run in either tree, given the network of --weights (model) and the tree's functions of those
    names: write_onnx(weights, path, image, dynamic, half, device) writes the ONNX graph of the checkpoint traced on
    image, predict(model, image) -> the model's predictions (numpy). Checks the image size, then ONNX Runtime's
    predictions against the model's; returns the .onnx path."""
    names, stride = model.names, int(model.stride.max())
    check_imgsz(opt.imgsz, stride)
    path = onnx_path(opt.weights)
    image = fixed_input(opt.imgsz, opt.half)
    write_onnx(opt.weights, path, image, opt.dynamic, opt.half, opt.device)
    finish_graph(path, names, stride)
    difference = relative_difference(OnnxModel(path).predict(image), predict(model, image))
    tolerance = TOLERANCE[image.dtype.type]
    print(f"ONNX Runtime against the model on a fixed {opt.imgsz}x{opt.imgsz} input: relative difference "
          f"{difference:.2e}{'' if difference <= tolerance else f', above {tolerance:g}: check the export'}")
    shape = "any batch and image shape" if opt.dynamic else f"1x3x{opt.imgsz}x{opt.imgsz}"
    print(f"Exported {path} ({shape}, {'float16' if opt.half else 'float32'}, {len(names)} classes, stride {stride})")
    return path
