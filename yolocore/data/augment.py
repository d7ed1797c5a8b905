"""YOLOv5 image augmentations (ultralytics utils/augmentations.py semantics) on BGR uint8 numpy images.

Every random draw comes from an explicit np.random.Generator so that a sample depends only on the
generator's seed, never on which worker or framework produced it."""
import math

import cv2
import numpy as np

PAD_COLOR = (114, 114, 114)


def check_imgsz(imgsz, stride):
    """The image size must tile the model's coarsest grid: an error naming both, before any output is written."""
    if imgsz % stride:
        raise ValueError(f"--imgsz {imgsz} must be a multiple of the model stride {stride}")


def letterbox(im, new_shape=640, color=PAD_COLOR, auto=False, scaleup=True, stride=32):
    """Resize keeping the aspect ratio, then pad to new_shape (h, w); auto pads only to a stride multiple.

    Returns (im, (rw, rh), (dw, dh)) with dw, dh the padding on the left and top (possibly x.5)."""
    shape = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:  # shrinking only keeps val images sharp, as YOLOv5
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw /= 2
    dh /= 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    # +-0.1 splits an odd padding as YOLOv5 does: the extra pixel goes to the bottom/right
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (r, r), (dw, dh)


def network_input(im):
    """The (1, 3, H, W) contiguous RGB batch a network takes for one HWC BGR image (still uint8)."""
    return np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])[None]


def box_candidates(box1, box2, wh_thr=2, ar_thr=100, area_thr=0.1, eps=1e-16):
    """Which warped boxes to keep: box1 (4,n) before and box2 (4,n) after augmentation, xyxy.

    A box survives if it is wider and taller than wh_thr px, keeps more than area_thr of its area
    and its aspect ratio stays below ar_thr."""
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_perspective(im, targets, rng, degrees=0, translate=0.1, scale=0.1, shear=0, perspective=0.0,
                       border=(0, 0)):
    """Random rotation, scale, shear, translation and perspective of an image and its [cls,x1,y1,x2,y2] px boxes.

    border (y, x) grows (positive) or crops (negative, as for a mosaic) the output on each side."""
    height = im.shape[0] + border[0] * 2
    width = im.shape[1] + border[1] * 2

    C = np.eye(3)  # move the image centre to the origin so rotation/scale act about it
    C[0, 2] = -im.shape[1] / 2
    C[1, 2] = -im.shape[0] / 2

    P = np.eye(3)
    P[2, 0] = rng.uniform(-perspective, perspective)
    P[2, 1] = rng.uniform(-perspective, perspective)

    R = np.eye(3)
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)

    S = np.eye(3)
    S[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)

    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height

    M = T @ S @ R @ P @ C  # applied right to left
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=(width, height), borderValue=PAD_COLOR)
        else:
            im = cv2.warpAffine(im, M[:2], dsize=(width, height), borderValue=PAD_COLOR)

    targets = np.asarray(targets, dtype=np.float32).reshape(-1, 5)
    n = len(targets)
    if n:
        xy = np.ones((n * 4, 3))
        xy[:, :2] = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)  # all four corners of each box
        xy = xy @ M.T
        xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
        x = xy[:, [0, 2, 4, 6]]
        y = xy[:, [1, 3, 5, 7]]
        new = np.concatenate((x.min(1), y.min(1), x.max(1), y.max(1))).reshape(4, n).T
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        keep = box_candidates(box1=targets[:, 1:5].T * s, box2=new.T, area_thr=0.10)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return im, targets


def augment_hsv(im, rng, hgain=0.5, sgain=0.5, vgain=0.5):
    """Random hue/saturation/value gains applied in place to a BGR uint8 image."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(im.dtype)  # OpenCV hue lives in [0, 180)
    lut_sat = np.clip(x * r[1], 0, 255).astype(im.dtype)
    lut_val = np.clip(x * r[2], 0, 255).astype(im.dtype)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def mixup(im, labels, im2, labels2, rng):
    """Blend two same-sized images with a Beta(32, 32) ratio and keep the labels of both."""
    r = rng.beta(32.0, 32.0)
    im = (im * r + im2 * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)

