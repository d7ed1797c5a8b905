"""Teacher loading and FGD set-up for --mode KD: every mismatch is an error before the first step."""
import jittor as jt

from YOLOv5Jittor.KD.fgd import FGDLoss
from YOLOv5Jittor.utils.checkpoint import load_checkpoint, model_from_checkpoint


def load_teacher(path, names, device):
    """The teacher network in eval mode, frozen; its classes must be the dataset's."""
    ckpt = load_checkpoint(path)
    if ckpt["nc"] != len(names) or list(ckpt["names"]) != list(names):
        raise ValueError(f"teacher {path} was trained on {ckpt['nc']} classes {list(ckpt['names'])}, "
                         f"but the dataset has {len(names)} classes {list(names)}")
    teacher = model_from_checkpoint(ckpt, device)
    for p in teacher.parameters():
        p.stop_grad()
    return teacher


def build_fgd(student, teacher, layers, hyp, imgsz, device):
    """FGDLoss sized from both models, after checking that the distilled maps line up."""
    for name, model in (("student", student), ("teacher", teacher)):
        if not all(0 <= i < len(model.model) - 1 for i in layers):
            raise ValueError(f"--kd-layers {layers}: the {name} has layers 0..{len(model.model) - 2} before Detect")
    was_training = student.training
    student.eval()
    with jt.no_grad():
        probe = jt.zeros((1, 3, imgsz, imgsz))
        s_feats = student(probe, feature_layers=layers)[1]
        t_feats = teacher(probe, feature_layers=layers)[1]
    if was_training:
        student.train()
    for layer, s, t in zip(layers, s_feats, t_feats):
        if s.shape[2:] != t.shape[2:]:
            raise ValueError(f"layer {layer}: student map {tuple(s.shape[2:])} and teacher map {tuple(t.shape[2:])} "
                             "differ in size; distil layers of equal stride")
    return FGDLoss([f.shape[1] for f in s_feats], [f.shape[1] for f in t_feats], temp=hyp["fgd_temp"],
                   alpha_fgd=hyp["fgd_alpha"], beta_fgd=hyp["fgd_beta"], gamma_fgd=hyp["fgd_gamma"],
                   lambda_fgd=hyp["fgd_lambda"])
