"""A small synthetic aerial-like detection dataset for smoke tests and quick training runs.

Every image comes from np.random.default_rng([seed, split, index]) and is written with fixed encoder
settings, so a rebuild yields the same bytes. Objects differ in both shape and colour and are never
tiny, so a yolov5n learns them in a few CPU minutes."""
import json
import math
from pathlib import Path

import cv2
import numpy as np

from yolocore.config import save_yaml

SYNTHETIC_NAMES = ["airplane", "ship", "storage-tank", "tennis-court", "small-vehicle"]
GENERATOR_VERSION = 1  # bump whenever drawing changes so stale datasets are rebuilt
MARKER = "synthetic.json"
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_PROGRESSIVE, 0]
SPLITS = ("train", "val")
BASE_SIZE = 256  # object sizes below are in pixels at this image size
SHIFT = 4  # fixed-point bits for sub-pixel, anti-aliased polygon edges
# Object length range in px at BASE_SIZE, per class
SIZE_RANGE = {0: (34, 64), 1: (30, 60), 2: (18, 40), 3: (34, 66), 4: (14, 22)}
GROUND_TONES = [(70, 105, 95), (80, 120, 120), (60, 95, 80), (95, 125, 135)]  # BGR greens and browns
FIELD_TONES = [(60, 130, 90), (70, 150, 150), (50, 90, 110), (90, 140, 120), (55, 110, 70)]


def _rotated(points, angle_deg, centre):
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.asarray(points, dtype=np.float64) @ rot.T + centre


def _rect(cx, cy, w, h):
    return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]


def _fill(im, polygons, color):
    for p in polygons:  # one call per polygon: fillPoly leaves the overlap of polygons drawn together empty
        cv2.fillPoly(im, [np.round(p * (1 << SHIFT)).astype(np.int32)], color, lineType=cv2.LINE_AA, shift=SHIFT)


def _shape_parts(cls, length, rng):
    """(parts, angle): parts is a list of (local polygons, BGR colour) drawn in order; the first part is the outline."""
    L = length
    if cls == 0:  # airplane: white fuselage, straight wings and a tailplane
        body = [_rect(0, 0, L, L * 0.14), _rect(L * 0.08, 0, L * 0.2, L * 0.95), _rect(-L * 0.4, 0, L * 0.1, L * 0.38)]
        return [(body, (238, 236, 232))], rng.uniform(0, 360)
    if cls == 1:  # ship: long orange hull with a pale superstructure
        hull = cv2.ellipse2Poly((0, 0), (int(L * 8), int(L * 8 / 3.6)), 0, 0, 360, 10).astype(np.float64) / 16
        return [([hull], (40, 110, 235)), ([np.array(_rect(-L * 0.12, 0, L * 0.25, L * 0.12))], (225, 235, 240))], \
            rng.uniform(0, 360)
    if cls == 2:  # storage tank: beige disc, dark ring and centre
        disc = cv2.ellipse2Poly((0, 0), (int(L * 8),) * 2, 0, 0, 360, 10).astype(np.float64) / 16
        pale, dark = (150, 190, 215), (60, 60, 70)  # nested discs paint the ring without polygons with holes
        return [([disc], pale), ([disc * 0.8], dark), ([disc * 0.66], pale), ([disc * 0.16], dark)], 0.0
    if cls == 3:  # tennis court: blue rectangle with white border, net and service lines
        W, H = L, L * 0.55
        court = [np.array(_rect(0, 0, W, H))]
        t = max(1.0, L / 40)
        lines = [_rect(0, -H * 0.4, W * 0.86, t), _rect(0, H * 0.4, W * 0.86, t), _rect(-W * 0.43, 0, t, H * 0.8),
                 _rect(W * 0.43, 0, t, H * 0.8), _rect(0, 0, t, H * 0.8), _rect(0, 0, W * 0.5, t)]
        return [(court, (170, 110, 40)), ([np.array(x) for x in lines], (245, 245, 245))], \
            rng.choice([0.0, 90.0]) + rng.uniform(-12, 12)
    car = [np.array(_rect(0, 0, L, L * 0.5))]  # small vehicle: bright yellow box with a dark windscreen
    glass = [np.array(_rect(L * 0.18, 0, L * 0.14, L * 0.4))]
    return [(car, (30, 215, 245)), (glass, (50, 40, 40))], rng.uniform(0, 360)


