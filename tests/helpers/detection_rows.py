"""Detections as rows to compare between two runs (two trees, a checkpoint and its export): val.py's
predictions.json and detect.py's label files, each in a fixed order."""
import json

import numpy as np


def sorted_rows(rows):
    """Rows in a fixed order: the order of detections of equal confidence is the sort's, not the model's."""
    return rows[np.lexsort(np.round(rows, 3).T[::-1])]


def coco_rows(folder):
    """predictions.json as {image id: rows [class, x, y, w, h, score] in a fixed order}."""
    rows = {}
    for d in json.loads((folder / "predictions.json").read_text()):
        rows.setdefault(d["image_id"], []).append([d["category_id"], *d["bbox"], d["score"]])
    return {k: sorted_rows(np.array(v)) for k, v in rows.items()}


def label_rows(folder):
    """detect.py's labels/*.txt (run with --save-txt --save-conf) as {file name: rows in a fixed order}."""
    return {f.name: sorted_rows(np.loadtxt(f, ndmin=2)) for f in (folder / "labels").glob("*.txt")}


def assert_same_rows(expected, actual, atol):
    """The same images, more than 20 detections in all, each row within atol."""
    assert sum(len(rows) for rows in expected.values()) > 20 and sorted(actual) == sorted(expected)
    for key, rows in expected.items():
        np.testing.assert_allclose(actual[key], rows, atol=atol, err_msg=str(key))
