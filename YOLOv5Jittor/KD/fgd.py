"""FGD feature distillation loss (Focal and Global Knowledge Distillation for Detectors, CVPR 2022): the Jittor
twin of YOLOv5Pytorch/KD/fgd.py, term for term. That file's docstring says how both follow the official mmdet
FeatureLoss (yzd-v/FGD), and where and why they differ from it.
"""
import jittor as jt
import jittor.nn as nn

from yolocore.training.distillation import FGDSettings, check_fgd_inputs
from YOLOv5Jittor.models.common import draw_initial_weights
from YOLOv5Jittor.utils.jittor_nn import LayerNorm


class GcBlock(nn.Module):
    """Global context block: adds softmax-pooled context back to every cell, for the relation term."""

    # The official initialisation. A zero last conv makes the block start as the identity: early relation loss is
    # plain feature MSE.
    init_rules = {"conv_mask.weight": "relu_normal", "conv_mask.bias": "zeros",
                  "channel_add.3.weight": "zeros", "channel_add.3.bias": "zeros"}

    def __init__(self, channels):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        draw_initial_weights(self)

    def execute(self, x):
        return x + self.global_context(x)[:, :, None, None]

    def global_context(self, x):
        """(N, C): what the block adds to every cell of x."""
        n, c, h, w = x.shape
        # conv_mask (C -> 1, 1x1) as a batched matmul with its own weights: same parameters and result, with
        # the pooling a 2x cheaper forward+backward on CPU than the convolution (no transposed copies of x)
        flat = x.reshape(n, c, h * w)
        logits = jt.bmm(self.conv_mask.weight.reshape(1, 1, c).expand(n, 1, c), flat) + self.conv_mask.bias
        weights = nn.softmax(logits, dim=2)
        context = jt.bmm(flat, weights.transpose(1, 2)).reshape(n, c)
        # channel_add's 1x1 convs on 1x1 maps as linear layers on (N, C) rows: same parameters and result, a
        # tenth of the convolutions' CPU time.
        squeeze, norm, expand = self.channel_add[0], self.channel_add[1], self.channel_add[3]
        hidden = nn.linear(context, squeeze.weight.flatten(1), squeeze.bias)
        hidden = norm(hidden.reshape(n, -1, 1, 1)).reshape(n, -1)
        return nn.linear(nn.relu(hidden), expand.weight.flatten(1), expand.bias)


def attention(feat, temp):
    """Spatial (N, H, W) and channel (N, C) attention of a feature map; each averages to 1."""
    n, c, h, w = feat.shape
    value = feat.abs()
    # sums scaled afterwards, not means: a mean's backward divides a whole map, a sum's only broadcasts
    spatial = h * w * nn.softmax(value.sum(1).reshape(n, h * w) / (c * temp), dim=1).reshape(n, h, w)
    channel = c * nn.softmax(value.sum((2, 3)) / (h * w * temp), dim=1)
    return spatial, channel


def pad_boxes(targets, batch_size):
    """(n, 6) [image, class, cx, cy, w, h] rows -> normalised x1y1x2y2 boxes (B, M, 4) and validity (B, M).

    M is the largest box count of an image (at least 1, so images without boxes still reduce over a box axis).
    """
    image = targets[:, 0].long()
    cx, cy, w, h = targets[:, 2], targets[:, 3], targets[:, 4], targets[:, 5]
    xyxy = jt.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    one_hot = (image[None, :] == jt.arange(batch_size)[:, None]).long()  # (B, n)
    counts = one_hot.sum(1)
    rank = (one_hot.cumsum(1) * one_hot).sum(0) - 1  # slot of each box among its image's boxes
    # Jittor's full reductions are shape (1,), not scalars, hence the flatten.
    most, placed = jt.stack([counts.max(), counts.sum()]).flatten().tolist()  # one host sync sizes the padding
    if placed != len(targets):
        raise ValueError(f"FGDLoss: target image indices must lie in [0, {batch_size}) for a batch of {batch_size}")
    boxes = jt.zeros((batch_size, max(most, 1), 4))
    valid = jt.zeros((batch_size, max(most, 1)))
    boxes[image, rank] = xyxy
    valid[image, rank] = 1.0
    return boxes, valid


