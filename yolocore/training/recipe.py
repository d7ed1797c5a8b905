"""The YOLOv5 training recipe's arithmetic, shared by both trees: schedules, warmup, loss gains, log rows."""
import math

import numpy as np

from yolocore.config import OPTIONAL_HYP_DEFAULTS

LOSS_KEYS = ("box_loss", "obj_loss", "cls_loss")
FGD_KEYS = ("fgd_loss", "fgd_fg", "fgd_bg", "fgd_mask", "fgd_relation")
METRIC_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")


def lr_lambda(epochs, lrf, cos_lr=False):
    """Learning-rate factor of an epoch: linear (YOLOv5's default) or cosine, from 1 down to lrf."""
    if cos_lr:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def warmup_iterations(hyp, batches_per_epoch):
    return max(round(hyp["warmup_epochs"] * batches_per_epoch), 100)


def nominal_batch(hyp):
    """The hyp's nbs (ultralytics' later name for it), else YOLOv5's 64. A smaller one steps the optimizer more often
    on the same images: a short run on few images then takes more optimizer steps."""
    return hyp.get("nbs", OPTIONAL_HYP_DEFAULTS["nbs"])


def accumulation(hyp, batch_size):
    """Batches whose gradients make one optimizer step, after warmup."""
    return max(round(nominal_batch(hyp) / batch_size), 1)


def warmup(ni, nw, hyp, lr_target, batch_size, groups=3):
    """Accumulation steps and per-group (lr, momentum) at warmup iteration ni of nw. Group 0 holds the biases,
    whose lr falls from warmup_bias_lr; the others rise from 0."""
    xi = [0, nw]
    accumulate = max(1, round(float(np.interp(ni, xi, [1, nominal_batch(hyp) / batch_size]))))
    momentum = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    lrs = [float(np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 0 else 0.0, lr_target])) for j in range(groups)]
    return accumulate, [(lr, momentum) for lr in lrs]


def kd_weight_at(hyp, epoch, epochs):
    """The FGD loss weight of an epoch: kd_weight at the first, moving linearly to kd_weight * kd_weightf at the
    last (kd_weightf, like lrf for the learning rate, defaults to 1: a constant weight)."""
    final = hyp.get("kd_weightf", OPTIONAL_HYP_DEFAULTS["kd_weightf"])
    return hyp["kd_weight"] * (1 + (final - 1) * epoch / max(epochs - 1, 1))


def patience_ran_out(epoch, best_epoch, patience):
    """True once patience epochs have passed without a new best; patience 0 never stops (YOLOv5's convention)."""
    return patience > 0 and epoch - best_epoch >= patience


def loss_gains(hyp, nl, nc, imgsz):
    """YOLOv5's scaling of the loss gains to the number of levels, classes and the image size."""
    return dict(hyp, box=hyp["box"] * 3 / nl, cls=hyp["cls"] * nc / 80 * 3 / nl,
                obj=hyp["obj"] * (imgsz / 640) ** 2 * 3 / nl)


def results_row(epoch, losses, metrics, lrs):
    """One results.csv row: train losses (detection, then FGD terms when present), P/R/mAP, val losses, lrs."""
    return {"epoch": epoch, **{f"train/{k}": v for k, v in zip(LOSS_KEYS + FGD_KEYS, losses)},
            **dict(zip(METRIC_KEYS, metrics[:4])), **{f"val/{k}": v for k, v in zip(LOSS_KEYS, metrics[4:])},
            **{f"x/lr{j}": lr for j, lr in enumerate(lrs)}}


def scaled_weight_decay(hyp, batch_size):
    """Weight decay scaled to the batch actually accumulated, as YOLOv5 does."""
    return hyp["weight_decay"] * batch_size * accumulation(hyp, batch_size) / nominal_batch(hyp)


def per_process_batch(batch_size, world_size):
    """--batch-size is the global batch: each of world_size processes takes an equal share of it."""
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch and must divide evenly over the "
                         f"{world_size} processes; use a multiple of {world_size}")
    return batch_size // world_size


def parameter_groups(modules, norm_types, frozen=lambda p: False):
    """YOLOv5's three SGD groups over the modules' parameters, in either framework: (biases, which warm up from
    warmup_bias_lr; weights with decay; normalisation weights without decay). frozen(p) leaves out what a
    framework lists among parameters but never trains."""
    biases, decayed, norm_weights = [], [], []
    for module in modules:
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if frozen(p):
                    continue
                if name == "bias":
                    biases.append(p)
                elif name == "weight" and isinstance(m, norm_types):
                    norm_weights.append(p)
                else:
                    decayed.append(p)
    return biases, decayed, norm_weights
