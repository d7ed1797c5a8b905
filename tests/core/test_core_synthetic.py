"""yolocore.data.synthetic: deterministic, reusable, valid and visually separable."""
import json
import time

import cv2
import numpy as np
import pytest

from yolocore.config import load_data_yaml
from yolocore.data.dataset import YoloDataset
from yolocore.data.labels import parse_label_file
from yolocore.data.synthetic import MARKER, SYNTHETIC_NAMES, make_synthetic_dataset
from yolocore.evaluation.boxes import box_iou, xywhn2xyxy

N_TRAIN, N_VAL, IMGSZ = 24, 6, 256


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "a", N_TRAIN, N_VAL, IMGSZ, seed=0)


def all_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path):
    again = make_synthetic_dataset(tmp_path / "b", N_TRAIN, N_VAL, IMGSZ, seed=0)
    assert all_files(again.parent) == all_files(dataset.parent)
    other = make_synthetic_dataset(tmp_path / "c", 2, 1, IMGSZ, seed=1)
    first = "images/train/syn_00000.jpg"
    assert (other.parent / first).read_bytes() != (dataset.parent / first).read_bytes()


def test_yaml_and_layout(dataset):
    data = load_data_yaml(dataset)
    assert data["nc"] == len(SYNTHETIC_NAMES) == 5 and data["names"] == SYNTHETIC_NAMES
    assert len(list((dataset.parent / "images" / "train").glob("*.jpg"))) == N_TRAIN
    assert len(list((dataset.parent / "labels" / "val").glob("*.txt"))) == N_VAL
    im = cv2.imread(str(dataset.parent / "images" / "val" / "syn_00000.jpg"))
    assert im.shape == (IMGSZ, IMGSZ, 3)


def test_complete_dataset_is_reused_and_changed_parameters_rebuild(tmp_path):
    yaml_path = make_synthetic_dataset(tmp_path, 4, 2, 128, seed=0)
    root = tmp_path
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert make_synthetic_dataset(root, 4, 2, 128, seed=0) == yaml_path
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps

    make_synthetic_dataset(root, 2, 1, 128, seed=0)  # fewer images: stale ones must go
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == ["syn_00000.jpg", "syn_00001.jpg"]
    assert json.loads((root / MARKER).read_text())["n_train"] == 2

    (root / "labels" / "val" / "syn_00000.txt").unlink()  # an incomplete dataset is rebuilt
    make_synthetic_dataset(root, 2, 1, 128, seed=0)
    assert (root / "labels" / "val" / "syn_00000.txt").is_file()

    (root / MARKER).write_text("{not json")
    before = (root / "images" / "train" / "syn_00000.jpg").read_bytes()
    make_synthetic_dataset(root, 2, 1, 128, seed=0)
    assert json.loads((root / MARKER).read_text())["seed"] == 0
    assert (root / "images" / "train" / "syn_00000.jpg").read_bytes() == before


def labelled_boxes(dataset, split="train"):
    """(image, boxes (n,5) [cls,x1,y1,x2,y2] px) for every image of a split, checking each label file parses cleanly."""
    out = []
    for im_file in sorted((dataset.parent / "images" / split).glob("*.jpg")):
        labels, messages = parse_label_file(dataset.parent / "labels" / split / f"{im_file.stem}.txt", nc=5)
        assert messages == []
        out.append((cv2.imread(str(im_file)), np.concatenate([labels[:, :1], xywhn2xyxy(labels[:, 1:], IMGSZ, IMGSZ)],
                                                              1)))
    return out


def test_labels_are_valid_sized_and_do_not_overlap(dataset):
    classes = []
    for _, boxes in labelled_boxes(dataset):
        assert 2 <= len(boxes) <= 8
        sides = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2])
        assert sides.min() >= 12 and sides.max() <= 75
        assert (boxes[:, 1:] >= 0).all() and (boxes[:, 1:] <= IMGSZ).all()
        iou = box_iou(boxes[:, 1:], boxes[:, 1:])
        assert (iou[~np.eye(len(boxes), dtype=bool)] == 0).all()
        classes += boxes[:, 0].astype(int).tolist()
    counts = np.bincount(classes, minlength=5)
    assert (counts >= 5).all(), counts


def test_classes_differ_in_colour(dataset):
    """The mean colour of the central part of each object separates the classes clearly."""
    means = {c: [] for c in range(5)}
    for im, boxes in labelled_boxes(dataset):
        for c, x1, y1, x2, y2 in boxes:
            cx, cy, qw, qh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 6, (y2 - y1) / 6
            patch = im[int(cy - qh):int(cy + qh) + 1, int(cx - qw):int(cx + qw) + 1]
            means[int(c)].append(patch.reshape(-1, 3).mean(0))
    centres = np.array([np.mean(means[c], 0) for c in range(5)])
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    assert dist[~np.eye(5, dtype=bool)].min() > 40, dist.round()


def test_generation_is_fast_and_loads_without_warnings(tmp_path, capsys):
    t = time.perf_counter()
    yaml_path = make_synthetic_dataset(tmp_path, 32, 8, 256, seed=3)
    assert (time.perf_counter() - t) / 40 < 0.03  # 128 + 32 images must take well under 5 s
    data = load_data_yaml(yaml_path)
    ds = YoloDataset(data["train"], imgsz=256, nc=data["nc"])
    assert len(ds) == 32 and ds.messages == [] and ds.stats["backgrounds"] == 0
    assert "32 images, 0 backgrounds, 0 corrupt" in capsys.readouterr().out
