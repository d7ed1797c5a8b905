"""Draw what FGD distils: per image and distilled layer, teacher and student feature maps, spatial and channel
attention, foreground and background masks, and the features under the foreground mask.

    python YOLOv5Jittor/visualize.py --teacher T.pkl --student S.pkl --source IMG_OR_DIR [--layers 17 20 23]

Writes OUT/NAME.png (all panels of one image in a grid) and OUT/NAME/*.png (the single panels); see
FGD-visualize/README.md for what each panel is.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
import jittor as jt
# isort: on
import jittor.nn as nn
import numpy as np
from tqdm import tqdm

from yolocore.augment import check_imgsz
from yolocore.cli import parse_visualize_options, run_script
from yolocore.config import increment_path
from yolocore.fgd_figures import (
    check_sources,
    image_panels,
    letterboxed_sample,
    staged_dir,
    write_fgd_figure,
)
from yolocore.labels import unique_names
from YOLOv5Jittor.KD.fgd import FGDLoss, attention, background_mask, foreground_mask, pad_boxes
from YOLOv5Jittor.utils.checkpoint import load_checkpoint, load_weights, model_from_checkpoint
from YOLOv5Jittor.utils.framework import images_to_tensor, select_device
from YOLOv5Jittor.utils.nms import non_max_suppression

DEFAULT_LAYERS = [17, 20, 23]  # the three maps that feed Detect in every YOLOv5 yaml of the project
DEFAULT_TEMP = 0.5  # FGDLoss's default, for checkpoints whose hyp does not say


def parse_opt(argv=None):
    return parse_visualize_options(argv, __doc__)


def _align_for(fgd, kd_layers, layer, s_channels, t_channels):
    """The module that maps the student's features at layer into the teacher's channels, or None if there is none:
    the checkpoint's align conv for a distilled layer, else the identity when the widths already agree."""
    if fgd is not None and layer in kd_layers:
        return fgd.align[kd_layers.index(layer)]
    return nn.Identity() if s_channels == t_channels else None


@jt.no_grad()
def fgd_maps(teacher, student, fgd, im, targets, layers, kd_layers=None, temp=None):
    """Per layer, a dict of numpy maps for one image, computed as FGDLoss computes them.

    im (1, 3, H, W) in [0, 1]; targets (n, 6) [0, cls, cx, cy, w, h] normalised to im; fgd the student's FGDLoss
    (or None) whose levels distil kd_layers (default: layers); temp defaults to fgd.temp, else 0.5.
    Keys: teacher_/student_ feature (H, W) mean |F|, spatial (H, W), channel (C_teacher,), fg (H, W) = feature x
    fg mask; fg_mask, bg_mask (H, W). The student_ keys are absent where no align conv maps it to the teacher.
    """
    if im.dim() != 4 or im.shape[0] != 1:
        raise ValueError(f"fgd_maps takes one image (1, 3, H, W), got {tuple(im.shape)}")
    kd_layers = list(layers if kd_layers is None else kd_layers)
    if fgd is not None and len(fgd.align) != len(kd_layers):
        raise ValueError(f"the FGD modules have {len(fgd.align)} levels for kd_layers {kd_layers}")
    temp = float(temp if temp is not None else fgd.temp if fgd is not None else DEFAULT_TEMP)
    t_feats = teacher(im, feature_layers=layers)[1]
    s_feats = student(im, feature_layers=layers)[1]
    boxes, valid = pad_boxes(targets.float32().reshape(-1, 6), 1)
    levels = []
    for layer, t, s in zip(layers, t_feats, s_feats):
        if tuple(t.shape[2:]) != tuple(s.shape[2:]):
            raise ValueError(f"layer {layer}: student map {tuple(s.shape[2:])} and teacher map {tuple(t.shape[2:])} "
                             "differ in size; show layers of equal stride")
        t = t.float32()
        fg = foreground_mask(boxes, valid, *t.shape[2:])
        maps = {"fg_mask": fg, "bg_mask": background_mask(fg)}
        sides = [("teacher", t)]
        align = _align_for(fgd, kd_layers, layer, s.shape[1], t.shape[1])
        if align is not None:
            sides.append(("student", align(s.float32())))
        for side, feat in sides:
            spatial, channel = attention(feat, temp)
            mean = feat.abs().mean(1)
            maps.update({f"{side}_feature": mean, f"{side}_spatial": spatial, f"{side}_channel": channel,
                         f"{side}_fg": mean * fg})
        levels.append({k: v[0].numpy() for k, v in maps.items()})
    return levels


def load_models(opt, device):
    """(teacher, student, student checkpoint) after checking that both detect the same classes."""
    t_ckpt, s_ckpt = load_checkpoint(opt.teacher), load_checkpoint(opt.student)
    if t_ckpt["nc"] != s_ckpt["nc"] or list(t_ckpt["names"]) != list(s_ckpt["names"]):
        raise ValueError(f"teacher {opt.teacher} detects {t_ckpt['nc']} classes {list(t_ckpt['names'])}, "
                         f"student {opt.student} {s_ckpt['nc']} classes {list(s_ckpt['names'])}: they must agree")
    return model_from_checkpoint(t_ckpt, device), model_from_checkpoint(s_ckpt, device), s_ckpt


