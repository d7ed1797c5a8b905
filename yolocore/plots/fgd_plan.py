"""Framework-neutral half of visualize.py's run (both trees): which layers and temperature to show, the checks
made before anything is written, and the loop that writes one figure per image. The networks and their maps stay
in each tree's visualize.py, which hands them in (models are read only through len(model.model), model.stride,
model.names and model.feature_channels); the figures themselves are yolocore.plots.fgd'.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from yolocore.config import increment_path
from yolocore.data.augment import check_imgsz
from yolocore.data.labels import unique_names
from yolocore.plots.fgd import (
    ATTENTION_COLUMNS,
    ATTENTION_CSV,
    DETECTION_COLUMNS,
    DETECTIONS_CSV,
    attention_rows,
    check_sources,
    detection_row,
    image_panels,
    letterboxed_sample,
    staged_dir,
    write_csv,
    write_fgd_figure,
)

DEFAULT_LAYERS = [17, 20, 23]  # the three maps that feed Detect in every YOLOv5 yaml of the project
DEFAULT_TEMP = 0.5  # FGDLoss's default, for checkpoints whose hyp does not say


class DistilledLevels(NamedTuple):
    """What a KD student's checkpoint says about its FGD modules, to rebuild them."""
    layers: list
    student_channels: list
    teacher_channels: list
    temp: float
    source: str  # how to name the weights when they do not fit


def checkpoint_temp(s_ckpt):
    return (s_ckpt.get("hyp") or {}).get("fgd_temp", DEFAULT_TEMP)


def checkpoint_label(path):
    """A checkpoint as figure titles name it: with its run folder, since every runs/*/weights/best.pt is best.pt."""
    path = Path(path)
    return f"{path.parent.parent.name}/{path.name}" if path.parent.name == "weights" else path.name


def check_same_classes(opt, t_ckpt, s_ckpt):
    if t_ckpt["nc"] != s_ckpt["nc"] or list(t_ckpt["names"]) != list(s_ckpt["names"]):
        raise ValueError(f"teacher {opt.teacher} detects {t_ckpt['nc']} classes {list(t_ckpt['names'])}, "
                         f"student {opt.student} {s_ckpt['nc']} classes {list(s_ckpt['names'])}: they must agree")


def check_layers(layers, models):
    for name, model in models:
        last = len(model.model) - 2
        bad = [i for i in layers if not 0 <= i <= last]
        if bad:
            raise ValueError(f"layers {bad} do not exist: the {name} has layers 0..{last} before Detect")


def distilled_levels(s_ckpt, student, teacher):
    """The DistilledLevels of a KD student's checkpoint, after checking its kd_layers; None for a plain student."""
    kd_layers = list(s_ckpt.get("kd_layers") or [])
    if not s_ckpt.get("fgd") or not kd_layers:
        return None
    check_layers(kd_layers, [(f"student {s_ckpt['path']} (its kd_layers)", student), ("teacher", teacher)])
    s_ch, t_ch = student.feature_channels(kd_layers), teacher.feature_channels(kd_layers)
    source = (f"{s_ckpt['path']} (its FGD modules, for student channels {s_ch} and teacher channels {t_ch} at layers "
              f"{kd_layers}: was it distilled from another teacher?)")
    return DistilledLevels(kd_layers, s_ch, t_ch, checkpoint_temp(s_ckpt), source)


def check_maps_request(im_shape, fgd, layers, kd_layers, temp):
    """fgd_maps' (kd_layers, temp) after its defaults, once its arguments are checked (see the trees' fgd_maps)."""
    if len(im_shape) != 4 or im_shape[0] != 1:
        raise ValueError(f"fgd_maps takes one image (1, 3, H, W), got {tuple(im_shape)}")
    kd_layers = list(layers if kd_layers is None else kd_layers)
    if fgd is not None and len(fgd.align) != len(kd_layers):
        raise ValueError(f"the FGD modules have {len(fgd.align)} levels for kd_layers {kd_layers}")
    return kd_layers, float(temp if temp is not None else fgd.temp if fgd is not None else DEFAULT_TEMP)


