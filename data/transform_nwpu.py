"""Convert NWPU VHR-10, as its authors distribute it, into the YOLO layout that train.py --data reads.

    python data/transform_nwpu.py "../shared/NWPU VHR-10 dataset" --out datasets/NWPU

SRC holds 'positive image set/NNN.jpg', 'ground truth/NNN.txt' (lines '(x1,y1),(x2,y2),c', pixel corners,
c in 1..10) and optionally 'negative image set/' (images without objects). DIR receives images/{train,val},
labels/{train,val} ('class cx cy w h' normalised, class 0..9), NWPU.yaml and a marker file that lets a
rerun replace its own previous output. Everything is written to a temporary folder beside DIR first and
moved into place only when complete; a run that was killed leaves that folder, which the next run removes.
"""
import argparse
import fcntl
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import yaml

from yolocore.data.labels import IMG_FORMATS

CLASS_NAMES = ["airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
               "ground track field", "harbor", "bridge", "vehicle"]
POSITIVE_DIR, NEGATIVE_DIR, GROUND_TRUTH_DIR = "positive image set", "negative image set", "ground truth"
NEGATIVE_PREFIX = "neg_"  # both image sets number their files from 001
CLIP_TOLERANCE_PX = 2  # annotators' off-by-one corners are clipped; anything further out is an error
MARKER = ".transform_nwpu.json"
TOOL = "transform_nwpu"
_NUM = r"\s*([-+]?\d+(?:\.\d+)?)\s*"
GT_LINE = re.compile(rf"\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)\s*,\s*(\S+)")


class ConversionError(Exception):
    """Something that stops the whole conversion (missing folder, unusable DIR, impossible split)."""


@dataclass(frozen=True)
class Problem:
    """One rejected ground-truth line or image; `kind` groups them in the summary."""
    path: Path
    line: int  # 0 for a whole file
    kind: str
    detail: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.detail}" if self.line else f"{self.path}: {self.detail}"


@dataclass
class Sample:
    name: str  # output file stem
    image: Path
    width: int = 0
    height: int = 0
    boxes: list = field(default_factory=list)  # (class 0..9, x1, y1, x2, y2) in pixels, inside the image


def read_ground_truth(path):
    """((line, class 0..9, x1, y1, x2, y2) per box, problems); blank lines and CR/LF variants are fine."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    boxes, problems, first_seen = [], [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = GT_LINE.fullmatch(line)
        if not m:
            problems.append(Problem(path, lineno, "malformed line", f"not '(x1,y1),(x2,y2),class': {line!r}"))
            continue
        x1, y1, x2, y2 = (float(v) for v in m.groups()[:4])
        cls = m.group(5)
        if not cls.isdecimal() or not 1 <= int(cls) <= len(CLASS_NAMES):
            problems.append(Problem(path, lineno, "class outside 1..10", f"class {cls!r} is not one of 1..10"))
        elif x2 <= x1 or y2 <= y1:
            problems.append(Problem(path, lineno, "empty box", f"needs x2>x1 and y2>y1: {line!r}"))
        elif (key := (int(cls), x1, y1, x2, y2)) in first_seen:
            problems.append(Problem(path, lineno, "duplicate box", f"duplicate of line {first_seen[key]}"))
        else:
            first_seen[key] = lineno
            boxes.append((lineno, int(cls) - 1, x1, y1, x2, y2))
    return boxes, problems


def fit_boxes(boxes, path, width, height):
    """Clip boxes that overshoot the image by at most CLIP_TOLERANCE_PX; (kept boxes, problems, clipped count)."""
    kept, problems, clipped = [], [], 0
    tol = CLIP_TOLERANCE_PX
    for lineno, cls, x1, y1, x2, y2 in boxes:
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            problems.append(Problem(path, lineno, "box outside image",
                                    f"box ({x1:g},{y1:g}),({x2:g},{y2:g}) lies outside the {width}x{height} image"))
            continue
        fitted = (max(x1, 0), max(y1, 0), min(x2, width), min(y2, height))
        if fitted[2] <= fitted[0] or fitted[3] <= fitted[1]:
            problems.append(Problem(path, lineno, "box outside image", f"box empty once clipped to {width}x{height}"))
            continue
        clipped += fitted != (x1, y1, x2, y2)
        kept.append((cls, *fitted))
    return kept, problems, clipped


def image_size(path):
    """(width, height) after decoding the whole file, as the dataset reader does, or None if unreadable."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
        im = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error):
        im = None
    return None if im is None else (im.shape[1], im.shape[0])


