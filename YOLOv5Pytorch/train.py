"""Train a YOLOv5 teacher or student (--mode train), or distil a teacher into a student with FGD (--mode KD).

    python YOLOv5Pytorch/train.py --cfg yolov5n.yaml --imgsz 256 --epochs 30          # built-in synthetic data
    python YOLOv5Pytorch/train.py --cfg yolov5s.yaml --data data/NWPU.yaml --imgsz 512 --epochs 150 --batch-size 32
    python YOLOv5Pytorch/train.py --mode KD --cfg yolov5n.yaml --teacher runs/train/exp/weights/best.pt --data ...
    python YOLOv5Pytorch/train.py --resume runs/train/exp2/weights/last.pt
    torchrun --nproc_per_node 4 YOLOv5Pytorch/train.py --batch-size 64 ...      # DDP; --batch-size is global

The loop itself is yolocore.training.loop, shared with the Jittor tree; this module is its PyTorch side
(yolocore.training.run.Backend): the names it imports and the functions below.
"""
import sys
from copy import deepcopy
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn as nn

from yolocore.architecture.anchors import evolved_anchors
from yolocore.cli import parse_train_options, run_script
from yolocore.training import loop
from yolocore.training.recipe import parameter_groups
from YOLOv5Pytorch import val as validate
from YOLOv5Pytorch.KD.distiller import build_fgd, load_teacher
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.checkpoint import FRAMEWORK, SUFFIX, load_checkpoint, load_partial_state, save_checkpoint
from YOLOv5Pytorch.utils.dataloader import create_dataloader
from YOLOv5Pytorch.utils.framework import (
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
from YOLOv5Pytorch.utils.loss import ComputeLoss

TREE = Path(__file__).resolve().parent


def parse_opt(argv=None):
    return parse_train_options(argv, __doc__, TREE / "hyp.scratch-low.yaml", SUFFIX, "torchrun",
                               "deterministic torch algorithms (slower)")


def new_model(cfg, nc, device):
    return Model(cfg, nc=nc).to(device)


def saved_state(module):
    return deepcopy(module.state_dict())


def build_optimizer(modules, hyp, weight_decay):
    """Nesterov SGD with yolocore.training.recipe.parameter_groups' three groups (biases first)."""
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
    biases, decayed, norm_weights = parameter_groups(modules, norm_types)
    optimizer = torch.optim.SGD(biases, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": decayed, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    return optimizer


def autoanchor(model, dataset, hyp, imgsz, seed):
    det = model.model[-1]
    anchors = (det.anchors * det.stride.to(det.anchors.device).view(-1, 1, 1)).view(-1, 2).cpu().numpy()
    new = evolved_anchors(anchors, dataset, hyp["anchor_t"], imgsz, seed)
    if new is not None:
        new = torch.tensor(new, dtype=det.anchors.dtype, device=det.anchors.device).view_as(det.anchors)
        det.anchors[:] = new / det.stride.to(new.device).view(-1, 1, 1)


def train_step(run, imgs, targets, kd_weight):
    """Forward and backward of one batch: (the loss, its items as numpy: detection, then FGD's in KD mode)."""
    im = images_to_tensor(imgs, run.device)
    targets = targets.to(run.device)
    with autocast(run.device, run.amp):
        if run.fgd is None:
            preds = run.parallel_model(im)
        else:
            # The frozen teacher first: it frees its activations as it goes, so its peak does not add up with
            # the activations the student keeps for the backward pass.
            with torch.no_grad():
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
            items = torch.cat((items, kd_weight * torch.cat((kd_loss.detach().reshape(1), kd_terms))))
    run.scaler.scale(loss).backward()
    return loss.item(), to_numpy(items)


def optimizer_step(run):
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_([p for g in run.optimizer.param_groups for p in g["params"]], max_norm=10.0)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad()
    run.ema.update(run.model)


def train(opt):
    return loop.train(opt, sys.modules[__name__])


if __name__ == "__main__":
    run_script(lambda: train(parse_opt()))
