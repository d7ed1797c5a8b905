"""Draw what FGD distils: per image and distilled layer, teacher and student feature maps, spatial and channel
attention, foreground and background masks, and the features under the foreground mask.

    python YOLOv5Pytorch/visualize.py --teacher T.pt --student S.pt --source IMG_OR_DIR [--layers 17 20 23]

Writes OUT/NAME.png (all panels of one image in a grid), OUT/NAME/*.png (the single panels), OUT/detections.csv
(both models' detections per image, to find where the student detects) and OUT/attention.csv (per image and layer,
how closely the student's attention follows the teacher's); see FGD-visualize/README.md for what each one is.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from yolocore.cli import parse_visualize_options, run_script
from yolocore.data.augment import network_input
from yolocore.plots.fgd_plan import (
    check_maps_request,
    check_same_classes,
    distilled_levels,
    plan_figures,
    write_figures,
)
from yolocore.training.distillation import check_equal_maps
from YOLOv5Pytorch.KD.fgd import FGDLoss, attention, background_mask, foreground_mask, pad_boxes
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, load_weights, model_from_checkpoint
from YOLOv5Pytorch.utils.framework import images_to_tensor, select_device
from YOLOv5Pytorch.utils.nms import non_max_suppression


def parse_opt(argv=None):
    return parse_visualize_options(argv, __doc__)


def _align_for(fgd, kd_layers, layer, s_channels, t_channels):
    """The module that maps the student's features at layer into the teacher's channels, or None if there is none:
    the checkpoint's align conv for a distilled layer, else the identity when the widths already agree."""
    if fgd is not None and layer in kd_layers:
        return fgd.align[kd_layers.index(layer)]
    return torch.nn.Identity() if s_channels == t_channels else None


@torch.no_grad()
def fgd_maps(teacher, student, fgd, im, targets, layers, kd_layers=None, temp=None):
    """Per layer, a dict of numpy maps for one image, computed as FGDLoss computes them.

    im (1, 3, H, W) in [0, 1]; targets (n, 6) [0, cls, cx, cy, w, h] normalised to im; fgd the student's FGDLoss
    (or None) whose levels distil kd_layers (default: layers); temp defaults to fgd.temp, else 0.5.
    Keys: teacher_/student_ feature (H, W) mean |F|, spatial (H, W), channel (C_teacher,), fg (H, W) = feature x
    fg mask; fg_mask, bg_mask (H, W). The student_ keys are absent where no align conv maps it to the teacher.
    """
    return _maps_and_predictions(teacher, student, fgd, im, targets, layers, kd_layers, temp)[0]


def _maps_and_predictions(teacher, student, fgd, im, targets, layers, kd_layers, temp):
    """(fgd_maps' levels, the student's and the teacher's predictions before NMS), from one pass of each model."""
    kd_layers, temp = check_maps_request(tuple(im.shape), fgd, layers, kd_layers, temp)
    t_preds, t_feats = teacher(im, feature_layers=layers)
    s_preds, s_feats = student(im, feature_layers=layers)
    check_equal_maps(layers, [s.shape for s in s_feats], [t.shape for t in t_feats], "show")
    boxes, valid = pad_boxes(targets.to(im.device, torch.float32).reshape(-1, 6), 1)
    levels = []
    for layer, t, s in zip(layers, t_feats, s_feats):
        t = t.float()
        fg = foreground_mask(boxes, valid, *t.shape[2:])
        maps = {"fg_mask": fg, "bg_mask": background_mask(fg)}
        sides = [("teacher", t)]
        align = _align_for(fgd, kd_layers, layer, s.shape[1], t.shape[1])
        if align is not None:
            sides.append(("student", align(s.float())))
        for side, feat in sides:
            spatial, channel = attention(feat, temp)
            mean = feat.abs().mean(1)
            maps.update({f"{side}_feature": mean, f"{side}_spatial": spatial, f"{side}_channel": channel,
                         f"{side}_fg": mean * fg})
        levels.append({k: v[0].cpu().numpy() for k, v in maps.items()})
    return levels, s_preds[0], t_preds[0]


def load_models(opt, device):
    """(teacher, student, student checkpoint) after checking that both detect the same classes."""
    t_ckpt, s_ckpt = load_checkpoint(opt.teacher), load_checkpoint(opt.student)
    check_same_classes(opt, t_ckpt, s_ckpt)
    return model_from_checkpoint(t_ckpt, device), model_from_checkpoint(s_ckpt, device), s_ckpt


def load_fgd(s_ckpt, student, teacher, device):
    """(the student's FGDLoss with its trained align convs, its kd_layers), or (None, []) for a plain student."""
    distilled = distilled_levels(s_ckpt, student, teacher)
    if distilled is None:
        return None, []
    fgd = FGDLoss(distilled.student_channels, distilled.teacher_channels, temp=distilled.temp)
    load_weights(fgd, s_ckpt["fgd"], distilled.source)
    return fgd.to(device).eval(), distilled.layers


def prepare(opt, device):
    """The plan of yolocore.plots.fgd_plan.plan_figures: everything checked before anything is written."""
    teacher, student, s_ckpt = load_models(opt, device)
    fgd, kd_layers = load_fgd(s_ckpt, student, teacher, device)

    def probe(layers, temp):  # unequal map sizes fail here, before any output exists
        fgd_maps(teacher, student, fgd, torch.zeros(1, 3, opt.imgsz, opt.imgsz, device=device), torch.zeros(0, 6),
                 layers, kd_layers, temp)

    def aligned(layer, s_channels, t_channels):
        return _align_for(fgd, kd_layers, layer, s_channels, t_channels) is not None

    return plan_figures(opt, teacher, student, s_ckpt, fgd, kd_layers, probe, aligned)


@torch.no_grad()
def analyse_image(plan, im, labels, opt, device):
    """(fgd_maps' levels, the student's and the teacher's detections (n, 6)) of a letterboxed BGR image and its
    labels (n, 5)."""
    tensor = images_to_tensor(network_input(im), device)
    targets = torch.from_numpy(np.concatenate([np.zeros((len(labels), 1)), labels], 1))
    levels, preds, t_preds = _maps_and_predictions(plan.teacher, plan.student, plan.fgd, tensor, targets,
                                                   plan.layers, plan.kd_layers, plan.temp)
    det, t_det = (non_max_suppression(p, opt.conf_thres, opt.iou_thres)[0].cpu().numpy() for p in (preds, t_preds))
    return levels, det, t_det


def main(opt):
    device = select_device(opt.device)
    plan = prepare(opt, device)
    return write_figures(opt, plan, lambda im, labels: analyse_image(plan, im, labels, opt, device))


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
