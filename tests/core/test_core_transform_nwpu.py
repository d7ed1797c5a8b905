"""data/transform_nwpu.py against tiny datasets written here in NWPU VHR-10's raw format, messy lines included."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolocore.config import load_data_yaml, load_yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("transform_nwpu", ROOT / "data" / "transform_nwpu.py")
nwpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nwpu)

W, H = 100, 50


def make_raw(root, gt, negatives=0, size=(W, H)):
    """root/'NWPU VHR-10 dataset' with a size[0] x size[1] jpg and ground-truth bytes gt[stem] per stem."""
    src = root / "NWPU VHR-10 dataset"
    for d in (nwpu.POSITIVE_DIR, nwpu.GROUND_TRUTH_DIR):
        (src / d).mkdir(parents=True)
    for i, (stem, text) in enumerate(sorted(gt.items())):
        cv2.imwrite(str(src / nwpu.POSITIVE_DIR / f"{stem}.jpg"), np.full((size[1], size[0], 3), 10 * i, np.uint8))
        (src / nwpu.GROUND_TRUTH_DIR / f"{stem}.txt").write_bytes(text)
    if negatives:
        (src / nwpu.NEGATIVE_DIR).mkdir()
        for i in range(1, negatives + 1):
            cv2.imwrite(str(src / nwpu.NEGATIVE_DIR / f"{i:03d}.jpg"), np.full((40, 60, 3), 200, np.uint8))
    return src


def one_box_each(n, n_classes=3):
    """n images, image i holding one box of class 1 + i % n_classes."""
    return {f"{i:03d}": f"({i % 50},{i % 20}),({i % 50 + 40},{i % 20 + 25}),{1 + i % n_classes}\r\n".encode()
            for i in range(1, n + 1)}


def convert(src, out, *args):
    return nwpu.main([str(src), "--out", str(out), *args])


def split_of(out):
    return {split: sorted(p.stem for p in (out / "labels" / split).iterdir()) for split in ("train", "val")}


def label_text(out, stem):
    (path,) = [p for p in (out / "labels").glob(f"*/{stem}.txt")]
    return path.read_text()


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_exact_labels_from_messy_ground_truth(tmp_path, capsys):
    src = make_raw(tmp_path, {
        "001": b"(10,5),(30,25),1 \r\n\r\n( 0, 0),(100, 50),10  \r\n   \r\n",  # Windows endings, padding, blanks
        "002": b"(45, 20),(55,30),7\r(0,0),(20,10),2",  # old Mac endings, no final newline
    })
    assert convert(src, tmp_path / "out", "--val-ratio", "0.5") == 0
    out = tmp_path / "out"
    assert label_text(out, "001") == "0 0.200000 0.300000 0.200000 0.400000\n9 0.500000 0.500000 1.000000 1.000000\n"
    assert label_text(out, "002") == "6 0.500000 0.500000 0.100000 0.200000\n1 0.100000 0.100000 0.200000 0.200000\n"
    assert split_of(out) in ({"train": ["001"], "val": ["002"]}, {"train": ["002"], "val": ["001"]})
    assert sorted(p.name for p in (out / "images").rglob("*.jpg")) == ["001.jpg", "002.jpg"]
    summary = capsys.readouterr().out
    assert "skipped: 0 line(s), 0 file(s)" in summary
    assert any(line.split()[:1] == ["vehicle"] for line in summary.splitlines())  # one row per class


def test_size_comes_from_the_image_and_a_small_overshoot_is_clipped(tmp_path, capsys):
    src = make_raw(tmp_path, {"001": b"(190,70),(201,82),1\n", "002": b"(-1,0),(30,30),2\n"}, size=(200, 80))
    assert convert(src, tmp_path / "out", "--val-ratio", "0.5") == 0
    assert label_text(tmp_path / "out", "001") == "0 0.975000 0.937500 0.050000 0.125000\n"
    assert label_text(tmp_path / "out", "002") == "1 0.075000 0.187500 0.150000 0.375000\n"
    assert "clipped: 2 box(es)" in capsys.readouterr().out


BAD_LINES = [  # (ground-truth line, words the message must contain)
    (b"(1,2),(3,4)", "not '(x1,y1),(x2,y2),class'"),
    (b"(1,2),(3,4),x", "class 'x'"),
    (b"(1,2),(30,40),0", "class '0'"),
    (b"(1,2),(30,40),11", "class '11'"),
    (b"(30,5),(30,25),1", "x2>x1"),
    (b"(10,25),(30,5),1", "y2>y1"),
    (b"(10,5),(130,25),1", "outside the 100x50 image"),
    (b"(-20,5),(30,25),1", "outside the 100x50 image"),
    (b"(100,5),(102,25),1", "empty once clipped to 100x50"),
    (b"(1,2),(30,40),\xc2\xb2", "class '\u00b2'"),  # a digit to str.isdigit(), not to int()
    (b"(10,5),(30,25),2", "duplicate of line 1"),
]


@pytest.mark.parametrize("line,reason", BAD_LINES)
def test_bad_line_is_reported_with_file_and_line_and_stops_the_run(tmp_path, capsys, line, reason):
    src = make_raw(tmp_path, {"001": b"(10,5),(30,25),2\r\n" + line + b" \r\n", "002": b"(1,1),(20,20),3\r\n"})
    out = tmp_path / "out"
    assert convert(src, out, "--val-ratio", "0.5") == 1
    err = capsys.readouterr().err
    assert f"{src / nwpu.GROUND_TRUTH_DIR / '001.txt'}:2: " in err and reason in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no temp folder left

    assert convert(src, out, "--val-ratio", "0.5", "--skip-bad") == 0
    assert label_text(out, "001") == "1 0.200000 0.300000 0.200000 0.400000\n"  # the good line survives
    assert "skipped: 1 line(s), 0 file(s)" in capsys.readouterr().out


def test_bad_files_are_reported_and_skipped_with_skip_bad(tmp_path, capsys):
    src = make_raw(tmp_path, {f"{i:03d}": b"(1,1),(20,20),3\n" for i in range(1, 7)})
    cv2.imwrite(str(src / nwpu.POSITIVE_DIR / "006.png"), np.zeros((H, W, 3), np.uint8))  # which is 006.txt's?
    (src / nwpu.GROUND_TRUTH_DIR / "001.txt").unlink()  # image without ground truth
    (src / nwpu.GROUND_TRUTH_DIR / "009.txt").write_bytes(b"(1,1),(20,20),3\n")  # ground truth without image
    (src / nwpu.POSITIVE_DIR / "002.jpg").write_bytes(b"not a jpeg")  # unreadable image
    (src / nwpu.GROUND_TRUTH_DIR / "003.txt").write_bytes(b"(1,1),(20,20),99\n")  # nothing usable left
    out = tmp_path / "out"
    assert convert(src, out, "--val-ratio", "0.5") == 1
    err = capsys.readouterr().err
    gt, im = src / nwpu.GROUND_TRUTH_DIR, src / nwpu.POSITIVE_DIR
    for expected in (f"{im / '001.jpg'}: no ground truth/001.txt", f"{gt / '009.txt'}: no positive image set/009.*",
                     f"{im / '002.jpg'}: cannot be decoded", f"{gt / '003.txt'}:1: class '99'",
                     f"{gt / '003.txt'}: no usable line, 003.jpg dropped", f"{im / '006.png'}: same name as 006.jpg"):
        assert expected in err
    assert "006.txt" not in err  # its image exists, twice
    assert not out.exists()

    assert convert(src, out, "--val-ratio", "0.5", "--skip-bad") == 0
    assert sorted(sum(split_of(out).values(), [])) == ["004", "005"]
    assert "skipped: 1 line(s), 5 file(s)" in capsys.readouterr().out


def test_missing_folder_is_an_error(tmp_path, capsys):
    src = make_raw(tmp_path, one_box_each(4))
    (src / nwpu.GROUND_TRUTH_DIR).rename(src / "gt")
    assert convert(src, tmp_path / "out") == 2
    assert "missing folder(s) 'ground truth'" in capsys.readouterr().err
    assert convert(tmp_path / "nowhere", tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()


def test_split_is_seeded_with_the_requested_ratio(tmp_path):
    src = make_raw(tmp_path, one_box_each(20))
    splits = {}
    for name, args in {"a": [], "b": [], "seed1": ["--seed", "1"], "quarter": ["--val-ratio", "0.25"],
                       "random": ["--no-stratify"]}.items():
        assert convert(src, tmp_path / name, *args) == 0
        splits[name] = split_of(tmp_path / name)
    assert splits["a"] == splits["b"]
    assert splits["a"] != splits["seed1"]
    assert [len(splits["a"]["train"]), len(splits["a"]["val"])] == [16, 4]
    assert [len(splits["quarter"]["train"]), len(splits["quarter"]["val"])] == [15, 5]
    for s in splits.values():
        assert sorted(s["train"] + s["val"]) == [f"{i:03d}" for i in range(1, 21)]


@pytest.mark.parametrize("ratio", ["0", "0.02", "0.98", "1"])
def test_a_ratio_that_empties_a_split_is_refused(tmp_path, capsys, ratio):
    src = make_raw(tmp_path, one_box_each(20))
    assert convert(src, tmp_path / "out", "--val-ratio", ratio) == 2
    assert "leaves a split of the 20 positive images empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_split_is_pinned_so_other_machines_get_the_same_one(tmp_path):
    # A change here means datasets built elsewhere, or with another numpy, no longer match: bump with care
    src = make_raw(tmp_path, one_box_each(15, n_classes=4))
    assert convert(src, tmp_path / "strat") == 0
    assert convert(src, tmp_path / "plain", "--no-stratify") == 0
    assert split_of(tmp_path / "strat")["val"] == ["001", "002", "003"]  # classes 2, 3, 4 once each
    assert split_of(tmp_path / "plain")["val"] == ["003", "004", "012"]  # classes 4, 1, 1


def test_stratified_split_keeps_classes_in_proportion_better_than_random():
    rng = np.random.default_rng(123)
    counts = rng.poisson([4.0, 1.0, 0.3, 0.1, 2.0], size=(150, 5)) * (rng.random((150, 5)) < 0.4)
    counts[counts.sum(1) == 0, 0] = 1  # every image holds something, as in the positive set
    for seed in range(5):
        strat = nwpu.stratified_split(counts, 30, np.random.default_rng(seed))
        plain = nwpu.random_split(len(counts), 30, np.random.default_rng(seed))
        assert strat.sum() == 30
        assert (counts[strat].sum(0) > 0).all()  # every class reaches val
        assert nwpu.val_share_deviation(counts, strat) <= nwpu.val_share_deviation(counts, plain)
        assert nwpu.val_share_deviation(counts, strat) < 0.03


def test_rerun_gives_the_same_output_and_clears_leftovers(tmp_path):
    src = make_raw(tmp_path, one_box_each(10))
    out = tmp_path / "out"
    assert convert(src, out) == 0
    first = snapshot(out)
    (out / "labels" / "train" / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (out / "images" / "val" / "stray.jpg").write_bytes(b"x")
    assert convert(src, out) == 0
    assert snapshot(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, "out"]  # no temp or old folders left


def test_refuses_a_folder_it_did_not_write_unless_forced(tmp_path, capsys):
    src = make_raw(tmp_path, one_box_each(5))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert convert(src, out) == 2
    assert "not an earlier output of this tool" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert convert(src, out, "--force") == 0
    assert not (out / "keep.txt").exists() and split_of(out)["val"]
    assert convert(src, tmp_path, "--force") == 2  # would delete the source
    assert src.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert(src, empty) == 0


def test_failure_while_writing_leaves_the_previous_output(tmp_path, monkeypatch):
    src = make_raw(tmp_path, one_box_each(10))
    out = tmp_path / "out"
    assert convert(src, out) == 0
    before = snapshot(out)
    calls = []

    def failing_place(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_place(*args)

    real_place = nwpu.place_image
    monkeypatch.setattr(nwpu, "place_image", failing_place)
    assert convert(src, out, "--seed", "5") == 2
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, "out"]


def test_images_are_linked_by_default_and_copied_on_request(tmp_path, monkeypatch):
    src = make_raw(tmp_path, one_box_each(5))
    original = src / nwpu.POSITIVE_DIR / "001.jpg"
    assert convert(src, tmp_path / "link") == 0
    (linked,) = (tmp_path / "link" / "images").glob("*/001.jpg")
    assert os.path.samefile(linked, original) and not linked.is_symlink()
    assert convert(src, tmp_path / "copy", "--copy") == 0
    (copied,) = (tmp_path / "copy" / "images").glob("*/001.jpg")
    assert not os.path.samefile(copied, original) and copied.read_bytes() == original.read_bytes()

    def no_hard_links(a, b):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    assert convert(src, tmp_path / "sym") == 0
    (symlinked,) = (tmp_path / "sym" / "images").glob("*/001.jpg")
    assert symlinked.is_symlink() and os.readlink(symlinked) == str(original)


def test_negatives_join_as_backgrounds_without_moving_positives(tmp_path):
    src = make_raw(tmp_path, one_box_each(10), negatives=5)
    assert convert(src, tmp_path / "with") == 0
    assert convert(src, tmp_path / "without", "--no-negatives") == 0
    with_neg, without = split_of(tmp_path / "with"), split_of(tmp_path / "without")
    negs = {s: [n for n in names if n.startswith("neg_")] for s, names in with_neg.items()}
    assert sorted(negs["train"] + negs["val"]) == [f"neg_{i:03d}" for i in range(1, 6)] and len(negs["val"]) == 1
    assert all(label_text(tmp_path / "with", n) == "" for n in negs["train"] + negs["val"])
    assert {s: [n for n in names if not n.startswith("neg_")] for s, names in with_neg.items()} == without


def test_written_yaml_loads_with_the_project_dataset_reader(tmp_path):
    dataset = pytest.importorskip("yolocore.data.dataset")
    src = make_raw(tmp_path, {"001": b"(10,5),(30,25),1\r\n(0,0),(100,50),10\r\n", "002": b"(45,20),(55,30),7\r\n",
                              "003": b"(0,0),(50,50),3\n", "004": b"(20,10),(40,30),5\n"})
    assert convert(src, tmp_path / "built", "--val-ratio", "0.25") == 0
    (tmp_path / "built").rename(tmp_path / "moved")  # path: . keeps the yaml valid wherever the folder goes
    data = load_data_yaml(tmp_path / "moved" / "NWPU.yaml")
    assert data["nc"] == 10 and data["names"] == nwpu.CLASS_NAMES
    expected = {"001": [[0, 0.2, 0.3, 0.2, 0.4], [9, 0.5, 0.5, 1, 1]], "002": [[6, 0.5, 0.5, 0.1, 0.2]],
                "003": [[2, 0.25, 0.5, 0.5, 1]], "004": [[4, 0.3, 0.4, 0.2, 0.4]]}
    seen = []
    for split in ("train", "val"):
        ds = dataset.YoloDataset(data[split], imgsz=64, nc=data["nc"])
        for im_file, labels, shape in zip(ds.im_files, ds.labels, ds.shapes):
            stem = Path(im_file).stem
            np.testing.assert_allclose(labels, expected[stem], atol=1e-6)
            assert list(shape) == [W, H]
            seen.append(stem)
    assert sorted(seen) == sorted(expected)


def test_repo_yaml_is_the_documented_default():
    data = load_yaml(ROOT / "data" / "NWPU.yaml")
    assert data["names"] == nwpu.CLASS_NAMES and data["nc"] == len(nwpu.CLASS_NAMES) == 10
    assert ((ROOT / "data" / data["path"]).resolve()) == ROOT / "datasets" / "NWPU"
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert "datasets/" in (ROOT / ".gitignore").read_text().split()


def test_command_line(tmp_path):
    src = make_raw(tmp_path, one_box_each(5))
    script = str(ROOT / "data" / "transform_nwpu.py")
    done = subprocess.run([sys.executable, script, str(src), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
    assert rows["train"] == ["4", "0", "4"] and rows["val"] == ["1", "0", "1"]  # images, backgrounds, boxes
    (src / nwpu.GROUND_TRUTH_DIR / "001.txt").write_text("(1,1),(20,20),12\n")
    done = subprocess.run([sys.executable, script, str(src), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "001.txt:1: class '12'" in done.stderr
