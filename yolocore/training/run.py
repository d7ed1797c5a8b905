"""What a training run holds (Run), what the shared loop asks of a tree (Backend), and the run's life outside the
epoch loop: its model's starting weights, resuming, checkpoints."""
import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from yolocore.architecture.initial_weights import perturbed
from yolocore.cli import DEFAULT_CFG
from yolocore.training.checkpoints import find_last_checkpoint


class Backend(Protocol):
    """A tree's side of the shared training loop: its train.py module, which defines or imports these names.
    Everything here touches the framework; everything else about a run is in yolocore.training."""

    FRAMEWORK: str  # "pytorch" or "jittor", written into checkpoints
    SUFFIX: str  # ".pt" or ".pkl"
    validate: Any  # the tree's val module: run(model, loader, names, device, ...) -> (metrics, maps)
    # processes and devices (utils/framework.py)
    init_distributed: Callable  # (device) -> (rank, world_size, device)
    barrier: Callable
    broadcast_flag: Callable  # (flag) -> rank 0's flag
    all_reduce_mean: Callable  # (numpy array) -> its mean over processes
    close_distributed: Callable
    init_seeds: Callable  # (seed, deterministic)
    sync_batchnorm: Callable  # (model, device) -> model
    parallel: Callable  # (module, device) -> what the training step calls
    mixed_precision: Callable  # (device, noamp, amp) -> whether to train under autocast
    grad_scaler: Callable  # (device, amp) -> the loss scaler (None where the tree has none)
    state_dict_to_numpy: Callable
    state_dict_from_numpy: Callable
    optimizer_state: Callable  # (optimizer) -> checkpointable state
    load_optimizer_state: Callable  # (optimizer, state)
    ModelEMA: Callable  # (model) -> .ema, .updates, .update(model)
    # model, data, loss, FGD
    new_model: Callable  # (cfg, nc, device) -> Model on the device
    load_partial_state: Callable  # (model, weights): a subset of the model's keys, shapes already checked
    saved_state: Callable  # (module) -> a copy of its state dict, as the tree's checkpoints hold it
    load_checkpoint: Callable
    save_checkpoint: Callable
    create_dataloader: Callable
    ComputeLoss: Callable  # (model, gains)
    load_teacher: Callable  # (path, names, device, amp) -> the frozen teacher, in low precision under amp
    build_fgd: Callable  # (student, teacher, layers, hyp, imgsz, device)
    # the training proper (train.py)
    build_optimizer: Callable  # (modules, hyp, weight_decay) -> SGD with YOLOv5's three groups
    autoanchor: Callable  # (model, dataset, hyp, imgsz, seed)
    train_step: Callable  # (run, imgs, targets, kd_weight) -> (loss value, loss items as numpy); backward done
    optimizer_step: Callable  # (run): clip, step, zero the gradients, update the EMA


@dataclass
class Run:
    """Everything a training run holds. Both trees build the same Run, so a test can step them in lockstep.
    Framework objects are typed Any: this package never imports a framework."""

    opt: argparse.Namespace
    hyp: dict
    save_dir: Path
    names: list
    rank: int
    world_size: int
    device: Any
    amp: bool  # training and validating under autocast
    model: Any  # the student, unwrapped: checkpoints and the EMA take it
    parallel_model: Any  # what the training step calls (DistributedDataParallel around model, or model)
    ema: Any
    optimizer: Any
    scaler: Any  # PyTorch's GradScaler; None in the Jittor tree
    compute_loss: Any
    train_loader: Any
    val_loader: Any  # None on every process but rank 0, which alone validates
    lf: Callable  # epoch -> learning-rate factor
    training: dict  # the training record checkpoints carry (device, epochs, seconds)
    teacher: Any = None  # --mode KD only, like the two below
    fgd: Any = None
    parallel_fgd: Any = None
    accumulate: int = 1  # batches whose gradients each optimizer step sums
    last_opt_step: int = -1  # the iteration of the last optimizer step
    start_epoch: int = 0
    best_fitness: float = -1.0
    best_epoch: int = -1
    tensorboard: Any = None  # rank 0's TensorBoardLog (yolocore.training.tensorboard_log)
    folder: Any = None  # rank 0's hold on save_dir (yolocore.training.run_folder.RunFolder)