def check_layers(layers, models):
    for name, model in models:
        last = len(model.model) - 2
        bad = [i for i in layers if not 0 <= i <= last]
        if bad:
            raise ValueError(f"layers {bad} do not exist: the {name} has layers 0..{last} before Detect")


def load_fgd(s_ckpt, student, teacher, device):
    """(the student's FGDLoss with its trained align convs, its kd_layers), or (None, []) for a plain student."""
    kd_layers = list(s_ckpt.get("kd_layers") or [])
    if not s_ckpt.get("fgd") or not kd_layers:
        return None, []
    check_layers(kd_layers, [(f"student {s_ckpt['path']} (its kd_layers)", student), ("teacher", teacher)])
    s_ch, t_ch = student.feature_channels(kd_layers), teacher.feature_channels(kd_layers)
    temp = (s_ckpt.get("hyp") or {}).get("fgd_temp", DEFAULT_TEMP)
    fgd = FGDLoss(s_ch, t_ch, temp=temp)
    load_weights(fgd, s_ckpt["fgd"], f"{s_ckpt['path']} (its FGD modules, for student channels {s_ch} and teacher "
                                     f"channels {t_ch} at layers {kd_layers}: was it distilled from another teacher?)")
    return fgd.eval(), kd_layers


def missing_notes(fgd, kd_layers, layers, student, teacher):
    """Per layer, why the student maps are left out, or '' where they are drawn."""
    notes = []
    for layer, s_ch, t_ch in zip(layers, student.feature_channels(layers), teacher.feature_channels(layers)):
        where = "a plain student" if not kd_layers else f"not among its kd_layers {kd_layers}"
        missing = _align_for(fgd, kd_layers, layer, s_ch, t_ch) is None
        notes.append(f"student has {s_ch} channels, teacher {t_ch}, and no align conv ({where})" if missing else "")
    return notes


def prepare(opt, device):
    """Everything checked before anything is written: options, checkpoints, classes, layers, map sizes and every
    image."""
    teacher, student, s_ckpt = load_models(opt, device)
    fgd, kd_layers = load_fgd(s_ckpt, student, teacher, device)
    layers = list(opt.layers or kd_layers or DEFAULT_LAYERS)
    check_layers(layers, [("student", student), ("teacher", teacher)])
    stride = max(int(m.stride.max()) for m in (teacher, student))
    check_imgsz(opt.imgsz, stride)
    temp = fgd.temp if fgd is not None else (s_ckpt.get("hyp") or {}).get("fgd_temp", DEFAULT_TEMP)
    fgd_maps(teacher, student, fgd, jt.zeros((1, 3, opt.imgsz, opt.imgsz)), jt.zeros((0, 6)),
             layers, kd_layers, temp)  # a probe: unequal map sizes fail here, before any output exists
    files, warnings = check_sources(opt.source, len(student.names))
    return {"teacher": teacher, "student": student, "fgd": fgd, "kd_layers": kd_layers, "layers": layers,
            "temp": temp, "stride": stride, "files": files, "warnings": warnings,
            "notes": missing_notes(fgd, kd_layers, layers, student, teacher)}


@jt.no_grad()
def visualize_image(plan, path, name, save_dir, opt, device):
    student = plan["student"]
    im, labels = letterboxed_sample(path, opt.imgsz, plan["stride"], len(student.names))
    tensor = images_to_tensor(np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])[None], device)
    targets = jt.array(np.concatenate([np.zeros((len(labels), 1)), labels], 1))
    levels = fgd_maps(plan["teacher"], student, plan["fgd"], tensor, targets, plan["layers"], plan["kd_layers"],
                      plan["temp"])
    det = non_max_suppression(student(tensor)[0], opt.conf_thres, opt.iou_thres)[0].numpy()
    title = f"{Path(path).name}: teacher {Path(opt.teacher).name}, student {Path(opt.student).name}, T={plan['temp']}"
    return write_fgd_figure(save_dir, name, image_panels(im, labels, det, student.names), levels, plan["layers"],
                            plan["notes"], title)


def main(opt):
    device = select_device(opt.device)
    plan = prepare(opt, device)
    for w in plan["warnings"]:
        print(f"WARNING {w}")
    for layer, note in zip(plan["layers"], plan["notes"]):
        if note:
            print(f"layer {layer}: student maps left out: {note}")
    out = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    with staged_dir(out) as tmp:
        for path, name in tqdm(list(zip(plan["files"], unique_names(plan["files"]))), desc="visualize"):
            visualize_image(plan, path, name, tmp, opt, device)
    print(f"{len(plan['files'])} images, layers {plan['layers']}, saved to {out}")
    return out


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
