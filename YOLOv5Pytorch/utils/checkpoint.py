"""Checkpoints as plain state dicts plus config: no pickled modules. This tree writes .pt (torch.save, loadable
with weights_only=True) and reads its own .pt, the Jittor tree's .pkl and ultralytics YOLOv5's .pt; val.py and
detect.py also run an exported .onnx in a checkpoint's place (load_model)."""
import os
import pickle
import zipfile
from pathlib import Path

import torch

from yolocore.deployment.onnx_model import OnnxModel
from yolocore.training.checkpoints import (
    checked_checkpoint,
    checkpoint_file,
    map_arrays,
    network_weights,
    read_checkpoint,
    state_dict_mismatch,
    temporary_path,
)
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.framework import to_numpy

FRAMEWORK = "pytorch"
SUFFIX = ".pt"


def save_checkpoint(ckpt, path):
    """Write to a temporary file and rename, so a crash mid-write never leaves a broken last.pt/best.pt."""
    tmp = temporary_path(path)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path):
    """A checkpoint of either tree, with torch tensors; 'framework' says which tree wrote it."""
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True) if zipfile.is_zipfile(path) else None
    except pickle.UnpicklingError:  # weights_only refuses pickled modules: ultralytics' .pt, read below
        ckpt = None
    except Exception as e:
        raise ValueError(f"{path}: not a checkpoint of this project ({type(e).__name__}: {e})") from e
    if ckpt is None:
        ckpt = map_arrays(read_checkpoint(path), lambda a: torch.from_numpy(a.copy()))
    return checked_checkpoint(ckpt, path)


def load_weights(module, weights, source):
    """load_state_dict that accepts the other tree's keys (Jittor keeps no BatchNorm counter) and names the
    checkpoint when the weights do not fit."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problem = state_dict_mismatch(expected, {k: v.shape for k, v in weights.items()})
    if problem:
        raise ValueError(f"{source}: weights do not fit the model: {problem}")
    load_partial_state(module, weights)


def load_partial_state(module, weights):
    """Loads weights, some of module's keys with their shapes (train.py's --weights keeps what fits)."""
    module.load_state_dict(weights, strict=False)


def model_from_checkpoint(ckpt, device=None, use_ema=True):
    """The network of a checkpoint (its EMA weights when it has them), in eval mode, with class names."""
    model = Model(ckpt["yaml"], nc=ckpt["nc"])
    load_weights(model, network_weights(ckpt, use_ema), ckpt.get("path", "checkpoint"))
    model.names = list(ckpt["names"])
    return model.to(device or "cpu").eval()


def load_model(weights, device=None):
    """What val.py and detect.py run: the network of a checkpoint, or an .onnx from export.py (ONNX Runtime)."""
    if Path(weights).suffix == ".onnx":
        return OnnxModel(weights, to_numpy, lambda predictions, im: torch.from_numpy(predictions).to(im.device))
    return model_from_checkpoint(load_checkpoint(weights), device)