def list_images(folder):
    """{stem: path}; two images sharing a stem are both rejected since neither can be told apart."""
    by_stem, problems = {}, []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower().lstrip(".") in IMG_FORMATS:
            if p.stem in by_stem:
                problems.append(Problem(p, 0, "ambiguous image", f"same name as {by_stem[p.stem].name}; both unused"))
            by_stem.setdefault(p.stem, p)
    clashing = {pr.path.stem for pr in problems}
    return {s: p for s, p in by_stem.items() if s not in clashing}, problems


def collect(src, negatives=True):
    """(positive samples, negative samples, problems, clipped count) read from the distributed folders."""
    missing = [d for d in (POSITIVE_DIR, GROUND_TRUTH_DIR) if not (src / d).is_dir()]
    if missing:
        raise ConversionError(f"{src}: missing folder(s) {', '.join(repr(d) for d in missing)}")
    images, problems = list_images(src / POSITIVE_DIR)
    gt_files = {p.stem: p for p in sorted((src / GROUND_TRUTH_DIR).glob("*.txt"))}
    ambiguous = {pr.path.stem for pr in problems}
    for stem in sorted(gt_files.keys() - images.keys() - ambiguous):
        problems.append(Problem(gt_files[stem], 0, "ground truth without image", f"no {POSITIVE_DIR}/{stem}.*"))
    for stem in sorted(images.keys() - gt_files.keys()):
        problems.append(Problem(images[stem], 0, "image without ground truth", f"no {GROUND_TRUTH_DIR}/{stem}.txt"))
    positives = [Sample(stem, images[stem]) for stem in sorted(images.keys() & gt_files.keys())]
    negative_dir = src / NEGATIVE_DIR
    negs, neg_problems = list_images(negative_dir) if negatives and negative_dir.is_dir() else ({}, [])
    problems += neg_problems
    negative_samples = [Sample(NEGATIVE_PREFIX + stem, path) for stem, path in sorted(negs.items())]

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV releases the GIL
        sizes = list(pool.map(image_size, [s.image for s in positives + negative_samples]))
    kept_pos, kept_neg, clipped = [], [], 0
    for sample, size in zip(positives + negative_samples, sizes):
        if size is None:
            problems.append(Problem(sample.image, 0, "unreadable image", "cannot be decoded as an image"))
            continue
        sample.width, sample.height = size
        if sample.name.startswith(NEGATIVE_PREFIX):
            kept_neg.append(sample)
            continue
        gt_file = gt_files[sample.name]
        raw, line_problems = read_ground_truth(gt_file)
        sample.boxes, fit_problems, n_clipped = fit_boxes(raw, gt_file, *size)
        problems += line_problems + fit_problems
        clipped += n_clipped
        if line_problems + fit_problems and not sample.boxes:  # its objects would be learnt as background
            problems.append(Problem(gt_file, 0, "no valid box left", f"no usable line, {sample.image.name} dropped"))
            continue
        kept_pos.append(sample)
    return kept_pos, kept_neg, problems, clipped


def class_counts(samples):
    """(n, nc) int array: boxes of each class in each sample."""
    counts = np.zeros((len(samples), len(CLASS_NAMES)), dtype=np.int64)
    for i, s in enumerate(samples):
        for cls, *_ in s.boxes:
            counts[i, cls] += 1
    return counts


def random_split(n, n_val, rng):
    """Bool mask of n_val val items drawn by a seeded permutation."""
    val = np.zeros(n, dtype=bool)
    val[rng.permutation(n)[:n_val]] = True
    return val


def stratified_split(counts, n_val, rng):
    """Start from random_split and keep making the single train/val swap that best brings every class's share
    of val boxes and of val images towards n_val/n, until no swap helps.

    Only elementwise arithmetic and fixed-order sums on small integers are involved, and ties go to the lowest
    index, so the result depends on nothing but counts and the rng stream."""
    features = np.concatenate([counts, counts > 0], axis=1).astype(np.float64)
    totals = features.sum(0)
    target = totals * (n_val / len(counts))
    scale = np.maximum(totals, 1)
    val = random_split(len(counts), n_val, rng)
    while True:
        current = features[val].sum(0)
        vi, ti = np.flatnonzero(val), np.flatnonzero(~val)
        swapped = current - features[vi][:, None, :] + features[ti][None, :, :]  # (val out, train in, feature)
        cost = (((swapped - target) / scale) ** 2).sum(-1)
        a, b = np.unravel_index(np.argmin(cost), cost.shape)
        if cost[a, b] >= (((current - target) / scale) ** 2).sum() - 1e-12:
            return val
        val[vi[a]], val[ti[b]] = False, True