def foreground_mask(boxes, valid, h, w):
    """(B, H, W): each cell takes the largest 1/area of the boxes covering it, 0 where none does.

    Boxes are scaled to the grid with floor/ceil and cover rows hmin..hmax and columns wmin..wmax inclusive,
    as the official slices; area counts those cells before clipping to the map, as the official does.
    Peak memory is one (B, M, H, W) float tensor: 13 MB for 16 images of 50 boxes on a 64x64 map.
    """
    # Clamp to the image: mmdet boxes (the official input) never leave it, and a rounding error of
    # cx - w/2 below 0 would otherwise floor to -1 and change the area.
    x1, x2 = (boxes[..., 0] * w).clamp(0, w), (boxes[..., 2] * w).clamp(0, w)
    y1, y2 = (boxes[..., 1] * h).clamp(0, h), (boxes[..., 3] * h).clamp(0, h)
    wmin, wmax, hmin, hmax = x1.floor(), x2.ceil(), y1.floor(), y2.ceil()
    area = valid / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
    rows = jt.arange(h).float32()
    cols = jt.arange(w).float32()
    in_rows = ((rows >= hmin[..., None]) & (rows <= hmax[..., None])).float32()  # (B, M, H)
    in_cols = ((cols >= wmin[..., None]) & (cols <= wmax[..., None])).float32()  # (B, M, W)
    return ((area[..., None] * in_rows)[..., None] * in_cols[..., None, :]).max(1)


def background_mask(fg):
    """Cells covered by no box, normalised to sum 1 per image; all zero for an image that is all foreground."""
    bg = (fg == 0).float32()
    return bg / bg.sum((1, 2), keepdims=True).clamp(min_v=1)


class FGDLoss(nn.Module):
    """FGD loss over several feature levels.

    execute(student_feats, teacher_feats, targets) -> (loss, terms): loss is a scalar, terms the detached
    [alpha*fg, beta*bg, gamma*mask, lambda*relation] summed over levels (terms.sum() == loss); N = batch size.
    Weights may be one number for all levels or a list with one entry per level.
    """

    def __init__(
        self,
        student_channels,
        teacher_channels,
        temp=0.5,
        alpha_fgd=2e-3,
        beta_fgd=1e-3,
        gamma_fgd=1e-3,
        lambda_fgd=1e-5,
    ):
        super().__init__()
        (self.student_channels, self.teacher_channels, self.temp, self.alpha, self.beta, self.gamma,
         self.lambda_) = FGDSettings.checked(student_channels, teacher_channels, temp, alpha_fgd, beta_fgd, gamma_fgd,
                                             lambda_fgd)
        self.align = nn.ModuleList([
            nn.Conv2d(s, t, kernel_size=1, stride=1, padding=0) if s != t else nn.Identity()
            for s, t in zip(self.student_channels, self.teacher_channels)
        ])
        draw_initial_weights(self.align)
        self.gc_student = nn.ModuleList([GcBlock(t) for t in self.teacher_channels])
        self.gc_teacher = nn.ModuleList([GcBlock(t) for t in self.teacher_channels])

    def execute(self, student_feats, teacher_feats, targets):
        # This tree trains in float32 (no mixed precision): no autocast to switch off, as PyTorch's must.
        return self.loss(student_feats, teacher_feats, targets)

    def loss(self, student_feats, teacher_feats, targets):
        check_fgd_inputs(self.student_channels, self.teacher_channels, [f.shape for f in student_feats],
                         [f.shape for f in teacher_feats], targets.shape)
        batch = student_feats[0].shape[0]
        boxes, valid = pad_boxes(targets.detach().float32(), batch)
        total = jt.zeros(4)
        for level, (student, teacher) in enumerate(zip(student_feats, teacher_feats)):
            student = self.align[level](student.float32())
            teacher = teacher.detach().float32()
            n, c, h, w = teacher.shape
            spatial_t, channel_t = attention(teacher, self.temp)
            spatial_s, channel_s = attention(student, self.temp)
            fg = foreground_mask(boxes, valid, h, w)
            bg = background_mask(fg)
            # One batched matmul sums the squared gap over channels twice: weighted by the teacher's channel
            # attention (the error that fg and bg mask), and plain (for the relation term).
            gap = (student - teacher).reshape(n, c, h * w)
            weights = jt.stack([channel_t, jt.ones_like(channel_t)], 1)  # (N, 2, C)
            per_cell = jt.bmm(weights, gap.pow(2))  # (N, 2, H*W)
            error = per_cell[:, 0].reshape(n, h, w) * spatial_t
            fg_loss = (error * fg).sum() / n
            bg_loss = (error * bg).sum() / n
            mask_loss = ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n
            # GcBlock(x) = x + context(x), so G(s) - G(t) = gap + d, where d = context(s) - context(t) is one value
            # per channel: sum((gap + d)^2) expands into sums of gap^2 (above), of gap, and of d^2, and neither
            # block's output map is built.
            d = self.gc_student[level].global_context(student) - self.gc_teacher[level].global_context(teacher)
            relation_loss = (
                per_cell[:, 1].sum(1) + 2 * (d * gap.sum(2)).sum(1) + h * w * d.pow(2).sum(1)
            ).sum() / n
            total = total + jt.stack(
                [
                    self.alpha[level] * fg_loss,
                    self.beta[level] * bg_loss,
                    self.gamma[level] * mask_loss,
                    self.lambda_[level] * relation_loss,
                ]
            ).flatten()
        return total.sum(), total.detach()
