"""Checkpoints as plain state dicts plus config: no pickled modules. This tree writes .pkl (a pickle of numpy
arrays and plain containers) and reads its own .pkl, the PyTorch tree's .pt and ultralytics YOLOv5's .pt; val.py
and detect.py also run an exported .onnx in a checkpoint's place (load_model)."""
from pathlib import Path

import jittor as jt
import numpy as np

from yolocore.deployment.onnx_model import OnnxModel
from yolocore.training.checkpoints import (
    checked_checkpoint,
    checkpoint_file,
    network_weights,
    read_checkpoint,
    state_dict_mismatch,
    write_pickle_checkpoint,
)
from YOLOv5Jittor.models.yolo import Model
from YOLOv5Jittor.utils.framework import to_numpy

FRAMEWORK = "jittor"
SUFFIX = ".pkl"


def save_checkpoint(ckpt, path):
    """Written to a temporary file and renamed, so a crash mid-write never leaves a broken last.pkl/best.pkl."""
    write_pickle_checkpoint(ckpt, path)


def load_checkpoint(path):
    """A checkpoint of either tree, with numpy arrays (Jittor loads them as they are); 'framework' says which tree
    wrote it."""
    path = checkpoint_file(path)
    ckpt = read_checkpoint(path)
    return checked_checkpoint(ckpt, path)


def load_weights(module, weights, source):
    """load_state_dict that checks keys and shapes first (Jittor's only logs a mismatch) and ignores PyTorch's
    BatchNorm counters, which Jittor does not keep. Values take the model's dtypes, as PyTorch's copy does:
    Jittor would keep a half-precision checkpoint's float16, and its convolutions refuse float16 weights with
    float32 images."""
    own = module.state_dict()
    problem = state_dict_mismatch({k: tuple(v.shape) for k, v in own.items()}, {k: v.shape for k, v in weights.items()})
    if problem:
        raise ValueError(f"{source}: weights do not fit the model: {problem}")
    load_partial_state(module, weights)


def load_partial_state(module, weights):
    """Loads weights, some of module's keys with their shapes (train.py's --weights keeps what fits), in the
    module's dtypes: Jittor's load_state_dict would keep the dtypes it is given."""
    own = module.state_dict()
    module.load_state_dict({k: np.asarray(v).astype(str(own[k].dtype)) for k, v in weights.items() if k in own})


def model_from_checkpoint(ckpt, device=None, use_ema=True):
    """The network of a checkpoint (its EMA weights when it has them), in eval mode, with class names."""
    model = Model(ckpt["yaml"], nc=ckpt["nc"])
    load_weights(model, network_weights(ckpt, use_ema), ckpt.get("path", "checkpoint"))
    model.names = list(ckpt["names"])
    return model.eval()


def load_model(weights, device=None):
    """What val.py and detect.py run: the network of a checkpoint, or an .onnx from export.py (ONNX Runtime)."""
    if Path(weights).suffix == ".onnx":
        return OnnxModel(weights, to_numpy, lambda predictions, im: jt.array(predictions))
    return model_from_checkpoint(load_checkpoint(weights), device)
