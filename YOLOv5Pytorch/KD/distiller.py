"""Teacher loading and FGD set-up for --mode KD: every mismatch is an error before the first step."""
import torch

from yolocore.training.distillation import check_equal_maps, check_kd_layers, check_teacher_classes, fgd_options
from YOLOv5Pytorch.KD.fgd import FGDLoss
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint
from YOLOv5Pytorch.utils.framework import teacher_precision


def load_teacher(path, names, device, amp=False):
    """The teacher network in eval mode, frozen, in framework.teacher_precision (the device's low precision when the
    run trains under mixed precision, else float32); its classes must be the dataset's."""
    ckpt = load_checkpoint(path)
    check_teacher_classes(path, ckpt, names)
    teacher = model_from_checkpoint(ckpt, device).to(teacher_precision(device, amp))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_fgd(student, teacher, layers, hyp, imgsz, device):
    """FGDLoss sized from both models, after checking that the distilled maps line up. The probe leaves no decoded
    grid cached in the student (Detect.reset_grid): AutoAnchor may change its anchors after this, and the EMA
    copies the student."""
    check_kd_layers(layers, (("student", student), ("teacher", teacher)))
    was_training = student.training
    student.eval()
    with torch.no_grad():
        probe = torch.zeros(1, 3, imgsz, imgsz, device=device)
        s_feats = student(probe, feature_layers=layers)[1]
        t_feats = teacher.features(probe, layers)
    student.train(was_training)
    student.model[-1].reset_grid()
    check_equal_maps(layers, [f.shape for f in s_feats], [f.shape for f in t_feats], "distil")
    return FGDLoss([f.shape[1] for f in s_feats], [f.shape[1] for f in t_feats], **fgd_options(hyp)).to(device)
