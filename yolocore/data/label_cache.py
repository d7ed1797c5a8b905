"""The label cache: a dataset's scan (image files, labels, shapes, warnings) kept beside its labels, so the next
run does not decode every image again to check it. Any change of an image or label file makes a new scan."""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

VERSION = 3  # bump whenever parsing changes: 3 reads label files that start with a byte-order mark


def file_stamp(f):
    """[path, size, mtime]: what a cache key holds of a file; a file gone since the scan stamps as -1 (building
    or using the cache then reports it)."""
    try:
        st = os.stat(f)
        return [str(f), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(f), -1, -1]


def label_cache_key(im_files, label_files, nc):
    """Changes whenever an image or label file is added, removed, resized or touched, or nc changes."""
    entries = [[file_stamp(f), file_stamp(lb)] for f, lb in zip(im_files, label_files)]
    return hashlib.sha256(json.dumps([VERSION, nc, entries]).encode()).hexdigest()


def load_label_cache(path, key):
    """The cached scan if path holds one for exactly this key, else None (any damage means a rescan)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            counts = z["label_counts"]
            labels = np.split(z["labels"], np.cumsum(counts)[:-1]) if len(counts) else []
            return {"im_files": z["im_files"].tolist(), "label_files": z["label_files"].tolist(),
                    "labels": [lb.copy() for lb in labels], "shapes": z["shapes"].astype(np.int64),
                    "messages": z["messages"].tolist(), "stats": json.loads(str(z["stats"]))}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def save_label_cache(path, key, scan):
    """Write atomically (temp file + os.replace); returns an error message instead of raising."""
    arrays = {"key": np.array(key), "im_files": np.array(scan["im_files"], dtype=str),
              "label_files": np.array(scan["label_files"], dtype=str),
              "label_counts": np.array([len(lb) for lb in scan["labels"]], dtype=np.int64),
              "labels": np.concatenate([np.zeros((0, 5), np.float32), *scan["labels"]]),
              "shapes": scan["shapes"], "messages": np.array(scan["messages"], dtype=str),
              "stats": np.array(json.dumps(scan["stats"]))}
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return None
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        return f"label cache {path} not written ({e})"
