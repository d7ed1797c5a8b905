"""Framework-neutral half of visualize.py (both trees): input images and labels, and the figures of what FGD
distils. The maps themselves are computed by each tree's KD/fgd.py; this module only receives numpy arrays.

Figures are matplotlib Figure objects rendered through Agg (as yolocore.plots.detection), never pyplot.
"""
import os
import shutil
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from yolocore.data.augment import letterbox
from yolocore.data.labels import img2label_path, imread, list_image_files, parse_label_file
from yolocore.evaluation.boxes import xywhn2xyxy, xyxy2xywhn
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
PANEL_INCHES = 2.3
DRAW_SIZE = 512


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


def image_panels(im_bgr, labels, det, names):
    """Two (file stem, title, RGB image) panels: ground-truth boxes and the student's detections (n, 6)
    [x1, y1, x2, y2, conf, cls], both in the pixels of the letterboxed image that the maps were computed on."""
    # Drawn on a copy at least DRAW_SIZE wide, as box labels are sized for images of a few hundred pixels.
    scale = max(1.0, DRAW_SIZE / max(im_bgr.shape[:2]))
    im = cv2.resize(im_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else im_bgr
    h, w = im.shape[:2]
    gt = draw_detections(im, xywhn2xyxy(labels[:, 1:], w, h), labels[:, 0].astype(int), names=names)
    pred = draw_detections(im, det[:, :4] * scale, det[:, 5].astype(int), det[:, 4], names)
    gt_title = f"ground truth ({len(labels)} boxes)" if len(labels) else "ground truth (no label file or no boxes)"
    return [("image_gt", gt_title, gt[..., ::-1]), ("image_det", f"student detections ({len(det)})", pred[..., ::-1])]


def _limits(maps, group):
    """(0, max) over the row's maps of a colour group: every map drawn here is non-negative."""
    values = [maps[k] for k, _, g in MAP_PANELS if g == group and k in maps]
    return 0.0, max(float(np.max(v)) for v in values) or 1.0


def _draw_map(fig, ax, maps, key, title, group):
    vmin, vmax = _limits(maps, group)
    shown = ax.imshow(maps[key], cmap=CMAPS.get(group, "viridis"), vmin=vmin, vmax=vmax, interpolation="nearest")
    # %.2g ticks: the default offset text (x1e-6 over the bar) runs into the next panel's title
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, format="%.2g").ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_channels(ax, maps, title):
    teacher = maps["teacher_channel"]
    x = np.arange(len(teacher))
    ax.bar(x, teacher, width=1.0, color="tab:blue", alpha=0.6, label="teacher")
    if "student_channel" in maps:
        ax.bar(x, maps["student_channel"], width=1.0, color="tab:orange", alpha=0.6, label="student")
    ax.axhline(1.0, color="k", linewidth=0.6, linestyle="--")  # the mean of a channel attention is 1
    ax.set_title(f"{title} ({len(teacher)} ch)", fontsize=8)
    ax.set_xlabel("channel", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="upper right")


def _draw_panel(fig, ax, maps, key, title, group, note):
    if key == "channel":
        _draw_channels(ax, maps, title)
    elif key in maps:
        all_foreground = key == "bg_mask" and not maps[key].any()
        _draw_map(fig, ax, maps, key, f"{title} (all zero: no background cell)" if all_foreground else title, group)
    else:
        ax.text(0.5, 0.5, f"{title}\nleft out:\n" + textwrap.fill(note, 30), ha="center", va="center", fontsize=7,
                transform=ax.transAxes)
        ax.axis("off")


def _check_levels(levels, layers, notes):
    if len(levels) != len(layers) or len(notes) != len(layers):
        raise ValueError(f"{len(levels)} map sets and {len(notes)} notes for {len(layers)} layers")
    for layer, maps, note in zip(layers, levels, notes):
        missing = [k for k in STUDENT_KEYS if k not in maps]
        if missing and not note:
            raise ValueError(f"layer {layer}: student maps {missing} are missing and no note says why")


def _save(fig, path):
    fig.savefig(path, dpi=150)
    return path


def write_fgd_figure(out_dir, name, images, levels, layers, notes=None, title=""):
    """Write out_dir/NAME.png (one labelled grid: the images on top, then a row per level) and the single panels
    as out_dir/NAME/*.png. images are (file stem, title, RGB) panels, levels[i] the dict of maps of layers[i] and
    notes[i] why its student maps are missing.

    Returns the written paths."""
    notes = list(notes) if notes is not None else [""] * len(layers)
    _check_levels(levels, layers, notes)
    out_dir, cols = Path(out_dir), len(MAP_PANELS)
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * (len(levels) + 2)), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, len(levels)])
    top.suptitle(title, fontsize=10)
    for ax, (_, caption, im) in zip(np.atleast_1d(top.subplots(1, len(images))), images):
        ax.imshow(im)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    grid = np.asarray(bottom.subplots(len(levels), cols, squeeze=False))
    for row, layer, maps, note in zip(grid, layers, levels, notes):
        for ax, (key, caption, group) in zip(row, MAP_PANELS):
            _draw_panel(bottom, ax, maps, key, caption, group, note)
        h, w = maps["fg_mask"].shape
        row[0].set_ylabel(f"layer {layer}\n{h}x{w} grid", fontsize=9)
    written = [_save(fig, out_dir / f"{name}.png")]

    panel_dir = out_dir / name
    panel_dir.mkdir(parents=True, exist_ok=True)
    for stem, caption, im in images:
        single = Figure(figsize=(4, 4))
        ax = single.add_axes((0.02, 0.02, 0.96, 0.9))
        ax.imshow(im)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
        written.append(_save(single, panel_dir / f"{stem}.png"))
    for layer, maps in zip(layers, levels):
        for key, caption, group in MAP_PANELS:
            if key != "channel" and key not in maps:
                continue
            # a fixed layout: constrained layout would take most of the time of the 30-odd single panels
            single = Figure(figsize=(4, 3.4))
            single.subplots_adjust(left=0.12, right=0.86, bottom=0.14, top=0.88)
            _draw_panel(single, single.subplots(), maps, key, f"layer {layer}: {caption}", group, "")
            written.append(_save(single, panel_dir / f"layer{layer}_{key}.png"))
    return written