def val_share_deviation(counts, val):
    """Largest |share of a class's boxes that fall in val - share of images in val| over present classes."""
    totals = counts.sum(0)
    present = totals > 0
    return float(np.abs(counts[val].sum(0)[present] / totals[present] - val.mean()).max())


def val_size(n, ratio):
    """n * ratio rounded half up (Python's round() would send halves to even)."""
    return int(np.floor(n * ratio + 0.5))


def check_out_dir(out, src, force):
    """Refuse to replace a folder that is not this tool's output (unless force) or that holds SRC or the cwd."""
    for precious, what in ((src, "the source dataset"), (Path.cwd().resolve(), "the current folder")):
        if out == precious or out in precious.parents:
            raise ConversionError(f"--out {out} would delete {what}")
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()) or force:
        return
    try:
        ours = json.loads((out / MARKER).read_text(encoding="utf-8")).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ConversionError(f"--out {out} is not empty and is not an earlier output of this tool (use --force to "
                              f"replace its contents)")


def place_image(src, dst, mode):
    """Copy, or hard link with a symlink fallback (another filesystem); returns how it was placed."""
    if mode == "copy":
        shutil.copy2(src, dst)
        return "copied"
    try:
        os.link(src, dst)
        return "hard-linked"
    except OSError:
        os.symlink(os.path.abspath(src), dst)
        return "symlinked"


def label_lines(sample):
    w, h = sample.width, sample.height
    return "".join(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
                   for cls, x1, y1, x2, y2 in sample.boxes)


