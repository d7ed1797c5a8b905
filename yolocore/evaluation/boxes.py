"""Box conversions and IoU in numpy, shared by the data pipeline, metrics and both framework trees."""
import numpy as np


def xywh2xyxy(x):
    """[cx, cy, w, h] -> [x1, y1, x2, y2] in the last axis, of a numpy array or of either framework's tensor: a
    tensor is cloned where it is (the trees' NMS runs it on the device), never converted."""
    y = x.clone() if hasattr(x, "clone") else np.copy(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x):
    y = np.copy(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywhn2xyxy(x, w, h, padw=0.0, padh=0.0):
    """Normalised centre boxes to pixel corners, shifted by a letterbox or mosaic offset."""
    y = np.copy(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy2xywhn(x, w, h, clip=False, eps=0.0):
    """Pixel corners to normalised centre boxes; clip to the image first if asked."""
    x = np.copy(x)
    if clip:
        clip_boxes(x, (h - eps, w - eps))
    y = np.copy(x)
    y[..., 0] = ((x[..., 0] + x[..., 2]) / 2) / w
    y[..., 1] = ((x[..., 1] + x[..., 3]) / 2) / h
    y[..., 2] = (x[..., 2] - x[..., 0]) / w
    y[..., 3] = (x[..., 3] - x[..., 1]) / h
    return y


def clip_boxes(boxes, shape):
    """Clip xyxy boxes in place to an image of shape (h, w)."""
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, shape[1])
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, shape[0])
    return boxes


def scale_boxes(img1_shape, boxes, img0_shape, ratio_pad=None):
    """Map xyxy boxes from a letterboxed image of shape img1_shape back to the original img0_shape.

    ratio_pad ((gain_y, gain_x), (pad_x, pad_y)) is what the dataset recorded. Each axis takes its own gain: the
    short side was resized to a whole number of pixels, so its gain is not the long side's. ultralytics divides
    both by gain_y, which leaves x up to 0.4 % short on NWPU's wide images (4.7 px at x = 1082); mAP does not see
    it, as IoU is the same for two boxes stretched alike, but boxes written for other tools (val.py --save-json)
    would carry it.
    """
    if ratio_pad is None:
        gain_y = gain_x = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = (img1_shape[1] - img0_shape[1] * gain_x) / 2, (img1_shape[0] - img0_shape[0] * gain_y) / 2
    else:
        (gain_y, gain_x), pad = ratio_pad
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., [0, 2]] /= gain_x
    boxes[..., [1, 3]] /= gain_y
    return clip_boxes(boxes, img0_shape)


def box_iou(box1, box2, eps=1e-7):
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    box1 = np.asarray(box1, dtype=np.float64)
    box2 = np.asarray(box2, dtype=np.float64)
    lt = np.maximum(box1[:, None, :2], box2[None, :, :2])
    rb = np.minimum(box1[:, None, 2:4], box2[None, :, 2:4])
    inter = (rb - lt).clip(0).prod(2)
    area1 = (box1[:, 2:4] - box1[:, :2]).prod(1)
    area2 = (box2[:, 2:4] - box2[:, :2]).prod(1)
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


# Boxes per IoU matrix in both trees' nms: on a CPU a block's matrix costs block^2 work, on a GPU each block costs
# a host round trip.
NMS_BLOCK_CPU, NMS_BLOCK_GPU = 256, 2048


def greedy_keep(overlaps, suppressed, limit):
    """Greedy NMS over one block of score-sorted boxes, given which pairs overlap too much.

    overlaps: (k, k) bool, [i, j] True when box i would suppress box j; suppressed: (k,) bool, boxes already
    suppressed by boxes kept in earlier blocks. Returns the indices kept, best first, at most limit of them.
    Greedy decisions depend only on higher-scored boxes, so blocks taken in score order give exactly the
    result of one pass over all boxes.
    """
    suppressed = suppressed.copy()
    keep = []
    for i in range(len(suppressed)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        suppressed |= overlaps[i]
    return np.array(keep, dtype=np.int64)
