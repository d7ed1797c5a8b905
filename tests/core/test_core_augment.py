"""yolocore.data.augment and the augmented dataset path: boxes must stay on the pixels they describe."""
import cv2
import numpy as np
import pytest

from yolocore.data.augment import augment_hsv, box_candidates, letterbox, mixup, random_perspective
from yolocore.data.dataset import YoloDataset
from yolocore.evaluation.boxes import xywhn2xyxy

COLOURS = {0: (0, 0, 255), 1: (0, 255, 0), 2: (255, 0, 0)}  # BGR red, green, blue per class
GEOMETRY_HYP = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
                "shear": 0.0, "perspective": 0.0, "flipud": 0.5, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0}


def colour_mask(bgr, cls):
    """Pixels that are clearly the class colour (edge pixels blended half with grey still count)."""
    c = COLOURS[cls].index(255)
    others = [k for k in range(3) if k != c]
    return (bgr[..., c] > 150) & (bgr[..., others[0]] < 90) & (bgr[..., others[1]] < 90)


def scene(h, w, boxes):
    """Grey image with a filled colour rectangle per [cls, x1, y1, x2, y2] box."""
    im = np.full((h, w, 3), 100, np.uint8)
    for cls, x1, y1, x2, y2 in boxes:
        im[int(y1):int(y2), int(x1):int(x2)] = COLOURS[int(cls)]
    return im


def check_boxes_match_pixels(bgr, boxes, min_inside=0.99, min_cover=0.9, margin=2):
    """Colour pixels must lie inside the boxes of their class, and each box must be filled by its colour.

    Returns (inside, total) colour pixel counts so callers can also judge a whole set of images."""
    h, w = bgr.shape[:2]
    inside = total = 0
    for cls in COLOURS:
        mask = colour_mask(bgr, cls)
        covered = np.zeros_like(mask)
        for c, x1, y1, x2, y2 in boxes:
            if int(c) != cls:
                continue
            xa, ya, xb, yb = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
            covered[max(ya - margin, 0):yb + margin, max(xa - margin, 0):xb + margin] = True
            core = mask[int(np.ceil(y1)) + 1:int(np.floor(y2)) - 1, int(np.ceil(x1)) + 1:int(np.floor(x2)) - 1]
            if core.size:
                assert core.mean() >= min_cover, f"box {c, x1, y1, x2, y2} in a {w}x{h} image is not its colour"
        inside += int((mask & covered).sum())
        total += int(mask.sum())
    if total:
        assert inside / total >= min_inside
    return inside, total


def test_letterbox_shapes_ratio_and_padding():
    im = np.zeros((100, 200, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 64)
    assert out.shape == (64, 64, 3) and ratio == (0.32, 0.32) and (dw, dh) == (0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all() and (out[16:48] == 0).all()
    out, ratio, (dw, dh) = letterbox(np.zeros((31, 64, 3), np.uint8), 64)
    assert out.shape == (64, 64, 3) and dh == 16.5 and (out[:16] == 114).all() and (out[16:47] == 0).all()
    out, ratio, _ = letterbox(np.zeros((20, 40, 3), np.uint8), 64, scaleup=False)
    assert ratio == (1.0, 1.0) and out.shape == (64, 64, 3)
    out, _, _ = letterbox(np.zeros((100, 200, 3), np.uint8), (320, 320), auto=True, stride=32)
    assert out.shape == (160, 320, 3)


def test_letterbox_boxes_follow_ratio_and_padding():
    boxes = np.array([[0, 20, 10, 90, 60], [1, 120, 40, 190, 90]], np.float32)
    out, (rw, rh), (dw, dh) = letterbox(scene(100, 200, boxes), 128)
    moved = boxes.copy()
    moved[:, [1, 3]] = boxes[:, [1, 3]] * rw + dw
    moved[:, [2, 4]] = boxes[:, [2, 4]] * rh + dh
    check_boxes_match_pixels(out, moved)


def test_random_perspective_without_change_is_identity():
    im = scene(64, 80, [[0, 10, 10, 30, 40]])
    targets = np.array([[0, 10, 10, 30, 40]], np.float32)
    out, t = random_perspective(im, targets, np.random.default_rng(0), translate=0, scale=0)
    assert np.array_equal(out, im) and np.array_equal(t, targets)


@pytest.mark.parametrize("kwargs", [{"scale": 0.5, "translate": 0.2}, {"degrees": 30, "shear": 5},
                                    {"perspective": 0.0005, "scale": 0.3}])
def test_random_perspective_boxes_follow_the_pixels(kwargs):
    boxes = np.array([[0, 20, 20, 70, 60], [1, 90, 30, 140, 100], [2, 30, 90, 80, 140]], np.float32)
    tight = "degrees" not in kwargs and "shear" not in kwargs  # warped corners bound a rotated box only loosely
    for seed in range(8):
        out, t = random_perspective(scene(160, 160, boxes), boxes, np.random.default_rng(seed), **kwargs)
        assert out.shape == (160, 160, 3) and t.dtype == np.float32
        check_boxes_match_pixels(out, t, min_inside=0.97, min_cover=0.9 if tight else 0.45)


def test_random_perspective_border_crops_and_box_candidates_filter():
    im = scene(128, 128, [[0, 0, 0, 12, 12], [1, 40, 40, 90, 90]])
    targets = np.array([[0, 0, 0, 12, 12], [1, 40, 40, 90, 90]], np.float32)
    out, t = random_perspective(im, targets, np.random.default_rng(0), translate=0, scale=0, border=(-32, -32))
    assert out.shape == (64, 64, 3)
    assert t.tolist() == [[1, 8, 8, 58, 58]]  # the corner box fell outside the crop
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 100]], float).T
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 10, 10]], float).T
    assert box_candidates(before, after).tolist() == [True, False, False, False]