def write_dataset(root, splits, mode, header, marker):
    """Fill root with images/, labels/, NWPU.yaml and the marker; returns a Counter of how images were placed."""
    placed = Counter()
    for split, samples in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for s in samples:
            placed[place_image(s.image, root / "images" / split / (s.name + s.image.suffix.lower()), mode)] += 1
            (root / "labels" / split / f"{s.name}.txt").write_text(label_lines(s), encoding="utf-8")
    data = {"path": ".", "train": "images/train", "val": "images/val", "nc": len(CLASS_NAMES), "names": CLASS_NAMES}
    with open(root / "NWPU.yaml", "w", encoding="utf-8") as f:
        f.write(header)
        yaml.safe_dump(data, f, sort_keys=False)
    (root / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return placed


def remove_leftovers(out):
    """Remove the temporary folders beside out that a killed conversion left (kill -9, a power cut: no clean-up
    ran), saying so. A temporary folder is locked (flock) while its conversion runs: one still locked belongs to
    a conversion running now and stays."""
    for leftover in sorted(out.parent.glob(f".{glob.escape(out.name)}.tmp-*")):
        fd = os.open(leftover, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            shutil.rmtree(leftover)
            print(f"removed {leftover}, the temporary folder of an interrupted conversion")
        finally:
            os.close(fd)
    if out.exists():  # a swap (publish) that was interrupted once the new output was in place
        for old in sorted(out.parent.glob(f".{glob.escape(out.name)}.old-*")):
            shutil.rmtree(old, ignore_errors=True)
            print(f"removed {old}, the previous output that an interrupted conversion replaced")


def locked_temporary_folder(out):
    """(a new temporary folder beside out, the descriptor of its lock): locked until that descriptor is closed or
    this process ends, so remove_leftovers of another conversion leaves it alone."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    fd = os.open(tmp, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would outlive the rename into DIR
    return tmp, fd


def publish(tmp, out):
    """Swap the finished tmp folder in for out; the old out is deleted only once the new one is in place."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def summary(splits, problems, clipped, placed):
    lines = [f"{'split':<8}{'images':>8}{'backgrounds':>13}{'boxes':>8}"]
    counts = {k: class_counts(v) for k, v in splits.items()}
    for k, c in counts.items():
        lines.append(f"{k:<8}{len(c):>8}{int((c.sum(1) == 0).sum()):>13}{int(c.sum()):>8}")
    lines.append(f"{'class':<20}{'train images':>13}{'train boxes':>13}{'val images':>12}{'val boxes':>11}"
                 f"{'val share':>11}")
    tr, va = counts["train"], counts["val"]
    for i, name in enumerate(CLASS_NAMES):
        total = tr[:, i].sum() + va[:, i].sum()
        share = f"{va[:, i].sum() / total:.1%}" if total else "-"
        lines.append(f"{name:<20}{(tr[:, i] > 0).sum():>13}{tr[:, i].sum():>13}{(va[:, i] > 0).sum():>12}"
                     f"{va[:, i].sum():>11}{share:>11}")
    by_kind = Counter(p.kind for p in problems)
    n_lines = sum(1 for p in problems if p.line)
    lines.append(f"skipped: {n_lines} line(s), {len(problems) - n_lines} file(s)"
                 + "".join(f"; {n} {kind}" for kind, n in sorted(by_kind.items())))
    lines.append(f"clipped: {clipped} box(es) overshooting the image by at most {CLIP_TOLERANCE_PX} px")
    lines.append("images: " + ", ".join(f"{n} {how}" for how, n in sorted(placed.items())))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 done, 1 bad input rejected (nothing written), 2 unusable "
                                       "arguments, folders or DIR.")
    p.add_argument("src", metavar="SRC", type=Path,
                   help="the dataset as distributed: holds 'positive image set' and 'ground truth'")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="output folder DIR (replaced as a whole)")
    p.add_argument("--val-ratio", metavar="R", type=float, default=0.2, help="share of images in val (default 0.2)")
    p.add_argument("--seed", metavar="N", type=int, default=0,
                   help="split seed; the same SRC, ratio and seed give the same split on any machine")
    p.add_argument("--stratify", action=argparse.BooleanOptionalAction, default=True,
                   help="balance every class's share of val boxes and images (default); --no-stratify: plain "
                        "seeded random split")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="hard-link images, or symlink where that fails (default)")
    mode.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copy images")
    p.set_defaults(mode="link")
    p.add_argument("--no-negatives", action="store_true", help="leave out 'negative image set' even if present")
    p.add_argument("--skip-bad", action="store_true", help="convert what is usable despite rejected lines or images")
    p.add_argument("--force", action="store_true", help="replace DIR even if it is not an earlier output of this tool")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    src, out = args.src.resolve(), args.out.resolve()
    try:
        if not src.is_dir():
            raise ConversionError(f"{src}: no such folder")
        check_out_dir(out, src, args.force)
        positives, negatives, problems, clipped = collect(src, negatives=not args.no_negatives)
        for p in problems:
            print(p, file=sys.stderr)
        if problems and not args.skip_bad:
            print(f"{len(problems)} problem(s) in {src}; nothing written (--skip-bad converts the rest)",
                  file=sys.stderr)
            return 1
        if not positives:
            raise ConversionError(f"{src}: no usable positive image")
        rng = np.random.default_rng(args.seed)  # positives first, so adding negatives never moves a positive
        n_val = val_size(len(positives), args.val_ratio)
        if not 0 < n_val < len(positives):
            raise ConversionError(f"--val-ratio {args.val_ratio} leaves a split of the {len(positives)} positive "
                                  f"images empty")
        counts = class_counts(positives)
        val = stratified_split(counts, n_val, rng) if args.stratify else random_split(len(positives), n_val, rng)
        neg_val = random_split(len(negatives), val_size(len(negatives), args.val_ratio), rng)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    in_val = np.concatenate([val, neg_val])
    splits = {k: [s for s, v in zip(positives + negatives, in_val) if v == is_val]
              for k, is_val in (("train", False), ("val", True))}
    settings = {"src": str(src), "val_ratio": args.val_ratio, "seed": args.seed, "stratify": args.stratify,
                "negatives": not args.no_negatives, "mode": args.mode}
    marker = {"tool": TOOL, "settings": settings, "images": {k: len(v) for k, v in splits.items()},
              "boxes": {k: int(class_counts(v).sum()) for k, v in splits.items()},
              "skipped": [str(p) for p in problems]}
    header = (f"# NWPU VHR-10 in YOLO layout, written by data/transform_nwpu.py from {src}\n# "
              f"({'stratified' if args.stratify else 'random'} split, val ratio {args.val_ratio}, seed {args.seed})\n")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
        tmp, lock = locked_temporary_folder(out)
    except OSError as e:
        print(f"error: cannot write beside {out}: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        placed = write_dataset(tmp, splits, args.mode, header, marker)
        publish(tmp, out)
    except BaseException as e:  # Ctrl-C included: no half-written folder may stay behind
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        print(f"error: writing {out} failed, left unchanged: {e}", file=sys.stderr)
        return 2
    finally:
        os.close(lock)
    print(f"NWPU VHR-10 {src} -> {out}")
    print(summary(splits, problems, clipped, placed))
    if args.stratify:
        plain = random_split(len(positives), n_val, np.random.default_rng(args.seed))
        print(f"largest gap between a class's val share of boxes and the val share of images: "
              f"{val_share_deviation(counts, val):.1%} (a plain random split with this seed: "
              f"{val_share_deviation(counts, plain):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
