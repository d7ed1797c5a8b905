"""train.py --cache: the images of a split decoded and resized once, into one file that the trainer and its
data-loading workers memory-map.

Decoding a JPEG and resizing it is most of what an augmented item costs (a mosaic reads four images). Workers
receive the dataset by pickle when they start: the cache travels as a file name, and the OS keeps one copy
of the pixels in memory for every process. The file (raw pixels, .bin, and its index, .npz) lives beside the
label cache and is reused for as long as the images, the image size and the resizing stay the same.
"""
import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yolocore.data.label_cache import file_stamp

VERSION = 1


class ImageCache:
    """Image i of a split as a (h, w, 3) uint8 array of its own, read from a file memory-mapped on first use."""

    def __init__(self, pixels_path, offsets, shapes):
        self.pixels_path, self.offsets, self.shapes = str(pixels_path), offsets, shapes
        self._pixels = None

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        if self._pixels is None:
            self._pixels = np.memmap(self.pixels_path, dtype=np.uint8, mode="r")
        return np.array(self._pixels[self.offsets[i]:self.offsets[i + 1]]).reshape(*self.shapes[i], 3)

    def __getstate__(self):
        return {**self.__dict__, "_pixels": None}  # each process maps the file itself


def cache_key(im_files, settings):
    """Changes whenever an image is added, removed, rewritten or touched, or the settings (size, resizing) change."""
    return hashlib.sha256(json.dumps([VERSION, settings, [file_stamp(f) for f in im_files]]).encode()).hexdigest()


def load_image_cache(base, key):
    """The cache at base.bin / base.npz if it holds exactly key, else None (any damage means a rebuild)."""
    try:
        with np.load(f"{base}.npz", allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            offsets, shapes = z["offsets"], z["shapes"]
        if os.path.getsize(f"{base}.bin") != offsets[-1]:
            return None
        return ImageCache(f"{base}.bin", offsets, shapes)
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _replace_atomically(path, write):
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=Path(path).name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_image_cache(base, key, n, read, prefix=""):
    """Images read(0) .. read(n - 1), decoded in parallel (OpenCV releases the GIL), written to base.bin, then the
    index to base.npz: a reader that finds the index finds the pixels it describes."""
    shapes, sizes = [], []

    def write_pixels(f):
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for im in tqdm(pool.map(read, range(n)), total=n, desc=f"{prefix}caching images", leave=False):
                f.write(np.ascontiguousarray(im).tobytes())
                shapes.append(im.shape[:2])
                sizes.append(im.size)

    _replace_atomically(f"{base}.bin", write_pixels)
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    shapes = np.array(shapes, dtype=np.int64).reshape(-1, 2)
    _replace_atomically(f"{base}.npz", lambda f: np.savez(f, key=np.array(key), offsets=offsets, shapes=shapes))
    return ImageCache(f"{base}.bin", offsets, shapes)


def image_cache(base, im_files, settings, read, prefix=""):
    """The split's image cache at base (.bin, .npz), built with read(i) unless a valid one is there; None, with a
    warning, where it cannot be written (the images are then read from their files)."""
    key = cache_key(im_files, settings)
    cache = load_image_cache(base, key)
    origin = "from"
    if cache is None:
        try:
            cache = build_image_cache(base, key, len(im_files), read, prefix)
        except OSError as e:
            print(f"{prefix}WARNING image cache {base}.bin not written ({e}); reading the image files instead")
            return None
        origin = "into"
    print(f"{prefix}{len(im_files)} images cached {origin} {base}.bin ({cache.offsets[-1] / 2 ** 30:.2f} GiB)")
    return cache
