"""Framework-neutral half of visualize.py (both trees): input images and labels, and the figures of what FGD
distils. The maps themselves are computed by each tree's KD/fgd.py; this module only receives numpy arrays.

Panels are drawn as RGB arrays by yolocore.plots.raster and written with OpenCV.
"""
import csv
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from yolocore.data.augment import letterbox
from yolocore.data.labels import img2label_path, imread, list_image_files, parse_label_file
from yolocore.evaluation.boxes import xywhn2xyxy, xyxy2xywhn
from yolocore.evaluation.metrics import match_predictions
from yolocore.plots import raster
from yolocore.plots.detection import draw_detections

# (key, panel title, colour group): maps of one group share a colour scale within a level's row, so teacher and
# student are compared on the same scale; masks keep their own because their values mean something else.
MAP_PANELS = (
    ("teacher_feature", "teacher mean |F|", "feature"),
    ("student_feature", "student mean |F| (after align)", "feature"),
    ("teacher_spatial", "teacher spatial attention", "spatial"),
    ("student_spatial", "student spatial attention", "spatial"),
    ("channel", "channel attention", None),
    ("fg_mask", "foreground mask", "fg_mask"),
    ("bg_mask", "background mask", "bg_mask"),
    ("teacher_fg", "teacher mean |F| x fg mask", "masked"),
    ("student_fg", "student mean |F| x fg mask", "masked"),
)
STUDENT_KEYS = ("student_feature", "student_spatial", "student_channel", "student_fg")
CMAPS = {"fg_mask": "magma", "bg_mask": "magma"}
DRAW_SIZE = 512
IMAGE_SIDE = 560  # pixels: the image panels are about as tall as two rows of map panels
WRITERS = 2


# ---------------------------------------------------------------- inputs


def check_sources(source, nc):
    """Image files of --source, after checking that every one decodes and every label file parses.

    Raises FileNotFoundError/ValueError naming the file; returns (files, warnings) where warnings are the label
    lines that were skipped."""
    files, messages = list_image_files([source])
    if messages:
        raise ValueError("; ".join(messages))
    if not files:
        raise FileNotFoundError(f"--source {source}: no images found")
    warnings = []
    for f in files:
        if imread(f) is None:
            raise ValueError(f"{f}: cannot read this image (missing, empty or not a decodable image)")
        warnings += parse_label_file(img2label_path(f), nc)[1]
    return files, warnings


def letterboxed_sample(path, imgsz, stride, nc):
    """(BGR letterboxed image, labels (n, 5) [cls, cx, cy, w, h] normalised to that letterboxed image)."""
    im0 = imread(path)
    if im0 is None:
        raise ValueError(f"{path}: cannot read this image")
    h0, w0 = im0.shape[:2]
    im, (r, _), (dw, dh) = letterbox(im0, imgsz, auto=False, stride=stride)
    labels = parse_label_file(img2label_path(path), nc)[0].astype(np.float64)
    xyxy = xywhn2xyxy(labels[:, 1:], w0 * r, h0 * r, padw=dw, padh=dh)
    labels[:, 1:] = xyxy2xywhn(xyxy, w=im.shape[1], h=im.shape[0])
    return im, labels


