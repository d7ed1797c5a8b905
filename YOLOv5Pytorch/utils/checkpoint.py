"""Checkpoints as plain state dicts plus config: no pickled modules, loadable with torch.load(weights_only=True)."""
import os
from pathlib import Path

import torch

from YOLOv5Pytorch.models.yolo import Model

REQUIRED_KEYS = ("model", "yaml", "nc", "names")


def save_checkpoint(ckpt, path):
    """Write to a temporary file and rename, so a crash mid-write never leaves a broken last.pt/best.pt."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a checkpoint of this project ({type(e).__name__}: {e})") from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt, device=None, use_ema=True):
    """The network of a checkpoint (its EMA weights when it has them), in eval mode, with class names."""
    model = Model(ckpt["yaml"], nc=ckpt["nc"])
    weights = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{ckpt.get('path', 'checkpoint')}: weights do not fit its model yaml: {e}") from e
    model.names = list(ckpt["names"])
    return model.to(device or "cpu").eval()