def missing_notes(kd_layers, layers, student, teacher, aligned):
    """Per layer, why the student maps are left out, or '' where they are drawn; aligned(layer, student channels,
    teacher channels) says whether something maps the student's features into the teacher's channels."""
    notes = []
    for layer, s_ch, t_ch in zip(layers, student.feature_channels(layers), teacher.feature_channels(layers)):
        where = "a plain student" if not kd_layers else f"not among its kd_layers {kd_layers}"
        missing = not aligned(layer, s_ch, t_ch)
        notes.append(f"student has {s_ch} channels, teacher {t_ch}, and no align conv ({where})" if missing else "")
    return notes


@dataclass
class FigurePlan:
    """What visualize.py draws, all checked before anything is written (plan_figures)."""

    teacher: Any
    student: Any
    fgd: Any  # the student's FGDLoss with its trained align convs; None for a plain student
    kd_layers: list  # the layers fgd distils
    layers: list  # the layers drawn
    temp: float  # FGD's attention temperature
    stride: int  # the largest of both models
    files: list  # the images
    warnings: list  # about the images
    notes: list  # per layer, why the student maps are left out, or ''


def plan_figures(opt, teacher, student, s_ckpt, fgd, kd_layers, probe, aligned):
    """Everything checked before anything is written: layers, image size, map sizes (probe(layers, temp) runs the
    maps on a blank image) and every image; returns the FigurePlan."""
    layers = list(opt.layers or kd_layers or DEFAULT_LAYERS)
    check_layers(layers, [("student", student), ("teacher", teacher)])
    stride = max(int(m.stride.max()) for m in (teacher, student))
    check_imgsz(opt.imgsz, stride)
    temp = fgd.temp if fgd is not None else checkpoint_temp(s_ckpt)
    probe(layers, temp)
    files, warnings = check_sources(opt.source, len(student.names))
    return FigurePlan(teacher, student, fgd, kd_layers, layers, temp, stride, files, warnings,
                      missing_notes(kd_layers, layers, student, teacher, aligned))


def write_figures(opt, plan, analyse):
    """One figure per image of the plan, detections.csv and attention.csv, in a new run folder that appears only
    when all are written; returns it.
    analyse(letterboxed BGR image, labels (n, 5)) -> (maps per layer as fgd_maps returns them, the student's and the
    teacher's detections (n, 6))."""
    for w in plan.warnings:
        print(f"WARNING {w}")
    for layer, note in zip(plan.layers, plan.notes):
        if note:
            print(f"layer {layer}: student maps left out: {note}")
    names = plan.student.names
    student = "FGD student" if plan.fgd is not None else "plain student"  # a KD checkpoint, or one without FGD
    models = f"teacher {checkpoint_label(opt.teacher)}, student {checkpoint_label(opt.student)}, T={plan.temp}"
    out = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    detections, attention = [], []
    with staged_dir(out) as tmp:
        for path, name in tqdm(list(zip(plan.files, unique_names(plan.files))), desc="visualize"):
            im, labels = letterboxed_sample(path, opt.imgsz, plan.stride, len(names))
            levels, det, teacher_det = analyse(im, labels)
            title = f"{Path(path).name}: {models}"
            images = image_panels(im, labels, det, teacher_det, names, student)
            write_fgd_figure(tmp, name, images, levels, plan.layers, plan.notes, title)
            detections.append(detection_row(name, path, labels, det, teacher_det, im.shape))
            attention += attention_rows(name, levels, plan.layers)
        write_csv(tmp / DETECTIONS_CSV, DETECTION_COLUMNS, detections)
        write_csv(tmp / ATTENTION_CSV, ATTENTION_COLUMNS, attention)
    print(f"{len(plan.files)} images, layers {plan.layers}, saved to {out} (detections per image: "
          f"{DETECTIONS_CSV}; the student's attention against the teacher's: {ATTENTION_CSV})")
    return out