def _ground(rng, size):
    """Noisy earth-toned ground with a few field patches and roads."""
    tint = cv2.resize(rng.normal(0, 12, (6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    # OpenCV anti-aliases only on uint8, so everything is drawn on uint8 and the noise added afterwards
    im = np.clip(tint + np.float32(GROUND_TONES[rng.integers(len(GROUND_TONES))]), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 6)):
        w, h = rng.uniform(0.15, 0.5, 2) * size
        field = _rotated(_rect(0, 0, w, h), rng.uniform(0, 180), rng.uniform(0, size, 2))
        tone = np.array(FIELD_TONES[rng.integers(len(FIELD_TONES))]) + rng.normal(0, 6, 3)
        _fill(im, [field], tone.tolist())
    for _ in range(rng.integers(0, 3)):
        a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        direction = (b - a) / (np.linalg.norm(b - a) + 1e-9) * size * 2  # roads run across the whole image
        p1, p2 = np.round(a - direction).astype(int), np.round(a + direction).astype(int)
        cv2.line(im, tuple(p1.tolist()), tuple(p2.tolist()), (105, 105, 108), int(rng.integers(5, 11)), cv2.LINE_AA)
    return im


def _make_image(rng, size):
    """(BGR uint8 image, labels (n,5) [cls,cx,cy,w,h] normalised)."""
    im = _ground(rng, size)
    scale = size / BASE_SIZE
    boxes, labels = [], []
    for _ in range(rng.integers(3, 9)):
        cls = int(rng.integers(len(SYNTHETIC_NAMES)))
        parts, angle = _shape_parts(cls, rng.uniform(*SIZE_RANGE[cls]) * scale, rng)
        outline = np.vstack([_rotated(p, angle, (0, 0)) for p in parts[0][0]])
        lo, hi = outline.min(0), outline.max(0)
        for _attempt in range(20):  # rejection sampling for a free spot fully inside the image
            centre = rng.uniform(2 - lo, size - 2 - hi)
            box = np.concatenate([lo + centre, hi + centre])
            if all(box[0] > b[2] + 3 or box[2] < b[0] - 3 or box[1] > b[3] + 3 or box[3] < b[1] - 3 for b in boxes):
                break
        else:
            continue
        for polygons, color in parts:
            _fill(im, [_rotated(p, angle, centre) for p in polygons], color)
        boxes.append(box)
        labels.append([cls, (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size,
                       (box[2] - box[0]) / size, (box[3] - box[1]) / size])
    noisy = im + rng.normal(0, 5, im.shape).astype(np.float32)  # sensor noise over objects too
    return np.clip(noisy, 0, 255).astype(np.uint8), np.array(labels, dtype=np.float64).reshape(-1, 5)


def _expected_files(root, n_train, n_val):
    for split, n in zip(SPLITS, (n_train, n_val)):
        for i in range(n):
            yield root / "images" / split / f"syn_{i:05d}.jpg"
            yield root / "labels" / split / f"syn_{i:05d}.txt"


def make_synthetic_dataset(root, n_train=128, n_val=32, imgsz=256, seed=0):
    """Write (or reuse) the dataset under root and return the path of root/'synthetic.yaml'."""
    root = Path(root)
    params = {"generator": "yolocore.data.synthetic", "version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val,
              "imgsz": imgsz, "seed": seed, "names": SYNTHETIC_NAMES}
    yaml_path, marker = root / "synthetic.yaml", root / MARKER
    try:
        complete = json.loads(marker.read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        complete = False
    if complete and yaml_path.is_file() and all(f.is_file() for f in _expected_files(root, n_train, n_val)):
        return yaml_path

    marker.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    for split, n in zip(SPLITS, (n_train, n_val)):
        im_dir, lb_dir = root / "images" / split, root / "labels" / split
        for d in (im_dir, lb_dir):
            d.mkdir(parents=True, exist_ok=True)
            for stale in [*d.glob("syn_*.jpg"), *d.glob("syn_*.txt")]:
                stale.unlink()
        (root / "labels" / f"{split}.cache").unlink(missing_ok=True)
        for i in range(n):
            im, labels = _make_image(np.random.default_rng([seed, SPLITS.index(split), i]), imgsz)
            if not cv2.imwrite(str(im_dir / f"syn_{i:05d}.jpg"), im, JPEG_PARAMS):
                raise OSError(f"{im_dir / f'syn_{i:05d}.jpg'}: could not write image")
            rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in labels]
            (lb_dir / f"syn_{i:05d}.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    save_yaml(yaml_path, {"path": ".", "train": "images/train", "val": "images/val",
                          "nc": len(SYNTHETIC_NAMES), "names": SYNTHETIC_NAMES})
    marker.write_text(json.dumps(params), encoding="utf-8")
    return yaml_path
