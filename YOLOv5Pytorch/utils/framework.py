"""The PyTorch side of what cannot mirror between frameworks: devices, seeding, AMP, EMA, tensors <-> numpy."""
import math
import os
from copy import deepcopy

import numpy as np
import torch


def select_device(device=""):
    """'' picks CUDA when there is one, else the CPU; 'cpu'; '0' or '0,1' are CUDA indices."""
    device = str(device).strip().lower().replace("cuda:", "")
    if device == "cpu" or (device == "" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device} asks for CUDA, but torch.cuda.is_available() is False: use --device cpu")
    index = int(device.split(",")[0]) if device else 0
    if "," in device:
        print(f"WARNING --device {device}: one process trains on one GPU; using cuda:{index}")
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(f"cuda:{index}")


def init_seeds(seed=0, deterministic=False):
    """Seeds torch's weight init; data order and augmentation are seeded in yolocore from (seed, epoch, index)."""
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


def autocast(device):
    """Mixed precision on CUDA only: CPU bf16 autocast changes numerics without a speed-up here."""
    return torch.autocast(device_type=device.type, enabled=device.type == "cuda")


def grad_scaler(device):
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


def images_to_tensor(imgs, device):
    """uint8 (B, 3, H, W) numpy -> float tensor in [0, 1] on the device."""
    return torch.from_numpy(imgs).to(device, non_blocking=True).float() / 255


def to_numpy(x):
    return x.detach().cpu().numpy()


def state_dict_to_numpy(state_dict):
    return {k: to_numpy(v) for k, v in state_dict.items()}


def state_dict_from_numpy(arrays):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def optimizer_state(optimizer):
    return optimizer.state_dict()


def load_optimizer_state(optimizer, state):
    optimizer.load_state_dict(state)


class ModelEMA:
    """Exponential moving average of every float parameter and buffer; the ramp tau keeps early updates fast."""

    def __init__(self, model, decay=0.9999, tau=2000, updates=0):
        self.ema = deepcopy(model).eval()
        self.updates = updates
        self.decay_at = lambda x: decay * (1 - math.exp(-x / tau))
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay_at(self.updates)
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v *= d
                v += (1 - d) * msd[k].detach()
