"""The Jittor side of what cannot mirror between frameworks: devices, processes, the kernel cache, seeding,
EMA, tensors <-> numpy."""
import contextlib
import math
from copy import deepcopy

import jittor as jt
import numpy as np

from yolocore.architecture import initial_weights as initial
from YOLOv5Jittor.utils.jittor_nn import BatchNorm2d
from YOLOv5Jittor.utils.kernel_cache import claim_kernel_cache

# Before the process compiles its first kernel: every script of this tree imports this module.
jt.flags.cache_path = claim_kernel_cache(jt.flags.cache_path)


def select_device(device=""):
    """'' picks CUDA when jittor has it, else the CPU; 'cpu'; '0' is CUDA. Jittor runs on one device per process,
    chosen by a global flag, so this sets the flag and returns 'cuda' or 'cpu'."""
    device = str(device).strip().lower().replace("cuda:", "")
    if device == "cpu" or (device == "" and not jt.has_cuda):
        jt.flags.use_cuda = 0
        return "cpu"
    if not jt.has_cuda:
        raise ValueError(f"--device {device} asks for CUDA, but jt.has_cuda is False: use --device cpu")
    if device not in ("", "0"):
        raise ValueError(f"--device {device}: the Jittor tree uses one GPU; pick it with CUDA_VISIBLE_DEVICES")
    jt.flags.use_cuda = 1
    return "cuda"


def init_distributed(device=""):
    """(rank, world_size, device). Under mpirun Jittor joins the processes when it is imported (jt.in_mpi,
    jt.rank, jt.world_size) and, on CUDA, gives each the GPU of its local rank itself. A plain run is
    (0, 1, select_device(device))."""
    return jt.rank, jt.world_size, select_device(device)


def barrier():
    if jt.in_mpi:
        jt.mpi.mpi_barrier()


def broadcast_flag(flag):
    """Rank 0's flag on every process (rank 0 alone validates, so it alone decides to stop early)."""
    if not jt.in_mpi:
        return bool(flag)
    return bool(jt.array(np.array([int(flag)], np.int32)).mpi_broadcast(0).item())


def all_reduce_mean(values):
    """The mean over processes of a float array (each process's mean training losses). Every pending operation
    runs first: Jittor runs the last step's gradient all-reduces lazily, and a process running them later, alone
    (rank 0 validating), would wait forever for the others."""
    if not jt.in_mpi:
        return values
    jt.sync_all()
    return jt.array(values).mpi_all_reduce("mean").numpy()


def sync_batchnorm(model, device):
    """--sync-bn: BatchNorm statistics over the images of all processes (the tree's BatchNorm2d all-reduces them
    when its sync flag is set; Jittor's MPI runs on CPUs too). In place; same parameters and state-dict keys."""
    if not jt.in_mpi:
        print("--sync-bn: a single process has nothing to synchronise; plain BatchNorm")
        return model
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.sync = True
    return model


def parallel(module, device):
    """What the training step calls. Jittor's optimizer averages the gradients over processes in its backward
    (and broadcasts rank 0's trained weights on its first step), so the module itself; rank 0's weights and
    buffers are broadcast now, as DistributedDataParallel does."""
    if jt.in_mpi:
        module.mpi_param_broadcast(0)
        jt.sync_all()
    return module


def close_distributed():
    """MPI finalises when the process exits."""


def init_seeds(seed=0, deterministic=False):
    """Seeds the initial weights (yolocore.architecture.initial_weights, shared with the PyTorch tree) and jittor's own
    random ops; data order and augmentation are seeded in yolocore from (seed, epoch, index). Pending random ops draw
    when they run, so they are run first. deterministic: kept for the PyTorch signature."""
    initial.seed(seed)
    jt.sync_all()
    # Every process draws the same random numbers, as in the PyTorch tree (Jittor would add the rank to the seed).
    jt.set_global_seed(seed, different_seed_for_mpi=False)


def mixed_precision(device, noamp=False, amp=False):
    """Never: this tree trains and validates in float32, on a GPU too (mixed precision is a PyTorch-tree feature;
    Jittor's CPU kernels have no bfloat16, docs/speed.md)."""
    return False


def autocast(device, enabled):
    return contextlib.nullcontext()


def grad_scaler(device, enabled):
    """None: without float16 there are no gradients to scale."""
    return None


def images_to_tensor(imgs, device):
    """uint8 (B, 3, H, W) numpy -> float Var in [0, 1]; device is global in Jittor (see select_device)."""
    return jt.array(imgs).float() / 255


def to_numpy(x):
    return x.detach().numpy()


def state_dict_to_numpy(state_dict):
    return {k: to_numpy(v) for k, v in state_dict.items()}


def state_dict_from_numpy(arrays):
    # PyTorch checkpoints carry BatchNorm's num_batches_tracked, which Jittor's BatchNorm does not keep.
    return {k: jt.array(np.ascontiguousarray(v)) for k, v in arrays.items() if not k.endswith("num_batches_tracked")}


def optimizer_state(optimizer):
    """SGD's hyperparameters and momentum buffers per group, as numpy (Jittor's own state_dict holds Vars)."""
    keys = ("lr", "momentum", "weight_decay", "nesterov")
    return {"param_groups": [{k: g[k] for k in keys if k in g} for g in optimizer.param_groups],
            "momentum_buffers": [[to_numpy(v) for v in g["values"]] for g in optimizer.param_groups]}


def load_optimizer_state(optimizer, state):
    for group, saved, buffers in zip(optimizer.param_groups, state["param_groups"], state["momentum_buffers"]):
        group.update(saved)
        for value, buffer in zip(group["values"], buffers):
            value.update(jt.array(buffer))


class ModelEMA:
    """Exponential moving average of every float parameter and buffer; the ramp tau keeps early updates fast."""

    def __init__(self, model, decay=0.9999, tau=2000, updates=0):
        self.ema = deepcopy(model).eval()
        self.updates = updates
        self.decay_at = lambda x: decay * (1 - math.exp(-x / tau))
        for p in self.ema.parameters():
            p.stop_grad()

    def update(self, model):
        self.updates += 1
        d = self.decay_at(self.updates)
        msd = model.state_dict()
        with jt.no_grad():
            for k, v in self.ema.state_dict().items():
                if v.dtype in (jt.float32, jt.float64, jt.float16):
                    v.update(v * d + (1 - d) * msd[k].detach())
