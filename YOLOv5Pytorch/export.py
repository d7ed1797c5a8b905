"""Export a checkpoint to ONNX, written beside it with its name (best.pt -> best.onnx) and the class names and stride
in the model's metadata, as ultralytics YOLOv5 does. Then val.py and detect.py take the .onnx as --weights.

    python YOLOv5Pytorch/export.py --weights runs/train/exp/weights/best.pt --include onnx --imgsz 512 [--dynamic]

A checkpoint of either tree (.pt, .pkl) or ultralytics' works. The graph holds the network alone: an FGD student's
checkpoint keeps FGD's align convs and GcBlocks apart from it, so they are not exported. Without --dynamic the graph
takes one image of 1x3xIMGSZxIMGSZ (float16 with --half), and val.py and detect.py run it on square images of that
size, as ultralytics runs exported models; --dynamic takes any batch and any stride-multiple shape, so val.py and
detect.py run it on the checkpoint's own rectangles and give the checkpoint's mAP and boxes. The export ends by
comparing ONNX Runtime's predictions with the model's on a fixed input. Needs onnx and onnxruntime
(requirements.txt).
"""
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from yolocore.cli import parse_export_options, run_script
from yolocore.deployment.onnx_files import DYNAMIC_AXES, INPUT, OPSET, OUTPUT, export_checkpoint
from yolocore.deployment.onnx_model import require
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Pytorch.utils.framework import select_device


def parse_opt(argv=None):
    return parse_export_options(argv, __doc__)


def network(ckpt, device, half=False):
    """The checkpoint's network in eval mode, float16 with half."""
    model = model_from_checkpoint(ckpt, device)
    return model.half() if half else model


def predict(model, image):
    """The model's predictions (numpy) of a numpy batch, on the model's device."""
    with torch.no_grad():
        return model(torch.from_numpy(image).to(next(model.parameters()).device))[0].float().cpu().numpy()


def write_onnx(weights, path, image, dynamic=False, half=False, device=""):
    """The network of checkpoint weights as an ONNX graph at path, traced on image (numpy) by torch.onnx.export. Detect
    builds its grids on a pass at a new shape and caches them: a static graph takes them as constants from a first
    pass, a --dynamic one must trace their building from the input's shape, so it traces a network's first pass."""
    device = select_device(device)
    model = network(load_checkpoint(weights), device, half)
    im = torch.from_numpy(image).to(device)
    with warnings.catch_warnings(), torch.no_grad():
        if not dynamic:
            model(im)
        # torch 2.9 made the torch.export-based exporter the default and deprecated TorchScript's; TorchScript's
        # traces this model's shapes into --dynamic graphs as ultralytics' does, without onnxscript.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Detect compares its cached grid's shape with the input's in Python: traced once, as intended.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, im, str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_axes=DYNAMIC_AXES if dynamic else None)


def main(opt):
    require("onnx", "onnxruntime")
    model = network(load_checkpoint(opt.weights), select_device(opt.device), opt.half)
    return export_checkpoint(opt, model, write_onnx, predict)


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
