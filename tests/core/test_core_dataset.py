"""yolocore.data.dataset and yolocore.data.labels: listing, label parsing, bad input, the label and image caches,
determinism and batching."""
import os
import pickle

import cv2
import numpy as np
import pytest

from yolocore.data.dataset import YoloDataset, epoch_order
from yolocore.data.labels import DatasetError, img2label_path, list_image_files, parse_label_file
from yolocore.evaluation.boxes import scale_boxes, xywhn2xyxy

HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 5.0, "translate": 0.1, "scale": 0.5, "shear": 2.0,
       "perspective": 0.0, "flipud": 0.5, "fliplr": 0.5, "mosaic": 0.5, "mixup": 0.3}


def write_image(path, w=96, h=64, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), im)
    return path


def write_labels(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_dataset(root, n=4, w=96, h=64):
    for i in range(n):
        write_image(root / "images" / "train" / f"im{i}.jpg", w, h, seed=i)
        write_labels(root / "labels" / "train" / f"im{i}.txt", f"{i % 3} 0.5 0.5 0.4 0.3\n1 0.2 0.3 0.1 0.2\n")
    return root / "images" / "train"


def test_img2label_path_swaps_the_last_images_folder():
    f = os.path.join("data", "images", "x", "images", "a.b.jpg")
    assert img2label_path(f) == os.path.join("data", "images", "x", "labels", "a.b.txt")
    assert img2label_path(os.path.join("flat", "a.png")) == os.path.join("flat", "a.txt")


def test_list_image_files_folders_lists_and_missing_entries(tmp_path):
    a = write_image(tmp_path / "imgs" / "sub" / "b.png")
    b = write_image(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    files, messages = list_image_files(tmp_path / "imgs")
    assert files == sorted([str(a), str(b)]) and messages == []

    lst = tmp_path / "list.txt"
    lst.write_text("imgs/a.jpg\n\nimgs/gone.jpg\nimgs/notes.txt\n")
    files, messages = list_image_files([str(lst), str(a)])
    assert files == [str(b), str(a)]
    assert messages[0] == f"{lst}:3: missing image imgs/gone.jpg"
    assert messages[1].startswith(f"{lst}:4: not an image file")

    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_image_files(tmp_path / "nowhere")
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(DatasetError, match="x.csv"):
        list_image_files(tmp_path / "x.csv")


EXPECTED = "expected 5 values 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...'), got"
BAD_LINES = [
    ("0 0.5 0.5 0.2", f"{EXPECTED} 4"),
    ("0 0.5 0.5 0.2 0.2 0.9", f"{EXPECTED} 6"),
    ("0 0.1 0.1 0.5 0.1 0.5 0.6 0.1", f"{EXPECTED} 8"),  # a polygon with an odd number of coordinates
    ("0 0.1 0.1 1.5 0.1 0.5 0.6", "polygon points outside [0, 1] (labels must be normalised)"),
    ("7 0.1 0.1 0.5 0.1 0.5 0.6", "class 7 is not an integer in [0, 5)"),
    ("0 0.1 0.1 0.5 0.1 0.9 0.1", "box width and height must be > 0, got w=0.8 h=0"),
    ("0 0.5 abc 0.2 0.2", "non-numeric value 'abc'"),
    ("0 nan 0.5 0.2 0.2", "non-finite value (nan or inf)"),
    ("5 0.5 0.5 0.2 0.2", "class 5 is not an integer in [0, 5)"),
    ("-1 0.5 0.5 0.2 0.2", "class -1 is not an integer in [0, 5)"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not an integer in [0, 5)"),
    ("0 1.2 0.5 0.2 0.2", "coordinates 1.2 0.5 0.2 0.2 outside [0, 1] (labels must be normalised)"),
    ("0 0.5 0.5 0.2 -0.1", "coordinates 0.5 0.5 0.2 -0.1 outside [0, 1] (labels must be normalised)"),
    ("0 0.5 0.5 0 0.2", "box width and height must be > 0, got w=0 h=0.2"),
    ("0 0.95 0.5 0.2 0.2", "box 0.95 0.5 0.2 0.2 extends outside the image"),
    ("0 0.3 0.4 0.2 0.4", "duplicate of line 2"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_parse_label_file_skips_each_bad_line_with_file_and_line(tmp_path, line, reason):
    path = write_labels(tmp_path / "a.txt", f"\n0 0.3 0.4 0.2 0.4\n{line}\n4.0 0.5 0.5 1.0000001 0.2\n")
    labels, messages = parse_label_file(path, nc=5)
    assert messages == [f"{path}:3: {reason} (line skipped)"]
    assert labels.dtype == np.float32
    np.testing.assert_allclose(labels, [[0, 0.3, 0.4, 0.2, 0.4], [4, 0.5, 0.5, 1.0, 0.2]], atol=1e-7)


def test_polygon_lines_give_the_box_around_their_points(tmp_path):
    # YOLOv5's segment labels: class, then x y of each point; a file may mix them with box lines
    path = write_labels(tmp_path / "seg.txt", "2 0.1 0.2 0.5 0.1 0.4 0.7 0.2 0.6\n1 0.5 0.5 0.2 0.2\n")
    labels, messages = parse_label_file(path, nc=5)
    assert messages == []
    np.testing.assert_allclose(labels, [[2, 0.3, 0.4, 0.4, 0.6], [1, 0.5, 0.5, 0.2, 0.2]], atol=1e-7)


def test_parse_label_file_backgrounds_and_unbounded_classes(tmp_path):
    for labels, messages in (parse_label_file(tmp_path / "missing.txt", 3),
                             parse_label_file(write_labels(tmp_path / "empty.txt", "\n  \n"), 3)):
        assert labels.shape == (0, 5) and messages == []
    labels, messages = parse_label_file(write_labels(tmp_path / "big.txt", "70 0.5 0.5 0.2 0.2\n"), None)
    assert messages == [] and labels[0, 0] == 70


def test_label_files_and_image_lists_may_start_with_a_byte_order_mark(tmp_path):
    labels, messages = parse_label_file(write_labels(tmp_path / "bom.txt", "\ufeff1 0.5 0.5 0.2 0.2\n"), nc=3)
    assert messages == [] and labels.tolist() == [[1, 0.5, 0.5, pytest.approx(0.2), pytest.approx(0.2)]]
    image = write_image(tmp_path / "a.jpg")
    (tmp_path / "list.txt").write_text("\ufeffa.jpg\n", encoding="utf-8")
    assert list_image_files(tmp_path / "list.txt") == ([str(image)], [])


def test_parse_label_file_unreadable_raises_naming_it(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DatasetError, match="bin.txt: cannot read label file"):
        parse_label_file(path, 3)


def test_bad_input_is_skipped_counted_and_reported(tmp_path, capsys):
    images = make_dataset(tmp_path, n=2)
    write_image(images / "background.jpg")
    write_labels(tmp_path / "labels" / "train" / "background.txt", "")
    write_image(images / "nolabel.png")
    (images / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    write_image(images / "tiny.jpg", w=8, h=8)
    jpeg = write_image(images / "cut.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    write_image(images / "badlines.jpg")
    write_labels(tmp_path / "labels" / "train" / "badlines.txt",
                 "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n0 x 0.5 0.2 0.2\n")
    write_image(images / "allbad.jpg")
    write_labels(tmp_path / "labels" / "train" / "allbad.txt", "0 0.5 0.5\n")
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"{f}\n" for f in list_image_files(images)[0]) + "images/train/lost.jpg\n")

    ds = YoloDataset(lst, imgsz=64, nc=3, cache=False, prefix="train: ")
    assert ds.stats == {"images": 5, "backgrounds": 2, "corrupt": 3, "bad_lines": 3, "duplicates": 1,
                        "missing_images": 1, "unlabelled": 1, "labels_without_images": 0}
    assert len(ds) == len(ds.labels) == len(ds.shapes) == 5
    assert not any(name in f for f in ds.im_files for name in ("corrupt", "tiny", "cut", "allbad"))
    bad = str(tmp_path / "labels" / "train" / "badlines.txt")
    assert f"{bad}:2: duplicate of line 1 (line skipped)" in ds.messages
    assert f"{bad}:3: class 9 is not an integer in [0, 3) (line skipped)" in ds.messages
    assert f"{images / 'corrupt.jpg'}: corrupt or unreadable image (image skipped)" in ds.messages
    assert f"{images / 'cut.jpg'}: truncated JPEG (no end-of-image marker) (image skipped)" in ds.messages
    assert f"{lst}:10: missing image images/train/lost.jpg" in ds.messages
    assert any(m.startswith(f"{tmp_path / 'labels' / 'train' / 'allbad.txt'}:1: expected 5") for m in ds.messages)
    out = capsys.readouterr().out
    assert ("train: 5 images, 2 backgrounds, 3 corrupt, 3 bad label lines, 1 duplicates, 1 missing images, "
            "1 without a valid label") in out
    assert f"WARNING {images / 'corrupt.jpg'}" in out
    labels = dict(zip(ds.im_files, ds.labels))
    np.testing.assert_allclose(labels[str(images / "badlines.jpg")], [[0, 0.5, 0.5, 0.2, 0.2]])


def test_long_message_lists_are_truncated_when_printed(tmp_path, capsys):
    images = make_dataset(tmp_path, n=1)
    write_labels(tmp_path / "labels" / "train" / "im0.txt", "0 0.5 0.5 0.2 0.2\n" + "x\n" * 30)
    ds = YoloDataset(images, imgsz=64, nc=3, cache=False)
    assert len(ds.messages) == 30
    out = capsys.readouterr().out
    assert out.count("WARNING") == 20 and "and 10 more warnings" in out


def test_nothing_usable_raises_naming_the_sources(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\x00" * 50)
    with pytest.raises(DatasetError, match=f"no usable images in .*{tmp_path / 'images'}"):
        YoloDataset(tmp_path / "images", imgsz=64, cache=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found in .*empty"):
        YoloDataset(tmp_path / "empty", imgsz=64)
    with pytest.raises(FileNotFoundError, match="absent"):
        YoloDataset(tmp_path / "absent", imgsz=64)


def test_training_without_a_single_box_is_refused_validation_is_not(tmp_path):
    images = tmp_path / "images" / "train"
    write_image(images / "a.jpg")
    write_image(images / "b.jpg", seed=1)
    write_labels(tmp_path / "misplaced" / "a.txt", "0 0.5 0.5 0.4 0.3\n")
    expected_label = tmp_path / "labels" / "train" / "a.txt"
    with pytest.raises(DatasetError, match=f"no boxes in .*every image is a background.*{expected_label}"):
        YoloDataset(images, imgsz=64, augment=True, hyp=HYP, cache=False)
    assert len(YoloDataset(images, imgsz=64, cache=False)) == 2
    write_labels(expected_label, "0 0.5 0.5 0.4 0.3\n")
    assert sum(map(len, YoloDataset(images, imgsz=64, augment=True, hyp=HYP, cache=False).labels)) == 1


def test_invalid_arguments_are_refused(tmp_path):
    images = make_dataset(tmp_path, n=1)
    with pytest.raises(ValueError, match="multiple of the model stride 32"):
        YoloDataset(images, imgsz=100)
    with pytest.raises(ValueError, match="mosaic, mixup"):
        YoloDataset(images, imgsz=64, augment=True, hyp={k: v for k, v in HYP.items() if k not in ("mosaic", "mixup")})


def scan_state(ds):
    return ds.im_files, ds.label_files, [lb.tolist() for lb in ds.labels], ds.shapes.tolist(), ds.messages, ds.stats


def test_cache_round_trip_and_invalidation(tmp_path, capsys):
    images = make_dataset(tmp_path, n=3)
    write_labels(tmp_path / "labels" / "train" / "im2.txt", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n\n")
    (images / "broken.jpg").write_bytes(b"garbage")
    fresh = YoloDataset(images, imgsz=64, nc=3)
    cache = tmp_path / "labels" / "train.cache"
    assert cache.is_file() and "from" not in capsys.readouterr().out
    with np.load(cache, allow_pickle=False) as z:  # pickle-free
        assert z["im_files"].tolist() == fresh.im_files

    cached = YoloDataset(images, imgsz=64, nc=3)
    assert f"(from {cache})" in capsys.readouterr().out
    assert scan_state(cached) == scan_state(fresh)
    assert all(lb.dtype == np.float32 and lb.shape[1] == 5 for lb in cached.labels)
    assert cached.shapes.dtype == fresh.shapes.dtype

    assert scan_state(YoloDataset(images, imgsz=64, nc=8)) != scan_state(fresh)  # nc is part of the key
    write_labels(tmp_path / "labels" / "train" / "im0.txt", "2 0.5 0.5 0.6 0.6\n")
    capsys.readouterr()
    changed = YoloDataset(images, imgsz=64, nc=3)
    assert "(from" not in capsys.readouterr().out
    assert changed.labels[0].tolist() == [[2, 0.5, 0.5, pytest.approx(0.6), pytest.approx(0.6)]]


def test_damaged_or_unwritable_cache_falls_back_to_a_scan(tmp_path, capsys):
    images = make_dataset(tmp_path, n=2)
    cache = tmp_path / "labels" / "train.cache"
    cache.write_bytes(b"not a cache")
    expected = scan_state(YoloDataset(images, imgsz=64, nc=3, cache=False))
    assert scan_state(YoloDataset(images, imgsz=64, nc=3)) == expected
    assert cache.stat().st_size > len(b"not a cache")  # replaced by a valid cache

    cache.unlink()
    cache.mkdir()  # stands in for a read-only folder: the cache cannot be written there
    assert scan_state(YoloDataset(images, imgsz=64, nc=3)) == expected
    assert f"label cache {cache} not written" in capsys.readouterr().out
    assert [p.name for p in cache.parent.iterdir() if p.suffix == ".tmp"] == []


def items_equal(a, b):
    return all((x == y).all() for x, y in zip(a[:2], b[:2])) and a[2:] == b[2:]


@pytest.mark.parametrize("augment", [True, False])
def test_cached_images_give_the_same_items_and_workers_get_the_file_not_the_pixels(tmp_path, capsys, augment):
    images = make_dataset(tmp_path, n=4, w=200, h=120)  # shrunk to imgsz 64: each split's own interpolation
    YoloDataset(images, imgsz=64, nc=3, cache_images=True)  # a validation cache first, in the same folder
    capsys.readouterr()
    plain = YoloDataset(images, imgsz=64, nc=3, augment=augment, hyp=HYP)
    cached = YoloDataset(images, imgsz=64, nc=3, augment=augment, hyp=HYP, cache_images=True)
    assert f"4 images cached {'into' if augment else 'from'}" in capsys.readouterr().out
    for epoch in (0, 1):
        assert all(items_equal(plain[epoch, i], cached[epoch, i]) for i in range(4))
    in_worker = pickle.loads(pickle.dumps(cached))
    assert in_worker.images._pixels is None and items_equal(in_worker[2], cached[2])
    assert len(pickle.dumps(cached)) < 64 * 64 * 3  # less than one image's pixels


def test_image_cache_is_reused_until_an_image_changes(tmp_path, capsys, monkeypatch):
    images = make_dataset(tmp_path, n=3)
    YoloDataset(images, imgsz=64, nc=3, cache_images=True)
    bins = sorted(p.name for p in (tmp_path / "labels").glob("*.bin"))
    assert bins == ["train.images-64-area.bin"]
    with monkeypatch.context() as m:
        m.setattr(YoloDataset, "read_image", lambda *_: pytest.fail("decoded an image the cache holds"))
        reused = YoloDataset(images, imgsz=64, nc=3, cache_images=True)
        assert "3 images cached from" in capsys.readouterr().out
        reused[0]
    write_image(images / "im1.jpg", seed=7)
    changed = YoloDataset(images, imgsz=64, nc=3, cache_images=True)
    assert "3 images cached into" in capsys.readouterr().out
    assert items_equal(changed[1], YoloDataset(images, imgsz=64, nc=3)[1])


def test_an_unwritable_image_cache_falls_back_to_the_files(tmp_path, capsys):
    images = make_dataset(tmp_path, n=2)
    (tmp_path / "labels" / "train.images-64-area.bin").mkdir()  # stands in for a read-only folder
    ds = YoloDataset(images, imgsz=64, nc=3, cache_images=True)
    assert ds.images is None and "image cache" in capsys.readouterr().out
    assert items_equal(ds[0], YoloDataset(images, imgsz=64, nc=3)[0])


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(50, seed=3, epoch=1)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=2))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=1))
    assert np.array_equal(epoch_order(5, 3, 1, shuffle=False), np.arange(5))


def test_augmented_items_depend_only_on_seed_epoch_and_index(tmp_path):
    images = make_dataset(tmp_path, n=6)
    a = YoloDataset(images, imgsz=64, augment=True, hyp=HYP, nc=3, seed=1)
    b = YoloDataset(images, imgsz=64, augment=True, hyp=HYP, nc=3, seed=1)
    first = [a[2, i] for i in range(6)]
    for i in reversed(range(6)):  # another access order, as another worker layout would produce
        img, labels, f, _ = b[2, i]
        assert np.array_equal(img, first[i][0]) and np.array_equal(labels, first[i][1]) and f == first[i][2]
    assert any(not np.array_equal(b[3, i][0], first[i][0]) for i in range(6))
    assert all(np.array_equal(b[i][0], b[0, i][0]) for i in range(6))  # an index alone is epoch 0's item
    c = YoloDataset(images, imgsz=64, augment=True, hyp=HYP, nc=3, seed=2)
    assert any(not np.array_equal(c[2, i][0], first[i][0]) for i in range(6))


def test_items_and_collate_format(tmp_path):
    ds = YoloDataset(make_dataset(tmp_path, n=3), imgsz=64, augment=True, hyp=HYP, nc=3)
    img, labels, f, _ = ds[-1]
    assert img.dtype == np.uint8 and img.shape == (3, 64, 64) and img.flags["C_CONTIGUOUS"]
    assert labels.dtype == np.float32 and labels.shape[1] == 6 and f == ds.im_files[2]
    items = [ds[0], ds[1], ds[2]]
    imgs, targets, files, shapes = YoloDataset.collate_fn(items)
    assert imgs.shape == (3, 3, 64, 64) and imgs.dtype == np.uint8 and np.array_equal(imgs[2], items[2][0])
    assert targets.dtype == np.float32 and targets.shape == (sum(len(it[1]) for it in items), 6)
    for i, item in enumerate(items):
        assert np.array_equal(targets[targets[:, 0] == i, 1:], item[1][:, 1:])
        assert (item[1][:, 0] == 0).all()  # collate must not mutate the items
    assert files == tuple(ds.im_files) and shapes == tuple(it[3] for it in items)
    with pytest.raises(IndexError):
        ds[3]


def test_validation_letterbox_keeps_boxes_on_their_pixels(tmp_path):
    """A red rectangle on a grey non-square image: after resize+letterbox the returned box must
    match the red pixels, and shapes must map it back onto the original box."""
    h0, w0 = 150, 300
    im = np.full((h0, w0, 3), 90, np.uint8)
    x1, y1, x2, y2 = 60, 30, 180, 110
    im[y1:y2, x1:x2] = (0, 0, 255)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), im)
    write_labels(tmp_path / "labels" / "a.txt",
                 f"0 {(x1 + x2) / 2 / w0} {(y1 + y2) / 2 / h0} {(x2 - x1) / w0} {(y2 - y1) / h0}\n")
    ds = YoloDataset(tmp_path / "images", imgsz=128, nc=1)
    img, labels, _, shapes = ds[0]
    assert shapes[0] == (h0, w0)
    bgr = img.transpose(1, 2, 0)[..., ::-1]
    assert (bgr[:16] == 114).all() and (bgr[-16:] == 114).all()  # letterbox padding above and below
    red = (bgr[..., 2] > 150) & (bgr[..., 1] < 80)
    box = xywhn2xyxy(labels[:, 2:], 128, 128)[0]
    ys, xs = np.nonzero(red)
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    back = scale_boxes((128, 128), box[None].astype(np.float64), (h0, w0), ratio_pad=shapes[1])
    np.testing.assert_allclose(back[0], [x1, y1, x2, y2], atol=0.5)
