"""A dataset's images and their YOLO labels: finding the images, reading and checking each label line, and the scan
that checks every image with its labels (numpy + OpenCV only). Every unusable line or image is reported with its
file (and line), and skipped."""
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

IMG_FORMATS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp")  # the ones OpenCV decodes everywhere
COORD_TOL = 1e-5  # labels are usually written with 6 decimals; a box edge sums two rounded values
MIN_IMAGE_SIDE = 10  # as YOLOv5: anything smaller is a broken export, not a picture
STAT_KEYS = ("images", "backgrounds", "corrupt", "bad_lines", "duplicates", "missing_images", "unlabelled")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the sources or file at fault."""


def img2label_path(im_file):
    """.../images/x/a.jpg -> .../labels/x/a.txt (only the last 'images' folder is swapped)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return os.path.splitext(sb.join(str(im_file).rsplit(sa, 1)))[0] + ".txt"


def _is_image(path):
    return path.suffix.lower()[1:] in IMG_FORMATS


def list_image_files(sources):
    """Image paths from folders (recursive, sorted), .txt lists and single images; returns (files, messages)."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    files, messages = [], []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            files += sorted(os.path.abspath(f) for f in p.rglob("*") if _is_image(f) and f.is_file())
        elif p.is_file() and p.suffix.lower() == ".txt":
            try:
                lines = p.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is not a path
            except (OSError, UnicodeDecodeError) as e:
                raise DatasetError(f"{p}: cannot read image list ({e})") from e
            for lineno, line in enumerate(lines, 1):
                entry = line.strip()
                if not entry:
                    continue
                f = Path(entry) if Path(entry).is_absolute() else p.parent / entry
                if not f.is_file():
                    messages.append(f"{p}:{lineno}: missing image {entry}")
                elif not _is_image(f):
                    messages.append(f"{p}:{lineno}: not an image file ({', '.join(IMG_FORMATS)}): {entry}")
                else:
                    files.append(os.path.abspath(f))
        elif p.is_file() and _is_image(p):
            files.append(os.path.abspath(p))
        elif p.exists():
            raise DatasetError(f"{p}: not an image folder, a .txt list of images or an image file")
        else:
            raise FileNotFoundError(f"{p}: no such image folder, list or file")
    return files, messages


def labels_without_images(sources, im_files):
    """Label files under the labels folder of an image folder of sources that belong to none of im_files: an image
    lost or renamed, whose objects silently no longer train. Image lists are not searched: a list often names one
    split of a folder that others share."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    expected = {img2label_path(f) for f in im_files}
    found = []
    for source in sources:
        if not Path(source).is_dir():
            continue
        folder = os.path.abspath(source)
        labels_dir = os.path.dirname(img2label_path(os.path.join(folder, "x.jpg")))
        if labels_dir != folder:  # labels beside the images: any .txt there may be something else
            found += sorted(str(f) for f in Path(labels_dir).rglob("*.txt") if str(f) not in expected)
    return found


def unique_names(files):
    """Output names from file stems; a stem seen before gets _2, _3, ... (folders are searched recursively, so
    a/001.jpg and b/001.jpg must not overwrite each other's outputs)."""
    names, seen = [], set()
    for f in files:
        stem, k = Path(f).stem, 2
        name = stem
        while name in seen:
            name, k = f"{stem}_{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