def test_augment_hsv_is_seeded_and_in_place():
    im = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a, b, c = im.copy(), im.copy(), im.copy()
    augment_hsv(a, np.random.default_rng(1), 0.5, 0.5, 0.5)
    augment_hsv(b, np.random.default_rng(1), 0.5, 0.5, 0.5)
    augment_hsv(c, np.random.default_rng(2), 0.5, 0.5, 0.5)
    assert np.array_equal(a, b) and not np.array_equal(a, im) and not np.array_equal(a, c)
    d = im.copy()
    augment_hsv(d, np.random.default_rng(1), 0, 0, 0)
    assert np.array_equal(d, im)


def test_mixup_blends_images_and_keeps_both_label_sets():
    im1, im2 = np.full((8, 8, 3), 0, np.uint8), np.full((8, 8, 3), 200, np.uint8)
    la, lb = np.ones((2, 5), np.float32), np.zeros((3, 5), np.float32)
    out, labels = mixup(im1, la, im2, lb, np.random.default_rng(0))
    assert out.dtype == np.uint8 and 50 < out.mean() < 150 and len(labels) == 5


@pytest.fixture(scope="module")
def coloured_dataset(tmp_path_factory):
    """Images of several sizes with well separated colour rectangles and exact labels."""
    root = tmp_path_factory.mktemp("coloured")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 160), (160, 120), (128, 128), (90, 200), (200, 150), (140, 140)]):
        boxes = []
        for k, cls in enumerate(rng.permutation(3)):
            bw, bh = rng.uniform(0.2, 0.3) * w, rng.uniform(0.2, 0.3) * h
            x1 = [0.03, 0.36, 0.68][k] * w  # one column per box: no overlaps
            y1 = rng.uniform(0.02, 0.95 - bh / h) * h
            boxes.append([cls, round(x1), round(y1), round(x1 + bw), round(y1 + bh)])
        cv2.imwrite(str(root / "images" / f"{i}.png"), scene(h, w, boxes))
        lines = [f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
                 for c, x1, y1, x2, y2 in boxes]
        (root / "labels" / f"{i}.txt").write_text("\n".join(lines) + "\n")
    return root / "images"


def to_bgr(img):
    return np.ascontiguousarray(img.transpose(1, 2, 0)[..., ::-1])


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_augmented_items_keep_boxes_on_their_pixels(coloured_dataset, mosaic):
    """Mosaic (or letterbox) + random_perspective + flips: returned boxes must cover the colour they were drawn with."""
    ds = YoloDataset(coloured_dataset, imgsz=128, augment=True, hyp=dict(GEOMETRY_HYP, mosaic=mosaic), nc=3)
    inside = total = n_boxes = 0
    for epoch in range(3):
        for i in range(len(ds)):
            img, labels, _, _ = ds[epoch, i]
            assert img.shape == (3, 128, 128)
            boxes = np.concatenate([labels[:, 1:2], xywhn2xyxy(labels[:, 2:], 128, 128)], 1)
            a, t = check_boxes_match_pixels(to_bgr(img), boxes, min_inside=0.0)
            inside, total, n_boxes = inside + a, total + t, n_boxes + len(boxes)
    assert inside / total >= 0.97  # a few pixels of boxes dropped by box_candidates may remain visible
    assert n_boxes >= 3 * len(ds)


def test_mixup_and_hsv_change_pixels_but_not_the_label_format(coloured_dataset):
    hyp = dict(GEOMETRY_HYP, mixup=1.0, hsv_h=0.5, hsv_s=0.5, hsv_v=0.5)
    plain = YoloDataset(coloured_dataset, imgsz=128, augment=True, hyp=GEOMETRY_HYP, nc=3)
    mixed = YoloDataset(coloured_dataset, imgsz=128, augment=True, hyp=hyp, nc=3)
    for i in range(len(mixed)):
        img, labels, _, shapes = mixed[i]
        assert labels.shape[1] == 6 and shapes is None  # mosaic items have no single source shape
        assert ((labels[:, 2:] >= 0) & (labels[:, 2:] <= 1)).all()
        assert len(labels) >= len(plain[i][1])  # mixup adds a second mosaic's labels
        assert not np.array_equal(img, plain[i][0])
