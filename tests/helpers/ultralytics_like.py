"""Writes checkpoints the way ultralytics YOLOv5 v6+ does, without its code: torch.save of the whole model,
pickled as instances of its own classes (models.common.Conv, ..., models.yolo.DetectionModel), in float16.
Release v7.0 names the model class DetectionModel and keeps the class names in a dict; v6.x says Model and a list."""
import sys
import types
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from YOLOv5Pytorch.models import common
from YOLOv5Pytorch.models.yolo import Model

# our class -> (ultralytics' module, ultralytics' class name)
ULTRALYTICS_CLASSES = {
    common.Conv: ("models.common", "Conv"), common.Bottleneck: ("models.common", "Bottleneck"),
    common.C3: ("models.common", "C3"), common.SPPF: ("models.common", "SPPF"),
    common.Concat: ("models.common", "Concat"), common.Detect: ("models.yolo", "Detect"),
}


def as_ultralytics(model, names, packages, version="v7"):
    """A float16 copy of model whose modules are instances of classes named as ultralytics' ones, created in
    packages ({module name: module}) on first use."""
    classes = {**ULTRALYTICS_CLASSES, Model: ("models.yolo", "DetectionModel" if version == "v7" else "Model")}
    copy = deepcopy(model).half()
    for m in copy.modules():
        if isinstance(m, common.Upsample):
            m.__class__ = nn.Upsample  # ultralytics' yaml builds torch's own
        elif type(m) in classes:
            package, name = classes[type(m)]
            cls = getattr(packages[package], name, None)
            if cls is None:
                cls = type(name, (type(m),), {"__module__": package, "__qualname__": name})
                setattr(packages[package], name, cls)
            m.__class__ = cls
    copy.names = dict(enumerate(names)) if version == "v7" else list(names)
    return copy


def save_ultralytics_checkpoint(model, names, path, ema=None, version="v7"):
    """What ultralytics' train.py saves: model (and ema for an unfinished run's last.pt, with its best_fitness as
    a numpy array) as pickled modules, opt with a Path in it."""
    packages = {name: types.ModuleType(name) for name in ("models", "models.common", "models.yolo")}
    ckpt = {"epoch": -1 if ema is None else 3, "best_fitness": None if ema is None else np.array([0.25]),
            "model": as_ultralytics(model, names, packages, version),
            "ema": None if ema is None else as_ultralytics(ema, names, packages, version),
            "updates": None if ema is None else 120, "optimizer": None,
            "opt": {"weights": "yolov5s.pt", "save_dir": Path("runs/train/exp"), "epochs": 3},
            "git": {"remote": "https://github.com/ultralytics/yolov5"}, "date": "2026-11-25T00:00:00"}
    saved = {k: sys.modules.get(k) for k in packages}
    sys.modules.update(packages)  # pickle looks each class up by its module name
    try:
        torch.save(ckpt, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = v
    return path
