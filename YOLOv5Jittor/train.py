"""Train a YOLOv5 teacher or student (--mode train), or distil a teacher into a student with FGD (--mode KD).

    python YOLOv5Jittor/train.py --cfg yolov5n.yaml --imgsz 256 --epochs 30          # built-in synthetic data
    python YOLOv5Jittor/train.py --cfg yolov5s.yaml --data data/NWPU.yaml --imgsz 512 --epochs 150 --batch-size 32
    python YOLOv5Jittor/train.py --mode KD --cfg yolov5n.yaml --teacher runs/train/exp/weights/best.pkl --data ...
    python YOLOv5Jittor/train.py --resume runs/train/exp2/weights/last.pkl
    mpirun -np 4 python YOLOv5Jittor/train.py --batch-size 64 ...                # MPI; --batch-size is global

The loop itself is yolocore.training.loop, shared with the PyTorch tree; this module is its Jittor side
(yolocore.training.run.Backend): the names it imports and the functions below.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
import jittor as jt
# isort: on
import numpy as np

from yolocore.architecture.anchors import evolved_anchors
from yolocore.cli import parse_train_options, run_script
from yolocore.training import loop
from yolocore.training.recipe import parameter_groups
from YOLOv5Jittor import val as validate
from YOLOv5Jittor.KD.distiller import build_fgd, load_teacher
from YOLOv5Jittor.models.yolo import Model
from YOLOv5Jittor.utils.checkpoint import FRAMEWORK, SUFFIX, load_checkpoint, load_partial_state, save_checkpoint
from YOLOv5Jittor.utils.dataloader import create_dataloader
from YOLOv5Jittor.utils.framework import (
    ModelEMA,
    all_reduce_mean,
    autocast,
    barrier,
    broadcast_flag,
    close_distributed,
    grad_scaler,
    images_to_tensor,
    init_distributed,
    init_seeds,
    load_optimizer_state,
    mixed_precision,
    optimizer_state,
    parallel,
    state_dict_from_numpy,
    state_dict_to_numpy,
    sync_batchnorm,
    to_numpy,
)
from YOLOv5Jittor.utils.jittor_nn import BatchNorm2d, anchors_in_strides, clip_grad_norm
from YOLOv5Jittor.utils.loss import ComputeLoss

TREE = Path(__file__).resolve().parent


def parse_opt(argv=None):
    return parse_train_options(argv, __doc__, TREE / "hyp.scratch-low.yaml", SUFFIX, "mpirun",
                               "kept for the PyTorch tree's flags; no effect")


def new_model(cfg, nc, device):
    return Model(cfg, nc=nc)  # Jittor's device is global (select_device)


def saved_state(module):
    return state_dict_to_numpy(module.state_dict())


def build_optimizer(modules, hyp, weight_decay):
    """Nesterov SGD with yolocore.training.recipe.parameter_groups' three groups (biases first)."""
    norm_types = (BatchNorm2d, jt.nn.LayerNorm)
    # Jittor lists buffers (BatchNorm statistics, anchors) among parameters: they never train
    biases, decayed, norm_weights = parameter_groups(modules, norm_types, frozen=lambda p: p.is_stop_grad())
    optimizer = jt.optim.SGD(biases, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": decayed, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    for group in optimizer.param_groups:  # Jittor groups read missing values from the optimizer: make them explicit
        group.update(lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True, weight_decay=group.get("weight_decay", 0))
    return optimizer


def autoanchor(model, dataset, hyp, imgsz, seed):
    det = model.model[-1]
    anchors = (det.anchors * det.stride.view(-1, 1, 1)).view(-1, 2).numpy()
    new = evolved_anchors(anchors, dataset, hyp["anchor_t"], imgsz, seed)
    if new is not None:
        det.anchors.update(anchors_in_strides(new.astype(np.float32).reshape(det.anchors.shape), det.stride.numpy()))


def train_step(run, imgs, targets, kd_weight):
    """Forward and backward of one batch: (the loss, its items as numpy: detection, then FGD's in KD mode)."""
    im = images_to_tensor(imgs, run.device)
    targets = jt.array(targets)
    with autocast(run.device, run.amp):
        if run.fgd is None:
            preds = run.parallel_model(im)
        else:
            # The frozen teacher first: it frees its activations as it goes, so its peak does not add up with
            # the activations the student keeps for the backward pass.
            with jt.no_grad():
                t_feats = run.teacher.features(im, run.opt.kd_layers)
            preds, s_feats = run.parallel_model(im, feature_layers=run.opt.kd_layers)
        loss, items = run.compute_loss(preds, targets)
        # YOLOv5's loss is summed over this process's images and the processes average their gradients:
        # times world_size (as ultralytics does), a step equals a single process's on the same global batch.
        # FGD's terms are means over images already, so averaging keeps them as they are.
        loss = loss * run.world_size
        if run.fgd is not None:
            kd_loss, kd_terms = run.parallel_fgd(s_feats, t_feats, targets)
            loss = loss + kd_weight * kd_loss
            items = jt.concat((items, kd_weight * jt.concat((kd_loss.detach().reshape(1), kd_terms))))
    run.optimizer.backward(loss)
    # Jittor's backward is lazy: unexecuted, each accumulated batch's graph and activations would live until the
    # optimizer step (four batches' worth at batch 16: a yolov5n trainer on NWPU held 3.3 GB instead of 1.5,
    # in KD mode 3.7 instead of 1.6).
    jt.sync([g for group in run.optimizer.param_groups for g in group["grads"]])
    return loss.item(), to_numpy(items)


def optimizer_step(run):
    clip_grad_norm(run.optimizer, 10.0)
    run.optimizer.step()
    run.ema.update(run.model)


def train(opt):
    return loop.train(opt, sys.modules[__name__])


if __name__ == "__main__":
    run_script(lambda: train(parse_opt()))
