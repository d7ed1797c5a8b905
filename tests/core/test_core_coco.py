"""yolocore.evaluation.coco and val.py's --save-json: COCO's figures, by pycocotools, on boxes in the original
pixels."""
import json

import cv2
import numpy as np
import pytest

from yolocore.data.dataset import YoloDataset
from yolocore.evaluation.coco import (
    STAT_NAMES,
    CocoRecorder,
    agnostic_figures,
    agnostic_figures_of_files,
    coco_evaluate,
    read_coco_csv,
    save_coco,
)
from yolocore.evaluation.validation import Evaluator


def recorded(images, names=("plane", "car")):
    """images: {path: ((h, w), labels [[class, x1, y1, x2, y2]], detections [[x1, y1, x2, y2, conf, class]])}."""
    recorder = CocoRecorder(names)
    for path, (shape, labels, dets) in images.items():
        recorder.add(path, shape, np.array(labels, float).reshape(-1, 5), np.array(dets, float).reshape(-1, 6))
    return recorder


def test_one_of_two_objects_found():
    """A large plane found exactly, a small one missed: COCO's AP interpolates precision at 101 recall points, and
    here precision is 1 up to recall 0.5 and nothing after, so AP = 51 / 101 at every IoU threshold."""
    recorder = recorded({"a.jpg": ((600, 800), [[0, 100, 100, 300, 250], [0, 500, 400, 520, 420]],
                                   [[100, 100, 300, 250, 0.9, 0]])})
    stats = dict(zip(STAT_NAMES, coco_evaluate(*recorder.to_coco())[0]))
    assert [stats["AP"], stats["AP50"], stats["AP75"]] == pytest.approx([51 / 101] * 3)
    # the 20x20 plane is small (< 32²), the 200x150 one large
    assert stats["APs"] == 0 and stats["APl"] == pytest.approx(1)
    assert stats["APm"] == -1  # no medium objects: undefined, as pycocotools reports it
    assert stats["AR100"] == pytest.approx(0.5) and stats["ARs"] == 0 and stats["ARl"] == pytest.approx(1)


def test_a_shifted_box_fails_the_strict_thresholds_only():
    # 100 px wide, shifted 10 px: IoU 90 / 110 = 0.818, so it counts at IoU 0.50 ... 0.80, 7 of 10 thresholds
    recorder = recorded({"a.jpg": ((400, 400), [[1, 50, 50, 150, 150]], [[60, 50, 160, 150, 0.8, 1]])})
    stats = dict(zip(STAT_NAMES, coco_evaluate(*recorder.to_coco())[0]))
    assert [stats["AP50"], stats["AP75"]] == pytest.approx([1, 1])
    assert stats["AP"] == pytest.approx(0.7)


def test_no_detections_score_zero():
    stats, _ = coco_evaluate(*recorded({"a.jpg": ((400, 400), [[0, 50, 50, 150, 150]], [])}).to_coco())
    assert stats[STAT_NAMES.index("AP")] == 0 and stats[STAT_NAMES.index("APs")] == -1


def test_with_classes_merged_a_box_counts_once_whatever_its_class(tmp_path):
    """Plane A is found and also called a car (multi-label NMS keeps both), plane B is called a car: with classes
    merged both are found, the duplicate goes (class-agnostic NMS), and AP is 1; per class it is not."""
    planes = [[0, 10, 10, 110, 110], [0, 200, 200, 300, 300]]
    found = [[10, 10, 110, 110, 0.9, 0], [12, 10, 110, 110, 0.8, 1], [200, 200, 300, 300, 0.7, 1]]
    recorder = recorded({"a.jpg": ((400, 400), planes, found)})
    assert agnostic_figures(*recorder.to_coco()) == pytest.approx({"AP_agnostic": 1, "AP50_agnostic": 1})
    assert dict(zip(STAT_NAMES, coco_evaluate(*recorder.to_coco())[0]))["AP50"] < 0.6
    # Without the NMS the duplicate would be a false positive ranked before plane B
    one_class = recorded({"a.jpg": ((400, 400), planes, [[*box, score, 0] for *box, score, _ in found])})
    assert dict(zip(STAT_NAMES, coco_evaluate(*one_class.to_coco())[0]))["AP50"] < 0.9
    figures = save_coco(recorder, tmp_path)
    assert read_coco_csv(tmp_path / "coco.csv")["AP_agnostic"] == pytest.approx(1) == figures["AP50_agnostic"]
    assert agnostic_figures_of_files(tmp_path) == pytest.approx(agnostic_figures(*recorder.to_coco()))
    (tmp_path / "predictions.json").unlink()
    assert agnostic_figures_of_files(tmp_path) is None


def test_a_split_without_labels_gets_its_predictions_only(tmp_path):
    """A test split scored elsewhere: the detections are written, no figures are made up."""
    recorder = recorded({"a.jpg": ((400, 400), [], [[1, 1, 9, 9, 0.5, 0]])})
    with pytest.raises(ValueError, match="no"):
        coco_evaluate(*recorder.to_coco())
    assert save_coco(recorder, tmp_path) is None and not (tmp_path / "coco.csv").exists()
    assert json.loads((tmp_path / "predictions.json").read_text())[0]["bbox"] == [1, 1, 8, 8]


