"""The PyTorch side of what cannot mirror between frameworks: devices, processes, seeding, AMP, EMA,
tensors <-> numpy."""
import math
import os
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from yolocore.architecture import initial_weights as initial


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


def init_distributed(device=""):
    """(rank, world_size, device). Under torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous)
    this process joins the group: NCCL with the GPU of its LOCAL_RANK (pick GPUs with CUDA_VISIBLE_DEVICES),
    gloo on CPUs (--device cpu, or no CUDA). A plain run is (0, 1, select_device(device))."""
    if "LOCAL_RANK" not in os.environ:
        return 0, 1, select_device(device)
    local_rank = int(os.environ["LOCAL_RANK"])
    cpu = str(device).strip().lower() == "cpu" or not torch.cuda.is_available()
    device = select_device("cpu" if cpu else str(local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def barrier():
    if dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag):
    """Rank 0's flag on every process (rank 0 alone validates, so it alone decides to stop early)."""
    if not dist.is_initialized():
        return bool(flag)
    value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(value, 0)
    return bool(value.item())


def all_reduce_mean(values):
    """The mean over processes of a float array (each process's mean training losses)."""
    if not dist.is_initialized():
        return values
    values = torch.tensor(values, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(values)
    return to_numpy(values / dist.get_world_size())


def sync_batchnorm(model, device):
    """--sync-bn: BatchNorm statistics over the images of all processes. Swaps the BatchNorm layers in place
    (same parameters, same state-dict keys)."""
    if not dist.is_initialized():
        print("--sync-bn: a single process has nothing to synchronise; plain BatchNorm")
        return model
    if device.type != "cuda":
        raise ValueError("--sync-bn: torch.nn.SyncBatchNorm runs on CUDA only; train without it on CPUs")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def parallel(module, device):
    """What the training step calls: module wrapped in DistributedDataParallel, which broadcasts rank 0's weights
    now and averages the gradients over processes during backward; module itself in a single process."""
    if not dist.is_initialized():
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def close_distributed():
    if dist.is_initialized():
        dist.destroy_process_group()


def init_seeds(seed=0, deterministic=False):
    """Seeds the initial weights (yolocore.architecture.initial_weights, shared with the Jittor tree) and torch's own
    random ops; data order and augmentation are seeded in yolocore from (seed, epoch, index)."""
    initial.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


def _cpu_flags():
    """The CPU's feature flags as /proc/cpuinfo lists them; empty where there is no such file (not Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set())


def _cpu_native_bfloat16():
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX). Only there does bfloat16 autocast pay:
    oneDNN then runs convolutions in bfloat16 (faster training steps, docs/speed.md); elsewhere it emulates them by
    converting to float32, slower than float32 itself. torch.backends.cpu.get_cpu_capability() says only
    'AVX512', which does not tell the two apart."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _low_precision(device):
    """The dtype mixed precision computes in: float16 on CUDA (with a GradScaler, as ultralytics trains), bfloat16
    on the CPU (float32's range, so no loss scaling), or None where the device has neither natively."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and _cpu_native_bfloat16() else None


def mixed_precision(device, noamp=False, amp=False):
    """Whether to train and validate under autocast: on CUDA unless --noamp; on the CPU only with --amp, and only on
    a CPU with native bfloat16. Opt-in there because its accuracy against float32 was not shown to hold beyond the
    noise of short runs (docs/speed.md)."""
    if noamp or device.type != "cuda" and not amp:
        return False
    if _low_precision(device) is None:
        print(f"WARNING --amp: this {device.type} has no native bfloat16 (avx512_bf16, amx_bf16); float32")
        return False
    return True


def teacher_precision(device, amp=False):
    """The dtype a frozen KD teacher runs in: the device's low precision when the run trains under mixed precision
    (amp: mixed_precision's answer), its features handed to FGD in float32; else float32. Tied to the student's
    precision, not on by itself: FGD's loss moved 11 % a batch with a bfloat16 teacher (docs/speed.md), and a float32
    run must stay comparable with the Jittor tree's."""
    return (_low_precision(device) or torch.float32) if amp else torch.float32


def autocast(device, enabled):
    """Autocast in the device's low precision when enabled (mixed_precision's answer), a no-op otherwise."""
    enabled = enabled and _low_precision(device) is not None
    return torch.autocast(device_type=device.type, dtype=_low_precision(device) if enabled else None, enabled=enabled)


def grad_scaler(device, enabled):
    """Loss scaling for float16 on CUDA; bfloat16 has float32's exponent range and needs none."""
    return torch.amp.GradScaler("cuda", enabled=enabled and torch.device(device).type == "cuda")


def images_to_tensor(imgs, device):
    """uint8 (B, 3, H, W) numpy or tensor (the loader's, pinned on CUDA) -> float tensor in [0, 1] on the device."""
    return torch.as_tensor(imgs).to(device, non_blocking=True).float() / 255


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