def _parse_label_line(fields, nc):
    """(cls, cx, cy, w, h) of a split label line and None, or None and the reason it is unusable. A polygon line
    'class x1 y1 x2 y2 x3 y3 ...' (YOLOv5's segment labels) gives the box around its points, as YOLOv5 does."""
    polygon = len(fields) >= 7 and len(fields) % 2 == 1
    if len(fields) != 5 and not polygon:
        return None, (f"expected 5 values 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...'), "
                      f"got {len(fields)}")
    values = []
    for text in fields:
        try:
            values.append(float(text))
        except ValueError:
            return None, f"non-numeric value {text!r}"
    if not all(math.isfinite(v) for v in values):
        return None, "non-finite value (nan or inf)"
    if polygon:
        xs, ys = values[1::2], values[2::2]
        if any(v < -COORD_TOL or v > 1 + COORD_TOL for v in values[1:]):
            return None, "polygon points outside [0, 1] (labels must be normalised)"
        values = [values[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    cls, cx, cy, w, h = values
    box = " ".join(f"{v:g}" for v in values[1:])
    if cls != int(cls) or cls < 0 or (nc is not None and cls >= nc):
        allowed = f"an integer in [0, {nc})" if nc is not None else "a non-negative integer"
        return None, f"class {fields[0]} is not {allowed}"
    if any(v < -COORD_TOL or v > 1 + COORD_TOL for v in (cx, cy, w, h)):
        return None, f"coordinates {box} outside [0, 1] (labels must be normalised)"
    if w <= 0 or h <= 0:
        return None, f"box width and height must be > 0, got w={w:g} h={h:g}"
    if cx - w / 2 < -COORD_TOL or cy - h / 2 < -COORD_TOL or cx + w / 2 > 1 + COORD_TOL or cy + h / 2 > 1 + COORD_TOL:
        return None, f"box {box} extends outside the image"
    return tuple(values), None


def parse_label_file(path, nc=None):
    """Labels float32 (n,5) [cls,cx,cy,w,h] and 'FILE:LINE: reason' messages for each skipped line.

    A missing or empty file is a background image. An unreadable one raises DatasetError."""
    path = Path(path)
    if not path.exists():
        return np.zeros((0, 5), np.float32), []
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Windows editors may start the file with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read label file ({e})") from e
    rows, messages, first_seen = [], [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        row, reason = _parse_label_line(fields, nc)
        if reason:
            messages.append(f"{path}:{lineno}: {reason} (line skipped)")
            continue
        if row in first_seen:
            messages.append(f"{path}:{lineno}: duplicate of line {first_seen[row]} (line skipped)")
            continue
        first_seen[row] = lineno
        rows.append(row)
    labels = np.array(rows, dtype=np.float32).reshape(-1, 5)
    labels[:, 1:] = labels[:, 1:].clip(0, 1)  # absorbs the tolerated rounding
    return labels, messages


def _decode(data):
    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:
        return None


def imread(path):
    """BGR uint8 image or None; decoding from bytes copes with any path encoding."""
    try:
        return _decode(np.fromfile(path, dtype=np.uint8))
    except OSError:
        return None


def _image_problem(im_file):
    """Why an image cannot be used, or its (w, h)."""
    try:
        data = np.fromfile(im_file, dtype=np.uint8)
    except OSError as e:
        return f"cannot read image ({e.strerror})"
    # OpenCV decodes a truncated JPEG with a grey lower part, which would contradict its labels
    raw = data.tobytes()
    if raw.startswith(b"\xff\xd8") and not raw.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    im = _decode(data)
    if im is None:
        return "corrupt or unreadable image"
    h, w = im.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        return f"image is {w}x{h} px, under {MIN_IMAGE_SIDE} px"
    return w, h


def _scan_one(im_file, label_file, nc):
    """Validate one image and its label file: (shape (w,h) or None, labels, messages, per-item counts)."""
    counts = dict.fromkeys(STAT_KEYS, 0)
    shape = _image_problem(im_file)
    if isinstance(shape, str):
        counts["corrupt"] = 1
        return None, None, [f"{im_file}: {shape} (image skipped)"], counts
    try:
        labels, messages = parse_label_file(label_file, nc)
    except DatasetError as e:
        counts["corrupt"] = 1
        return None, None, [f"{e} (image {im_file} skipped)"], counts
    counts["duplicates"] = sum("duplicate of line" in m for m in messages)
    counts["bad_lines"] = len(messages) - counts["duplicates"]
    if not len(labels) and counts["bad_lines"]:  # its objects would otherwise be learnt as background
        counts["unlabelled"] = 1
        return None, None, messages + [f"{label_file}: no valid label line (image {im_file} skipped)"], counts
    counts["images"] = 1
    counts["backgrounds"] = int(not len(labels))
    return shape, labels, messages, counts


def scan_images(im_files, nc):
    """Scan every image in parallel (OpenCV releases the GIL); the order of results follows im_files."""
    label_files = [img2label_path(f) for f in im_files]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(_scan_one, im_files, label_files, [nc] * len(im_files)))
    scan = {"im_files": [], "label_files": [], "labels": [], "shapes": [], "messages": [],
            "stats": dict.fromkeys(STAT_KEYS, 0)}
    for im_file, label_file, (shape, labels, messages, counts) in zip(im_files, label_files, results):
        scan["messages"] += messages
        for k, v in counts.items():
            scan["stats"][k] += v
        if shape is not None:
            scan["im_files"].append(im_file)
            scan["label_files"].append(label_file)
            scan["labels"].append(labels)
            scan["shapes"].append(shape)
    scan["shapes"] = np.array(scan["shapes"], dtype=np.int64).reshape(-1, 2)
    return scan
