"""Training/validation plots and detection drawing, YOLOv5 style, shared by both framework trees.

Figures are built with matplotlib's object API (matplotlib.figure.Figure), which renders through Agg and never
touches pyplot's global figure registry: no GUI backend is ever selected, nothing has to be closed, and plotting
from a background thread (as YOLOv5 does for batch mosaics) cannot race another figure.
"""
import csv
import math
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from yolocore.evaluation.boxes import xywh2xyxy
from yolocore.evaluation.metrics import smooth

_PALETTE_HEX = ('FF3838', 'FF9D97', 'FF701F', 'FFB21D', 'CFD231', '48F90A', '92CC17', '3DDB86', '1A9334', '00D4BB',
                '2C99A8', '00C2FF', '344593', '6473FF', '0018EC', '8438FF', '520085', 'CB38FF', 'FF95C8', 'FF37C7')
_PALETTE = [tuple(int(h[k:k + 2], 16) for k in (0, 2, 4)) for h in _PALETTE_HEX]


def colors(i, bgr=False):
    """Colour of class i as an (r, g, b) tuple of ints, or (b, g, r) for OpenCV images."""
    c = _PALETTE[int(i) % len(_PALETTE)]
    return c[::-1] if bgr else c


def _rgb01(i):
    return [v / 255 for v in colors(i)]


def _save(fig, path, dpi):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _imwrite(path, im):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), im):
        raise OSError(f'could not write image {path}')
    return path


def _box_label(im, box, label, color, lw, txt_color=(255, 255, 255)):
    """Rectangle plus a filled label tag above it (below when there is no room above), as YOLOv5's Annotator."""
    p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
    cv2.rectangle(im, p1, p2, color, thickness=lw, lineType=cv2.LINE_AA)
    if not label:
        return
    tf = max(lw - 1, 1)
    w, h = cv2.getTextSize(label, 0, fontScale=lw / 3, thickness=tf)[0]
    outside = p1[1] - h >= 3
    p2 = p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3
    cv2.rectangle(im, p1, p2, color, -1, cv2.LINE_AA)
    org = (p1[0], p1[1] - 2 if outside else p1[1] + h + 2)
    cv2.putText(im, label, org, 0, lw / 3, txt_color, thickness=tf, lineType=cv2.LINE_AA)


def _name(names, c):
    if names is None or (not isinstance(names, dict) and c >= len(names)):
        return str(c)
    return str(names.get(c, c)) if isinstance(names, dict) else str(names[c])


def draw_detections(im_bgr, boxes_xyxy, classes, confs=None, names=None):
    """Copy of im_bgr with each box drawn in its class colour and labelled 'name conf'."""
    im = np.ascontiguousarray(im_bgr).copy()
    lw = max(round(sum(im.shape) / 2 * 0.003), 2)
    for k, (box, c) in enumerate(zip(np.asarray(boxes_xyxy).reshape(-1, 4), np.asarray(classes).reshape(-1))):
        c = int(c)
        label = _name(names, c) if confs is None else f'{_name(names, c)} {float(confs[k]):.2f}'
        _box_label(im, box, label, colors(c, bgr=True), lw)
    return im