@contextmanager
def staged_dir(out):
    """A temporary folder beside out that becomes out only if the block finishes, so an error leaves nothing
    half-written. An existing out (--exist-ok) keeps its other files; same-named ones are replaced."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if not out.exists():
            os.replace(tmp, out)
            return
        for entry in tmp.iterdir():
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- figures


def image_panels(im_bgr, labels, det, teacher_det, names, student="student"):
    """Three (file stem, title, RGB image) panels: ground-truth boxes, the teacher's and the student's detections
    (n, 6) [x1, y1, x2, y2, conf, cls], all in the pixels of the letterboxed image that the maps were computed on.
    student names the student in its panel's title ("FGD student", "plain student")."""
    # Drawn on a copy at least DRAW_SIZE wide, as box labels are sized for images of a few hundred pixels.
    scale = max(1.0, DRAW_SIZE / max(im_bgr.shape[:2]))
    im = cv2.resize(im_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else im_bgr
    h, w = im.shape[:2]
    gt = draw_detections(im, xywhn2xyxy(labels[:, 1:], w, h), labels[:, 0].astype(int), names=names)
    gt_title = f"ground truth ({len(labels)} boxes)" if len(labels) else "ground truth (no label file or no boxes)"
    panels = [("image_gt", gt_title, gt)]
    for stem, who, d in (("image_teacher_det", "teacher", teacher_det), ("image_det", student, det)):
        panels.append((stem, f"{who} detections ({len(d)})",
                       draw_detections(im, d[:, :4] * scale, d[:, 5].astype(int), d[:, 4], names)))
    return [(stem, title, bgr[..., ::-1]) for stem, title, bgr in panels]


DETECTIONS_CSV = "detections.csv"
DETECTION_COLUMNS = ("name", "image", "boxes", "detections", "correct", "teacher_detections", "teacher_correct")


def detection_row(name, path, labels, det, teacher_det, shape):
    """One row of detections.csv: the image's ground-truth boxes, the student's and the teacher's detections, and
    how many of these are correct (on a box of their class at IoU 0.5, matched as val.py matches them), to find the
    images where a student detects. labels (n, 5) normalised to the letterboxed image of shape, detections (m, 6)
    in its pixels."""
    h, w = shape[:2]
    gt = np.concatenate([labels[:, :1], xywhn2xyxy(labels[:, 1:], w, h)], 1)
    correct, teacher_correct = (int(match_predictions(d, gt, [0.5])[:, 0].sum()) for d in (det, teacher_det))
    return {"name": name, "image": str(path), "boxes": len(labels), "detections": len(det), "correct": correct,
            "teacher_detections": len(teacher_det), "teacher_correct": teacher_correct}


ATTENTION_CSV = "attention.csv"
ATTENTION_COLUMNS = ("name", "layer", "spatial_corr", "spatial_gap", "channel_corr", "channel_gap")
FLAT_SPREAD = 1e-3  # attention maps average 1: cells within 0.1 % of that are rounding, not a pattern


def _correlation(a, b):
    """Pearson's r, or nan where either map is flat: an untrained model's attention can be uniform up to float32
    rounding, and the correlation of rounding errors says nothing (and differs between the trees)."""
    if min(a.std(), b.std()) < FLAT_SPREAD:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def attention_rows(name, levels, layers):
    """Rows of attention.csv: for each layer where the student's maps are drawn, how closely its attention follows
    the teacher's. *_corr is the Pearson correlation of the two spatial (H x W) or channel (C) attention maps, *_gap
    their mean absolute difference: FGD's attention loss sum |A_s - A_t| per cell or per channel (both maps average
    to 1, so a gap of 0.1 is a tenth of the mean weight); the correlation is nan where a map is flat."""
    rows = []
    for layer, maps in zip(layers, levels):
        if "student_spatial" not in maps:
            continue
        row = {"name": name, "layer": layer}
        for kind in ("spatial", "channel"):
            t, st = (np.asarray(maps[f"{side}_{kind}"], np.float64).ravel() for side in ("teacher", "student"))
            row[f"{kind}_corr"] = f"{_correlation(t, st):.6g}"
            row[f"{kind}_gap"] = f"{np.abs(st - t).mean():.6g}"
        rows.append(row)
    return rows


def write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def _limits(maps, group):
    """The largest value over the row's maps of a colour group (every map drawn here is non-negative), 1 if none."""
    return max(float(np.max(maps[k])) for k, _, g in MAP_PANELS if g == group and k in maps) or 1.0


def _panel(maps, key, caption, group):
    """(body, caption) of one map panel, or None where the maps leave it out."""
    if key == "channel":
        teacher = maps["teacher_channel"]
        return raster.channel_body(teacher, maps.get("student_channel")), f"{caption} ({len(teacher)} ch)"
    if key not in maps:
        return None
    if key == "bg_mask" and not maps[key].any():
        caption = f"{caption} (all zero: no background cell)"
    return raster.map_body(maps[key], _limits(maps, group), CMAPS.get(group, "viridis")), caption


def _check_levels(levels, layers, notes):
    if len(levels) != len(layers) or len(notes) != len(layers):
        raise ValueError(f"{len(levels)} map sets and {len(notes)} notes for {len(layers)} layers")
    for layer, maps, note in zip(layers, levels, notes):
        missing = [k for k in STUDENT_KEYS if k not in maps]
        if missing and not note:
            raise ValueError(f"layer {layer}: student maps {missing} are missing and no note says why")


def _write_png(path, rgb):
    Path(path).write_bytes(raster.encode_png(rgb))
    return path


def write_fgd_figure(out_dir, name, images, levels, layers, notes=None, title=""):
    """Write out_dir/NAME.png (one labelled grid: the images on top, then a row per level) and the single panels
    as out_dir/NAME/*.png. images are (file stem, title, RGB) panels, levels[i] the dict of maps of layers[i] and
    notes[i] why its student maps are missing.

    Every panel is drawn once: the grid shows it under its caption, its own file under "layer L: caption".
    Returns the written paths."""
    notes = list(notes) if notes is not None else [""] * len(layers)
    _check_levels(levels, layers, notes)
    out_dir = Path(out_dir)
    panel_dir = out_dir / name
    top, rows, singles = [], [], []
    for stem, caption, im in images:
        panel = raster.titled(raster.image_body(im, IMAGE_SIDE), caption, 9)
        top.append(panel)
        singles.append((panel_dir / f"{stem}.png", panel))
    for layer, maps, note in zip(layers, levels, notes):
        panels = []
        for key, caption, group in MAP_PANELS:
            drawn = _panel(maps, key, caption, group)
            if drawn is None:
                panels.append(raster.titled(raster.note_body(note), caption))
                continue
            body, caption = drawn
            panels.append(raster.titled(body, caption))
            singles.append((panel_dir / f"layer{layer}_{key}.png", raster.titled(body, f"layer {layer}: {caption}")))
        h, w = maps["fg_mask"].shape
        rows.append((f"layer {layer}\n{h}x{w} grid", panels))
    panel_dir.mkdir(parents=True, exist_ok=True)
    figure = (out_dir / f"{name}.png", raster.grid_figure(title, top, rows))
    # PNG encoding is most of what is left, and zlib lets go of the GIL while it compresses
    with ThreadPoolExecutor(WRITERS) as pool:
        return list(pool.map(lambda item: _write_png(*item), [figure, *singles]))
