"""Export a checkpoint to ONNX, written beside it with its name (best.pkl -> best.onnx) and the class names and
stride in the model's metadata, as ultralytics YOLOv5 does. Then val.py and detect.py take the .onnx as --weights.

    python YOLOv5Jittor/export.py --weights runs/train/exp/weights/best.pkl --include onnx --imgsz 512 [--dynamic]

Needs torch besides onnx and onnxruntime (all in requirements.txt): Jittor 1.3 has no ONNX exporter, so the graph is
written by torch.onnx.export from the PyTorch tree's Model, which is this tree's layer for layer with the same
state-dict keys. The checkpoint goes over in the shared format (yolocore.training.checkpoints reads either tree's
file into plain arrays), and the export ends by comparing ONNX Runtime's predictions with this tree's model on a fixed
input. A checkpoint of either tree (.pkl, .pt) or ultralytics' works. The graph holds the network alone: an FGD
student's checkpoint keeps FGD's align convs and GcBlocks apart from it, so they are not exported. Without
--dynamic the graph takes one image of 1x3xIMGSZxIMGSZ (float16 with --half), and val.py and detect.py run it on
square images of that size, as ultralytics runs exported models; --dynamic takes any batch and any stride-multiple
shape, so val.py and detect.py run it on the checkpoint's own rectangles and give the checkpoint's mAP and boxes.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
import jittor as jt
# isort: on

from yolocore.cli import parse_export_options, run_script
from yolocore.deployment.onnx_files import export_checkpoint
from yolocore.deployment.onnx_model import require
from YOLOv5Jittor.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Jittor.utils.framework import select_device


def parse_opt(argv=None):
    return parse_export_options(argv, __doc__)


def network(ckpt, device, half=False):
    """The checkpoint's network in eval mode, float32 even with half: this tree runs float32 only, so a float16
    graph is checked against float32 predictions, within float16's tolerance."""
    return model_from_checkpoint(ckpt, device)


def predict(model, image):
    """The model's predictions (numpy) of a numpy batch; the device is global in Jittor (see select_device)."""
    with jt.no_grad():
        return model(jt.array(image).float())[0].numpy()


def write_onnx(weights, path, image, dynamic=False, half=False, device=""):
    """The network of checkpoint weights as an ONNX graph at path, traced on image (numpy) by the PyTorch tree's
    export: torch is imported here, after jittor, and only for this."""
    from YOLOv5Pytorch import export as pytorch_export

    pytorch_export.write_onnx(weights, path, image, dynamic, half, device)


def main(opt):
    require("onnx", "onnxruntime", "torch")
    model = network(load_checkpoint(opt.weights), select_device(opt.device), opt.half)
    return export_checkpoint(opt, model, write_onnx, predict)


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
