"""YOLO-format detection dataset shared by the PyTorch and Jittor trees (numpy + OpenCV only).

Item i of epoch e draws its augmentation randomness only from np.random.default_rng([seed, e, i]), so a
batch is the same whatever the number of loader workers or the framework that consumes it."""
import math
from pathlib import Path

import cv2
import numpy as np

from yolocore.data.augment import augment_hsv, check_imgsz, letterbox, mixup, random_perspective
from yolocore.data.image_cache import image_cache
from yolocore.data.label_cache import label_cache_key, load_label_cache, save_label_cache
from yolocore.data.labels import DatasetError, img2label_path, imread, list_image_files, scan_images
from yolocore.data.rect import rect_batches
from yolocore.evaluation.boxes import xywhn2xyxy, xyxy2xywhn

AUGMENT_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
                "flipud", "fliplr", "mosaic", "mixup")
MAX_PRINTED_MESSAGES = 20


def epoch_order(n, seed, epoch, shuffle=True, rank=0, world_size=1):
    """The order in which to visit n items in an epoch: a seeded permutation, the same in every framework.
    With world_size processes, process rank takes every world_size-th item (the order padded from its start to
    a multiple of world_size): the k-th batches of all processes hold the single-process k-th global batch."""
    order = np.arange(n, dtype=np.int64) if not shuffle else np.random.default_rng([seed, epoch]).permutation(n)
    order = np.resize(order.astype(np.int64), -(-n // world_size) * world_size)
    return order[rank::world_size]


class YoloDataset:
    """Images with YOLO txt labels; items are (img uint8 (3,H,W) RGB, labels (n,6), path, shapes). cache keeps the
    scan of the labels beside them; cache_images the decoded, resized images too (yolocore/data/image_cache.py). rect
    (validation) orders the images by aspect ratio and letterboxes each batch of batch_size consecutive items to a
    rectangle of its own (yolocore/data/rect.py), as YOLOv5 validates; a square of imgsz otherwise."""

    def __init__(self, sources, imgsz=640, augment=False, hyp=None, nc=None, stride=32, seed=0, cache=True,
                 cache_images=False, rect=False, batch_size=16, prefix=""):
        check_imgsz(imgsz, stride)
        if rect and augment:
            raise ValueError("rect batches are for validation: they need augment=False")
        if augment:
            missing = [k for k in AUGMENT_KEYS if k not in (hyp or {})]
            if missing:
                raise ValueError(f"augment=True needs hyp keys: {', '.join(missing)}")
        self.imgsz, self.augment, self.hyp, self.seed = imgsz, augment, hyp, seed
        candidates, list_messages = list_image_files(sources)
        if not candidates:
            raise DatasetError(f"{prefix}no images found in {sources}" + "".join(f"\n  {m}" for m in list_messages))
        cache_path = self._cache_path(candidates[0])
        key = label_cache_key(candidates, [img2label_path(f) for f in candidates], nc) if cache else None
        scan = load_label_cache(cache_path, key) if cache else None
        origin = f" (from {cache_path})" if scan else ""
        cache_message = None
        if scan is None:
            scan = scan_images(candidates, nc)
            if cache:
                cache_message = save_label_cache(cache_path, key, scan)
        self.im_files, self.label_files = scan["im_files"], scan["label_files"]
        self.labels, self.shapes = scan["labels"], scan["shapes"]
        self.messages = list_messages + scan["messages"]
        self.stats = dict(scan["stats"], missing_images=len(list_messages))
        summary = self._summary()
        self._report(prefix, summary + origin, self.messages + ([cache_message] if cache_message else []))
        if not self.im_files:
            raise DatasetError(f"{prefix}no usable images in {sources}: {summary}")
        if augment and not any(len(lb) for lb in self.labels):
            # A model trained on backgrounds alone learns nothing; most often the labels are not where expected.
            raise DatasetError(f"{prefix}no boxes in {sources}: every image is a background. Labels are read from "
                               f"the 'labels' folder beside 'images', e.g. {self.label_files[0]}")
        self.batch_index = self.batch_shapes = None
        if rect:
            order, self.batch_index, self.batch_shapes = rect_batches(self.shapes, batch_size, imgsz, stride)
            self.im_files, self.label_files, self.labels = ([x[i] for i in order] for x in
                                                            (self.im_files, self.label_files, self.labels))
            self.shapes = self.shapes[order]
        self.images = None
        if cache_images:
            resizing = "linear" if augment else "area"  # read_image's interpolation when it shrinks
            base = cache_path.with_name(f"{cache_path.stem}.images-{imgsz}-{resizing}")
            self.images = image_cache(base, self.im_files, [imgsz, resizing], self.read_image, prefix)

    @staticmethod
    def _cache_path(first_im_file):
        labels_dir = Path(img2label_path(first_im_file)).parent
        return labels_dir.parent / f"{labels_dir.name}.cache"

    def _summary(self):
        s = self.stats
        return (f"{s['images']} images, {s['backgrounds']} backgrounds, {s['corrupt']} corrupt, "
                f"{s['bad_lines']} bad label lines, {s['duplicates']} duplicates, "
                f"{s['missing_images']} missing images, {s['unlabelled']} without a valid label")

    @staticmethod
    def _report(prefix, summary, messages):
        print(f"{prefix}{summary}")
        for m in messages[:MAX_PRINTED_MESSAGES]:
            print(f"{prefix}WARNING {m}")
        if len(messages) > MAX_PRINTED_MESSAGES:
            print(f"{prefix}... and {len(messages) - MAX_PRINTED_MESSAGES} more warnings (dataset.messages)")

    def __len__(self):
        return len(self.im_files)

    def largest_image(self):
        """(h, w): no image an item holds is taller or wider (a square of imgsz, or the rect batches' largest)."""
        if self.batch_shapes is None:
            return self.imgsz, self.imgsz
        return tuple(int(x) for x in self.batch_shapes.max(0))

    def read_image(self, i):
        """BGR image i from its file, resized so its long side is imgsz."""
        im = imread(self.im_files[i])
        if im is None:
            raise FileNotFoundError(f"{self.im_files[i]}: cannot read image (changed since the dataset scan?)")
        h0, w0 = im.shape[:2]
        r = self.imgsz / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            size = min(self.imgsz, math.ceil(w0 * r)), min(self.imgsz, math.ceil(h0 * r))  # ceil may overshoot by eps
            im = cv2.resize(im, size, interpolation=interp)
        return im

    def load_image(self, i):
        """BGR image i resized so its long side is imgsz, from the image cache when there is one:
        (im, (h0, w0), (h, w))."""
        im = self.images[i] if self.images is not None else self.read_image(i)
        w0, h0 = (int(v) for v in self.shapes[i])
        return im, (h0, w0), im.shape[:2]

    def load_mosaic(self, index, rng):
        """Item index plus 3 random items tiled around a random centre of a 2*imgsz canvas, then warped to imgsz."""
        s, hyp = self.imgsz, self.hyp
        yc, xc = (int(rng.uniform(s // 2, 2 * s - s // 2)) for _ in range(2))
        indices = [index, *rng.integers(0, len(self), 3).tolist()]
        indices = [indices[j] for j in rng.permutation(4)]
        img4 = np.full((2 * s, 2 * s, 3), 114, dtype=np.uint8)
        labels4 = []
        for k, idx in enumerate(indices):
            img, _, (h, w) = self.load_image(idx)
            if k == 0:  # top left
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
            elif k == 1:  # top right
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
            elif k == 2:  # bottom left
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
            else:  # bottom right
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
            img4[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
            labels = self.labels[idx].copy()
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, x1a - x1b, y1a - y1b)
            labels4.append(labels)
        labels4 = np.concatenate(labels4, 0)
        np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])  # the cropped tile parts hold no pixels
        return random_perspective(img4, labels4, rng, degrees=hyp["degrees"], translate=hyp["translate"],
                                  scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                                  border=(-s // 2, -s // 2))

    def __getitem__(self, key):
        """key: an index (the item of epoch 0) or (epoch, index), the item as that epoch augments it."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        index = range(len(self))[index]  # negative indices and IndexError as for a list
        hyp, shapes = self.hyp, None
        rng = np.random.default_rng([self.seed, int(epoch), index])
        if self.augment and rng.random() < hyp["mosaic"]:
            img, labels = self.load_mosaic(index, rng)
            if rng.random() < hyp["mixup"]:
                img, labels = mixup(img, labels, *self.load_mosaic(int(rng.integers(len(self))), rng), rng)
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            shape = self.imgsz if self.batch_shapes is None else self.batch_shapes[self.batch_index[index]].tolist()
            img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
            shapes = (h0, w0), ((h / h0 * ratio[1], w / w0 * ratio[0]), pad)  # lets val map boxes back
            labels = self.labels[index].copy()
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
            if self.augment:
                img, labels = random_perspective(img, labels, rng, degrees=hyp["degrees"],
                                                 translate=hyp["translate"], scale=hyp["scale"],
                                                 shear=hyp["shear"], perspective=hyp["perspective"])
        if len(labels):
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            augment_hsv(img, rng, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            if rng.random() < hyp["flipud"]:
                img = np.flipud(img)
                labels[:, 2] = 1 - labels[:, 2]
            if rng.random() < hyp["fliplr"]:
                img = np.fliplr(img)
                labels[:, 1] = 1 - labels[:, 1]
        labels_out = np.zeros((len(labels), 6), dtype=np.float32)
        labels_out[:, 1:] = labels
        img = np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])  # HWC BGR -> CHW RGB
        return img, labels_out, self.im_files[index], shapes

    @staticmethod
    def collate_fn(batch):
        """(imgs (B,3,H,W) uint8, targets (N,6) with column 0 = image index in the batch, files, shapes)."""
        imgs, labels, files, shapes = zip(*batch)
        targets = []
        for i, lb in enumerate(labels):
            lb = lb.copy()
            lb[:, 0] = i
            targets.append(lb)
        return np.stack(imgs, 0), np.concatenate(targets, 0).astype(np.float32), tuple(files), tuple(shapes)