def plot_images(images, targets, paths=None, fname='images.jpg', names=None, max_subplots=16, max_size=1920):
    """Write a grid of up to max_subplots images with their boxes: labels, or predictions when targets has a 7th
    (confidence) column, predictions under 0.25 confidence left out as YOLOv5 does.

    images (B, 3, H, W) RGB uint8 (floats in [0, 1] are scaled), targets (N, 6|7) [img_idx, cls, cx, cy, w, h(, conf)]
    normalised to the image.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        scale01 = 255 if images.size and images.max() <= 1 else 1
        images = (images.astype(np.float32) * scale01).clip(0, 255).astype(np.uint8)
    targets = np.asarray(targets, dtype=np.float64)
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs ** 0.5)
    mosaic = np.full((ns * h, ns * w, 3), 255, dtype=np.uint8)
    for i in range(bs):
        x, y = w * (i // ns), h * (i % ns)
        mosaic[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)

    scale = max_size / ns / max(h, w)
    if scale < 1:
        h, w = math.ceil(scale * h), math.ceil(scale * w)
        mosaic = cv2.resize(mosaic, (w * ns, h * ns))

    fs = int((h + w) * ns * 0.01)
    lw = max(round(fs / 10), 1)
    is_pred = targets.ndim == 2 and targets.shape[1] == 7
    for i in range(bs):
        x, y = w * (i // ns), h * (i % ns)
        cv2.rectangle(mosaic, (x, y), (x + w, y + h), (255, 255, 255), 2)
        if paths is not None:
            cv2.putText(mosaic, Path(paths[i]).name[:40], (x + 5, y + 5 + 10 * lw), 0, lw / 3, (220, 220, 220),
                        thickness=max(lw - 1, 1), lineType=cv2.LINE_AA)
        if not targets.size:
            continue
        ti = targets[targets[:, 0] == i]
        boxes = xywh2xyxy(ti[:, 2:6]) * [w, h, w, h] + [x, y, x, y]
        for j, box in enumerate(boxes):
            c = int(ti[j, 1])
            if is_pred and ti[j, 6] <= 0.25:
                continue
            label = f'{_name(names, c)} {ti[j, 6]:.1f}' if is_pred else _name(names, c)
            _box_label(mosaic, box, label, colors(c), lw)
    return _imwrite(fname, cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))


def plot_labels(labels, names, save_dir):
    """Write save_dir/labels.jpg: instances per class, the first 1000 box outlines centred, and 2-D histograms of box
    centres and of widths vs heights (all normalised)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
    c, b = labels[:, 0].astype(int), labels[:, 1:]
    nc = max(len(names), int(c.max()) + 1 if c.size else 1)
    fig = Figure(figsize=(8, 8), tight_layout=True)
    ax = fig.subplots(2, 2).ravel()

    _, _, bars = ax[0].hist(c, bins=np.linspace(0, nc, nc + 1) - 0.5, rwidth=0.8)
    for i, bar in enumerate(bars):
        bar.set_color(_rgb01(i))
    ax[0].set_ylabel('instances')
    if 0 < len(names) < 30:
        ax[0].set_xticks(range(len(names)))
        ax[0].set_xticklabels([_name(names, i) for i in range(len(names))], rotation=90, fontsize=10)
    else:
        ax[0].set_xlabel('classes')

    canvas = np.full((2000, 2000, 3), 255, dtype=np.uint8)
    centred = np.concatenate((np.full((len(b), 2), 0.5), b[:, 2:]), 1)
    for cls, box in zip(c[:1000], xywh2xyxy(centred[:1000]) * 2000):
        cv2.rectangle(canvas, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), colors(cls), 1)
    ax[1].imshow(canvas)
    ax[1].axis('off')

    for a, (i, j, xl, yl) in zip(ax[2:], ((0, 1, 'x', 'y'), (2, 3, 'width', 'height'))):
        a.hist2d(b[:, i], b[:, j], bins=50, range=((0, 1), (0, 1)), cmap='Blues', cmin=1)
        a.set_xlabel(xl)
        a.set_ylabel(yl)
    for a in ax:
        for s in ('top', 'right', 'left', 'bottom'):
            a.spines[s].set_visible(False)
    return _save(fig, Path(save_dir) / 'labels.jpg', dpi=200)


def _read_results_csv(csv_file):
    """Column names and a float array (rows, cols) from a results.csv; empty cells become NaN."""
    with open(csv_file, newline='') as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f'{csv_file}: empty results file, no header')
    header = [s.strip() for s in rows[0]]
    data = np.full((len(rows) - 1, len(header)), np.nan)
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise ValueError(f'{csv_file}:{r + 2}: {len(row)} values for {len(header)} columns')
        for k, v in enumerate(row):
            try:
                data[r, k] = float(v) if v.strip() else np.nan
            except ValueError:
                raise ValueError(f'{csv_file}:{r + 2}: column {header[k]!r} is not numeric: {v!r}') from None
    return header, data


