"""Checks of a knowledge-distillation set-up that do not depend on the framework, for both trees' KD/fgd.py,
KD/distiller.py and visualize.py: teacher and student agree on classes, distilled layers exist and their maps line
up, FGDLoss's settings and inputs are well formed. Models and tensors come in as the tree's objects; only their
lengths, shapes and plain attributes are read.
"""
from typing import NamedTuple


def check_teacher_classes(path, ckpt, names):
    """The teacher checkpoint read from path detects exactly the dataset's classes, names."""
    if ckpt["nc"] != len(names) or list(ckpt["names"]) != list(names):
        raise ValueError(f"teacher {path} was trained on {ckpt['nc']} classes {list(ckpt['names'])}, "
                         f"but the dataset has {len(names)} classes {list(names)}")


def check_kd_layers(layers, models):
    """--kd-layers names layers before Detect in each (name, model) of models."""
    for name, model in models:
        if not all(0 <= i < len(model.model) - 1 for i in layers):
            raise ValueError(f"--kd-layers {layers}: the {name} has layers 0..{len(model.model) - 2} before Detect")


def check_equal_maps(layers, student_shapes, teacher_shapes, verb):
    """Student and teacher maps of each layer have one size ((N, C, H, W) shapes); verb: 'distil' or 'show'."""
    for layer, s, t in zip(layers, student_shapes, teacher_shapes):
        if tuple(s[2:]) != tuple(t[2:]):
            raise ValueError(f"layer {layer}: student map {tuple(s[2:])} and teacher map {tuple(t[2:])} "
                             f"differ in size; {verb} layers of equal stride")


def fgd_options(hyp):
    """FGDLoss's keyword arguments from a hyperparameter dict."""
    return dict(temp=hyp["fgd_temp"], alpha_fgd=hyp["fgd_alpha"], beta_fgd=hyp["fgd_beta"],
                gamma_fgd=hyp["fgd_gamma"], lambda_fgd=hyp["fgd_lambda"])


def _per_level(value, levels, name):
    values = [float(value)] * levels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != levels:
        raise ValueError(f"FGDLoss: {name} has {len(values)} entries for {levels} levels")
    return values


class FGDSettings(NamedTuple):
    """FGDLoss's constructor arguments, checked: channel counts per level and the weights one per level."""
    student_channels: list
    teacher_channels: list
    temp: float
    alpha: list
    beta: list
    gamma: list
    lambda_: list

    @classmethod
    def checked(cls, student_channels, teacher_channels, temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd):
        student_channels = [int(c) for c in student_channels]
        teacher_channels = [int(c) for c in teacher_channels]
        levels = len(teacher_channels)
        if len(student_channels) != levels:
            raise ValueError(f"FGDLoss: {len(student_channels)} student channel counts for {levels} teacher levels")
        if temp <= 0:
            raise ValueError(f"FGDLoss: temp must be positive, got {temp}")
        return cls(student_channels, teacher_channels, float(temp), _per_level(alpha_fgd, levels, "alpha_fgd"),
                   _per_level(beta_fgd, levels, "beta_fgd"), _per_level(gamma_fgd, levels, "gamma_fgd"),
                   _per_level(lambda_fgd, levels, "lambda_fgd"))


def check_fgd_inputs(student_channels, teacher_channels, student_shapes, teacher_shapes, targets_shape):
    """FGDLoss's inputs, by shape: one (N, C, H, W) map per level and side with the channels it was built for, and
    (n, 6) targets."""
    levels = len(teacher_channels)
    if len(student_shapes) != levels or len(teacher_shapes) != levels:
        raise ValueError(f"FGDLoss: built for {levels} levels, got {len(student_shapes)} student "
                         f"and {len(teacher_shapes)} teacher feature maps")
    batch = student_shapes[0][0]
    for level, (s, t) in enumerate(zip(student_shapes, teacher_shapes)):
        s, t = tuple(s), tuple(t)
        shapes = f"student {s}, teacher {t}"
        if len(s) != 4 or len(t) != 4:
            raise ValueError(f"FGDLoss level {level}: features must be (N, C, H, W), got {shapes}")
        if s[1] != student_channels[level] or t[1] != teacher_channels[level]:
            raise ValueError(f"FGDLoss level {level}: expected {student_channels[level]} student and "
                             f"{teacher_channels[level]} teacher channels, got {shapes}")
        if s[0] != batch or t[0] != batch or s[2:] != t[2:]:
            raise ValueError(f"FGDLoss level {level}: batch size {batch} and equal spatial sizes expected, "
                             f"got {shapes}")
    if len(targets_shape) != 2 or targets_shape[1] != 6:
        raise ValueError(f"FGDLoss: targets must be (n, 6) [image, class, cx, cy, w, h], got "
                         f"{tuple(targets_shape)}")