def build_model(opt, data, device, resumed, tree):
    """A resumed run's own model; else, as ultralytics, the --cfg model (by default the --weights checkpoint's,
    or yolov5s) with whatever of --weights fits: a checkpoint with other classes keeps its backbone and neck."""
    ckpt = tree.load_checkpoint(opt.weights) if opt.weights else None
    cfg = resumed["yaml"] if resumed else opt.cfg or (ckpt["yaml"] if ckpt else DEFAULT_CFG)
    model = tree.new_model(cfg, data["nc"], device)
    if ckpt:
        weights = ckpt.get("ema") or ckpt["model"]
        state = model.state_dict()
        fitting = {k: v for k, v in weights.items() if k in state and tuple(v.shape) == tuple(state[k].shape)}
        tree.load_partial_state(model, fitting)
        # BatchNorm's batch counters count in neither total: Jittor keeps none, so its checkpoints lack them.
        counted = [k for k in state if not k.endswith("num_batches_tracked")]
        print(f"Transferred {sum(k in fitting for k in counted)}/{len(counted)} items from {opt.weights}")
    if not resumed and opt.perturb:
        state = tree.state_dict_to_numpy(model.state_dict())
        model.load_state_dict(tree.state_dict_from_numpy(perturbed(state, opt.perturb)))
        print(f"Starting weights perturbed by {opt.perturb:g} (--perturb: a calibration run)")
    model.names = data["names"]
    return model


def resume_options(opt, tree):
    """(the run's own options, its checkpoint) for --resume: a last checkpoint, a run's folder, or 'last' for the
    newest run under --project. A few options are this command's: device, workers, cache, sync_bn."""
    path = Path(opt.project if opt.resume == "last" else opt.resume)
    if path.is_dir() or opt.resume == "last":
        path = find_last_checkpoint(path, tree.SUFFIX)
    ckpt = tree.load_checkpoint(path)
    if ckpt["framework"] != tree.FRAMEWORK or not ckpt.get("optimizer") or "opt" not in ckpt:
        raise ValueError(f"--resume {path}: not a {tree.FRAMEWORK} training checkpoint; resume it with the tree that "
                         "wrote it, or start a new run from its weights with --weights")
    resumed = argparse.Namespace(**ckpt["opt"])
    resumed.resume, resumed.weights, resumed.exist_ok = str(path), "", True
    resumed.device, resumed.workers = opt.device or resumed.device, opt.workers
    resumed.cache = opt.cache or vars(resumed).get("cache", "")
    resumed.sync_bn = opt.sync_bn or vars(resumed).get("sync_bn", False)
    resumed.noamp = vars(resumed).get("noamp", False)  # the run's own precision, also when --noamp is given now
    resumed.val_period = vars(resumed).get("val_period", 1)  # runs of older trees validated every epoch
    resumed.amp = vars(resumed).get("amp", False)
    return resumed, ckpt


def restore(run, ckpt, tree):
    """Puts a resumed run's weights, EMA, optimizer and FGD modules back; the run continues after ckpt's epoch."""
    run.model.load_state_dict(ckpt["model"])
    run.ema.ema.load_state_dict(ckpt["ema"])
    run.ema.updates = ckpt["updates"]
    tree.load_optimizer_state(run.optimizer, ckpt["optimizer"])
    if run.fgd is not None:
        run.fgd.load_state_dict(ckpt["fgd"])
    if ckpt["epoch"] + 1 >= run.opt.epochs:
        raise ValueError(f"{run.opt.resume}: this run already finished its {run.opt.epochs} epochs")
    run.start_epoch, run.best_fitness, run.best_epoch = ckpt["epoch"] + 1, ckpt["best_fitness"], ckpt["best_epoch"]


def make_checkpoint(run, epoch, tree):
    """A plain dict: state dicts, optimizer state, the model yaml, class names, hyperparameters and options."""
    opt = run.opt
    return {
        "framework": tree.FRAMEWORK, "epoch": epoch, "best_fitness": run.best_fitness, "best_epoch": run.best_epoch,
        "model": tree.saved_state(run.model), "ema": tree.saved_state(run.ema.ema),
        "updates": run.ema.updates, "optimizer": tree.optimizer_state(run.optimizer),
        "fgd": tree.saved_state(run.fgd) if run.fgd is not None else None,
        "kd_layers": list(opt.kd_layers) if opt.mode == "KD" else None,
        "yaml": run.model.yaml, "nc": len(run.names), "names": list(run.names),
        "hyp": run.hyp, "opt": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opt).items()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "training": dict(run.training),
    }