def plot_results(csv_file):
    """Write results.png beside csv_file: one panel per column except 'epoch', plotted against epoch."""
    csv_file = Path(csv_file)
    header, data = _read_results_csv(csv_file)
    x = data[:, header.index('epoch')] if 'epoch' in header else np.arange(len(data))
    columns = [k for k, name in enumerate(header) if name != 'epoch']
    if not columns:
        raise ValueError(f'{csv_file}: no columns to plot besides epoch')
    ncols = min(5, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(2.4 * ncols, 3 * nrows), tight_layout=True)
    ax = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for a, k in zip(ax, columns):
        a.plot(x, data[:, k], marker='.', linewidth=2, markersize=8)
        a.set_title(header[k], fontsize=10)
    for a in ax[len(columns):]:
        a.axis('off')
    return _save(fig, csv_file.parent / 'results.png', dpi=200)


def plot_pr_curve(px, py, ap, save_file, names=()):
    """Precision-recall curve per class (py (nc, len(px))) and their mean, legend with AP50."""
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    if 0 < len(names) < 21:
        for i, y in enumerate(py):
            ax.plot(px, y, linewidth=1, label=f'{names[i]} {ap[i, 0]:.3f}')
    else:
        ax.plot(px, py.T, linewidth=1, color='grey')
    ax.plot(px, py.mean(0), linewidth=3, color='blue', label=f'all classes {ap[:, 0].mean():.3f} mAP@0.5')
    ax.set(xlabel='Recall', ylabel='Precision', xlim=(0, 1), ylim=(0, 1), title='Precision-Recall Curve')
    ax.legend(bbox_to_anchor=(1.04, 1), loc='upper left')
    return _save(fig, save_file, dpi=250)


def plot_mc_curve(px, py, save_file, names=(), xlabel='Confidence', ylabel='Metric'):
    """Metric-vs-confidence curve per class (py (nc, len(px))); the legend gives the smoothed mean's peak."""
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    if 0 < len(names) < 21:
        for i, y in enumerate(py):
            ax.plot(px, y, linewidth=1, label=f'{names[i]}')
    else:
        ax.plot(px, py.T, linewidth=1, color='grey')
    y = smooth(py.mean(0), 0.05)
    ax.plot(px, y, linewidth=3, color='blue', label=f'all classes {y.max():.2f} at {px[y.argmax()]:.3f}')
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f'{ylabel}-Confidence Curve')
    ax.legend(bbox_to_anchor=(1.04, 1), loc='upper left')
    return _save(fig, save_file, dpi=250)


def plot_confusion_matrix(matrix, names, save_file, normalize=True):
    """Heat map of a (nc+1, nc+1) [predicted, true] matrix, last row/column background."""
    nc = matrix.shape[0] - 1
    array = matrix / ((matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
    array = np.where(array < 0.005, np.nan, array)  # blank rather than a wall of 0.00
    fig = Figure(figsize=(12, 9), tight_layout=True)
    ax = fig.subplots()
    im = ax.imshow(array, cmap='Blues', vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax)
    if nc < 30:  # beyond that the numbers would overlap
        for (i, j), v in np.ndenumerate(array):
            if not np.isnan(v):
                ax.text(j, i, f'{v:.2f}' if normalize else f'{v:.0f}', ha='center', va='center', fontsize=8)
    if len(names) == nc:
        ticks = [_name(names, i) for i in range(nc)] + ['background']
        ax.set_xticks(range(nc + 1))
        ax.set_xticklabels(ticks, rotation=90)
        ax.set_yticks(range(nc + 1))
        ax.set_yticklabels(ticks)
    ax.set(xlabel='True', ylabel='Predicted', title='Confusion Matrix')
    return _save(fig, save_file, dpi=250)