def test_image_ids_follow_the_paths_not_the_batches():
    images = {"b/2.jpg": ((100, 200), [[1, 10, 10, 50, 40]], [[10, 10, 50, 40, 0.123456789, 1]]),
              "a/9.jpg": ((300, 100), [[0, 5, 6, 7, 8]], [[5.12345, 6, 7, 8, 0.5, 0]])}
    forward = recorded(images).to_coco()
    backward = recorded(dict(reversed(images.items()))).to_coco()
    assert forward == backward
    ground_truth, detections = forward
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in ground_truth["images"]] == \
        [(1, "a/9.jpg", 300, 100), (2, "b/2.jpg", 100, 200)]
    assert ground_truth["annotations"][1] == {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 30],
                                              "area": 1200, "iscrowd": 0}
    assert detections == [{"image_id": 1, "category_id": 0, "bbox": [5.123, 6, 1.877, 2], "score": 0.5},
                          {"image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 30], "score": 0.12346}]
    assert [c["name"] for c in ground_truth["categories"]] == ["plane", "car"]


def test_without_pycocotools_the_files_are_still_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None if name == "pycocotools" else object())
    recorder = recorded({"a.jpg": ((400, 400), [[0, 50, 50, 150, 150]], [[50, 50, 150, 150, 0.9, 0]])})
    assert save_coco(recorder, tmp_path) is None and "pycocotools is not installed" in capsys.readouterr().out
    assert (tmp_path / "predictions.json").is_file() and not (tmp_path / "coco.csv").exists()


def test_saved_files_give_the_printed_figures_to_pycocotools(tmp_path, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    images = {}
    for i in range(6):
        labels = [[int(rng.integers(2)), *(xy := rng.uniform(0, 300, 2)), *(xy + rng.uniform(10, 150, 2))]
                  for _ in range(4)]
        dets = [[*(np.array(b[1:]) + rng.normal(0, 4, 4)), rng.uniform(0.1, 1), b[0]] for b in labels[:3]]
        images[f"{i}.jpg"] = ((480, 480), labels, dets)
    figures = save_coco(recorded(images), tmp_path)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in capsys.readouterr().out
    assert read_coco_csv(tmp_path / "coco.csv") == pytest.approx(figures, abs=1e-6)
    coco_gt = COCO(str(tmp_path / "annotations.json"))
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "predictions.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    np.testing.assert_allclose(evaluator.stats, [figures[n] for n in STAT_NAMES])
    assert 0.3 < figures["AP"] < 0.9  # imprecise boxes and a missed object in every image


def write_image(folder, name, w, h, boxes):
    """An image of w x h px and its YOLO label file for boxes [(class, x1, y1, x2, y2)] in its pixels."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{name}.png"), np.full((h, w, 3), 90, np.uint8))
    (folder / "labels" / f"{name}.txt").write_text("".join(
        f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
        for c, x1, y1, x2, y2 in boxes))


@pytest.mark.parametrize("rect", [True, False])
def test_validation_writes_each_box_in_its_original_pixels(tmp_path, rect):
    """The evaluator maps labels and detections back from the letterboxed batch to the image's own pixels, each
    axis with its own scale. ultralytics scales x by the y gain, which puts this wide image's right-hand box 4 px
    off (1289 px resized to 512 and 559 px to ceil(222.03) = 223); mAP would not show it, the json files do."""
    originals = {"wide": (1289, 559, [(0, 1000, 300, 1080, 340), (1, 12, 500, 40, 530)]),
                 "tall": (500, 900, [(1, 440, 850, 490, 895)]), "square": (640, 640, [(0, 100, 100, 400, 300)])}
    for name, (w, h, boxes) in originals.items():
        write_image(tmp_path, name, w, h, boxes)
    dataset = YoloDataset(tmp_path / "images", imgsz=512, nc=2, cache=False, rect=rect, batch_size=2)
    evaluator = Evaluator(["plane", "car"], save_dir=tmp_path, save_json=True)
    for start in range(0, len(dataset), 2):
        imgs, targets, paths, shapes = YoloDataset.collate_fn([dataset[i] for i in range(start, min(start + 2,
                                                                                                    len(dataset)))])
        h, w = imgs.shape[2:]
        # a perfect detector: each label, in the batch's pixels
        detections = [np.array([[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, 0.9, c]
                                for _, c, cx, cy, bw, bh in targets[targets[:, 0] == i]]) for i in range(len(paths))]
        evaluator.add_batch(imgs, targets, detections, paths, shapes)
    evaluator.summary()
    assert read_coco_csv(tmp_path / "coco.csv")["AP"] == pytest.approx(1)
    ground_truth = json.loads((tmp_path / "annotations.json").read_text())
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    for image in ground_truth["images"]:
        name = image["file_name"].split("/")[-1][:-4]
        w, h, boxes = originals[name]
        assert (image["width"], image["height"]) == (w, h)
        expected = [[c, x1, y1, x2 - x1, y2 - y1] for c, x1, y1, x2, y2 in boxes]
        for found in ([[a["category_id"], *a["bbox"]] for a in ground_truth["annotations"] if a["image_id"] ==
                       image["id"]], [[d["category_id"], *d["bbox"]] for d in predictions if d["image_id"] ==
                                      image["id"]]):
            np.testing.assert_allclose(sorted(found), sorted(expected), atol=2e-3, err_msg=name)


def test_json_needs_a_folder():
    with pytest.raises(ValueError, match="save_dir"):
        Evaluator(["plane"], save_json=True)
