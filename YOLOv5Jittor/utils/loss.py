"""YOLOv5 detection loss: CIoU box loss, objectness with IoU targets, BCE classes, three-cell assignment."""
import math

import jittor as jt
import jittor.nn as nn

from yolocore.config import OPTIONAL_HYP_DEFAULTS
from YOLOv5Jittor.utils.jittor_nn import BCEWithLogitsLoss

BALANCE = {3: [4.0, 1.0, 0.4]}  # objectness weight per level: small objects' level counts most


def smooth_bce(eps=0.1):
    return 1.0 - 0.5 * eps, 0.5 * eps


def bbox_ciou(box1, box2, eps=1e-7):
    """CIoU of matching rows of two (n, 4) xywh box tensors."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
    b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (jt.minimum(b1_x2, b2_x2) - jt.maximum(b1_x1, b2_x1)).clamp(min_v=0) * (
        jt.minimum(b1_y2, b2_y2) - jt.maximum(b1_y1, b2_y1)
    ).clamp(min_v=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = jt.maximum(b1_x2, b2_x2) - jt.minimum(b1_x1, b2_x1)
    ch = jt.maximum(b1_y2, b2_y2) - jt.minimum(b1_y1, b2_y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    # eps keeps a collapsed predicted box (w = h = 0 when its logits underflow) from turning 0/0 into NaN
    v = (4 / math.pi**2) * jt.pow(jt.atan(w2 / (h2 + eps)) - jt.atan(w1 / (h1 + eps)), 2)
    with jt.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class FocalLoss(nn.Module):
    """Focal wrapper around BCEWithLogits, used when hyp fl_gamma > 0."""

    def __init__(self, loss_fcn, gamma=1.5, alpha=0.25):
        super().__init__()
        self.loss_fcn, self.gamma, self.alpha = loss_fcn, gamma, alpha
        self.loss_fcn.reduction = "none"

    def execute(self, pred, true):
        loss = self.loss_fcn(pred, true)
        p = jt.sigmoid(pred)
        p_t = true * p + (1 - true) * (1 - p)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        return (loss * alpha_factor * (1.0 - p_t) ** self.gamma).mean()


class ComputeLoss:
    def __init__(self, model, hyp):
        bce_cls = BCEWithLogitsLoss(pos_weight=jt.array([hyp["cls_pw"]]).stop_grad())
        bce_obj = BCEWithLogitsLoss(pos_weight=jt.array([hyp["obj_pw"]]).stop_grad())
        if hyp["fl_gamma"] > 0:
            bce_cls, bce_obj = FocalLoss(bce_cls, hyp["fl_gamma"]), FocalLoss(bce_obj, hyp["fl_gamma"])
        self.cp, self.cn = smooth_bce(hyp.get("label_smoothing", OPTIONAL_HYP_DEFAULTS["label_smoothing"]))
        det = model.model[-1]
        self.balance = BALANCE.get(det.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        self.bce_cls, self.bce_obj, self.hyp = bce_cls, bce_obj, hyp
        self.gr = 1.0  # objectness target = IoU (not 1) for assigned cells
        self.na, self.nc, self.nl, self.anchors = det.na, det.nc, det.nl, det.anchors

    def __call__(self, preds, targets):
        """preds: Detect's train outputs; targets: (n, 6) [image, class, cx, cy, w, h] normalised.
        Returns (loss * batch size, [box, obj, cls] detached) as YOLOv5."""
        lcls = jt.zeros(1)
        lbox = jt.zeros(1)
        lobj = jt.zeros(1)
        tcls, tbox, indices, anchors = self.build_targets(preds, targets)
        for i, pi in enumerate(preds):
            b, a, gj, gi = indices[i]
            tobj = jt.zeros(pi.shape[:4], dtype=pi.dtype)
            n = b.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                iou = bbox_ciou(jt.concat((pxy, pwh), 1), tbox[i]).squeeze(1)
                lbox += (1.0 - iou).mean()
                iou = iou.detach().clamp(min_v=0).cast(tobj.dtype)
                tobj[b, a, gj, gi] = (1.0 - self.gr) + self.gr * iou
                if self.nc > 1:
                    t = jt.full_like(pcls, self.cn)
                    t[jt.arange(n), tcls[i]] = self.cp
                    lcls += self.bce_cls(pcls, t)
            lobj += self.bce_obj(pi[..., 4], tobj) * self.balance[i]
        lbox *= self.hyp["box"]
        lobj *= self.hyp["obj"]
        lcls *= self.hyp["cls"]
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, jt.concat((lbox, lobj, lcls)).detach()

    def build_targets(self, preds, targets):
        """Each target goes to its own cell and the two nearest neighbours (x and y), for every anchor whose
        shape ratio to the box is below anchor_t; YOLOv5's offsets widen the positive set threefold."""
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch = [], [], [], []
        gain = jt.ones(7)
        ai = jt.arange(na).float().view(na, 1).repeat(1, nt)
        targets = jt.concat((targets.repeat(na, 1, 1), ai[..., None]), 2)
        g = 0.5
        off = jt.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]).float() * g
        for i in range(self.nl):
            anchors, shape = self.anchors[i], preds[i].shape
            gain[2:6] = jt.array(list(shape))[[3, 2, 3, 2]].float()
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                j = jt.maximum(r, 1 / r).max(2) < self.hyp["anchor_t"]
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                # Jittor's % truncates toward zero; both operands are non-negative here, so it equals torch's.
                j, k = ((gxy % 1 < g) & (gxy > 1)).t()
                left, m = ((gxi % 1 < g) & (gxi > 1)).t()
                j = jt.stack((jt.ones_like(j), j, k, left, m))
                t = t.repeat((5, 1, 1))[j]
                offsets = (jt.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t = targets[0]
                offsets = 0
            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a, (b, c) = a.long().view(-1), bc.long().t()
            gij = (gxy - offsets).long()
            # Box targets are relative to the clamped cell, as ultralytics' in-place clamp makes them.
            gi, gj = gij[:, 0].clamp(0, shape[3] - 1), gij[:, 1].clamp(0, shape[2] - 1)
            indices.append((b, a, gj, gi))
            tbox.append(jt.concat((gxy - jt.stack((gi, gj), 1), gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch
