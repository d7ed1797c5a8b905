"""yolocore.evaluation.metrics and yolocore.training.results against hand-worked answers, YOLOv5's known quirks and
pycocotools."""
import contextlib
import io

import numpy as np
import pytest

from yolocore.evaluation.metrics import ConfusionMatrix, ap_per_class, compute_ap, fitness, match_predictions
from yolocore.training.results import append_results, format_metrics_table

IOUV = np.linspace(0.5, 0.95, 10)


def test_fitness_weights_map50_and_map50_95_only():
    x = np.array([[1.0, 1.0, 0.5, 0.3], [0.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(fitness(x), [0.1 * 0.5 + 0.9 * 0.3, 0.1])


def test_compute_ap_perfect_curve_is_0995_like_yolov5():
    # The (recall 1, precision 0) sentinel makes the last of the 101 points 0: the trapezoid loses half a step
    ap, mpre, mrec = compute_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    assert ap == pytest.approx(0.995)
    np.testing.assert_allclose(mrec, [0, 0.5, 1, 1])
    np.testing.assert_allclose(mpre, [1, 1, 1, 0])


def test_ap_per_class_perfect_predictions():
    tp = np.ones((3, 10), dtype=bool)
    tp_n, fp_n, p, r, f1, ap, classes = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]),
                                                     np.array([0, 1, 1]))
    np.testing.assert_array_equal(classes, [0, 1])
    np.testing.assert_allclose(ap, 0.995)
    np.testing.assert_allclose(p, 1.0)
    np.testing.assert_allclose(r, 1.0)
    np.testing.assert_allclose(tp_n, [1, 2])
    np.testing.assert_allclose(fp_n, 0)


def test_ap_per_class_false_positive_ranked_above_the_one_found_object():
    # Two objects; detections: a false positive at 0.9, then one object at 0.8 (the other is never found).
    # recall [0, .5], precision [0, .5]; envelope is 0.5 up to recall .5, then linear to the (1, 0) sentinel:
    # 101-point trapezoid = 0.5 * 0.5 + 0.5 * 0.5 * 0.5 = 0.375 (COCO's step rule would give 51/101 * 0.5)
    tp = np.array([[False] * 10, [True] * 10])
    *_, ap, classes = ap_per_class(tp, np.array([0.9, 0.8]), np.array([0, 0]), np.array([0, 0]))
    np.testing.assert_array_equal(classes, [0])
    np.testing.assert_allclose(ap, 0.375)


def test_ap_per_class_is_independent_of_input_order():
    tp = np.array([[True] * 10, [False] * 10])
    *_, ap, _ = ap_per_class(tp, np.array([0.8, 0.9]), np.array([0, 0]), np.array([0, 0]))
    np.testing.assert_allclose(ap, 0.375)


def test_ap_per_class_without_predictions_is_zero():
    tp_n, fp_n, p, r, f1, ap, classes = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0),
                                                     np.array([0, 2, 2]))
    np.testing.assert_array_equal(classes, [0, 2])
    assert ap.shape == (2, 10)
    for a in (tp_n, fp_n, p, r, f1, ap):
        np.testing.assert_array_equal(a, 0)


def test_ap_per_class_ignores_classes_absent_from_targets():
    tp = np.array([[True] * 10, [False] * 10])
    *_, ap, classes = ap_per_class(tp, np.array([0.9, 0.95]), np.array([1, 3]), np.array([1, 2]))
    np.testing.assert_array_equal(classes, [1, 2])
    np.testing.assert_allclose(ap[:, 0], [0.995, 0.0])


def _iou_box(iou):
    """A [0,0,10,h] box whose IoU with [0,0,10,10] is iou."""
    return [0.0, 0.0, 10.0, 10.0 * iou]


def test_match_predictions_thresholds_and_class_mismatch():
    labels = np.array([[0, 0, 0, 10, 10]], dtype=float)
    det = np.array([[*_iou_box(0.72), 0.9, 0]])
    np.testing.assert_array_equal(match_predictions(det, labels, IOUV)[0], [True] * 5 + [False] * 5)
    wrong_class = np.array([[*_iou_box(0.97), 0.9, 1]])
    assert not match_predictions(wrong_class, labels, IOUV).any()


def test_match_predictions_label_goes_to_first_detection_as_in_yolov5():
    # Two detections on one label: at thresholds both pass, YOLOv5 gives the label to the earlier (more confident)
    # detection even though the later one overlaps more; above 0.72 only the later one qualifies.
    labels = np.array([[0, 0, 0, 10, 10]], dtype=float)
    det = np.array([[*_iou_box(0.72), 0.9, 0], [*_iou_box(0.97), 0.8, 0]])
    correct = match_predictions(det, labels, IOUV)
    np.testing.assert_array_equal(correct[0], [True] * 5 + [False] * 5)
    np.testing.assert_array_equal(correct[1], [False] * 5 + [True] * 5)


def test_match_predictions_detection_takes_its_best_label():
    # One detection between two labels prefers the better overlap, leaving the other label to a second detection
    labels = np.array([[0, 0, 0, 10, 10], [0, 4, 0, 14, 10]], dtype=float)
    det = np.array([[3, 0, 13, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0]])
    correct = match_predictions(det, labels, IOUV)  # IoU det0: .54 label0, .82 label1; det1: 1 label0
    np.testing.assert_array_equal(correct[0], [True] * 7 + [False] * 3)
    assert correct[1].all()


def test_match_predictions_empty_inputs():
    assert match_predictions(np.zeros((0, 6)), np.array([[0, 0, 0, 1, 1]]), IOUV).shape == (0, 10)
    assert not match_predictions(np.array([[0, 0, 1, 1, 0.9, 0]]), np.zeros((0, 5)), IOUV).any()


def _random_case(seed, n_img=4, nc=3):
    """Ground truth plus jittered (always found), duplicate and false detections with interleaved scores.

    Every object is found at IoU 0.5: ultralytics' interpolation to the (recall 1, precision 0) sentinel departs from
    COCO whenever final recall is below 1, so only then are the two definitions expected to agree closely.
    """
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_img):
        n = int(rng.integers(5, 10))
        xy, wh = rng.uniform(0, 400, (n, 2)), rng.uniform(20, 100, (n, 2))
        gt = np.concatenate((rng.integers(0, nc, (n, 1)), xy, xy + wh), 1)
        dets = []
        for c, *box in gt:
            size = np.tile(np.subtract(box[2:], box[:2]), 2)
            dets.append([*(box + rng.normal(0, 0.04, 4) * size), rng.uniform(0.3, 1.0), c])
            if rng.random() < 0.2:
                dets.append([*(box + rng.normal(0, 0.1, 4) * size), rng.uniform(0.0, 0.6), c])
        for _ in range(int(rng.integers(1, 5))):
            fxy = rng.uniform(0, 400, 2)
            dets.append([*fxy, *(fxy + rng.uniform(20, 100, 2)), rng.uniform(0.0, 0.7), rng.integers(0, nc)])
        dets = np.array(dets)
        images.append((gt, dets[np.argsort(-dets[:, 4])]))
    return images


def _coco_ap50(images, nc):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    imgs, anns, dets = [], [], []
    for i, (gt, det) in enumerate(images):
        imgs.append({'id': i, 'width': 600, 'height': 600})
        for c, *b in gt:
            anns.append({'id': len(anns) + 1, 'image_id': i, 'category_id': int(c), 'bbox': xywh(b),
                         'area': xywh(b)[2] * xywh(b)[3], 'iscrowd': 0})
        dets += [{'image_id': i, 'category_id': int(d[5]), 'bbox': xywh(d), 'score': float(d[4])} for d in det]
    coco_gt = COCO()
    coco_gt.dataset = {'images': imgs, 'annotations': anns, 'categories': [{'id': k} for k in range(nc)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), 'bbox')
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ['all']
        ev.params.maxDets = [1000]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval['precision'][0, :, :, 0, 0]  # (recall thresholds, classes)
    return precision[:, (precision > -1).all(0)].mean()


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_map50_agrees_with_pycocotools(seed):
    nc = 3
    images = _random_case(seed, nc=nc)
    stats = [(match_predictions(det, gt, IOUV), det[:, 4], det[:, 5], gt[:, 0]) for gt, det in images]
    tp, conf, pred_cls, target_cls = (np.concatenate(s) for s in zip(*stats))
    *_, ap, _ = ap_per_class(tp, conf, pred_cls, target_cls)
    assert ap[:, 0].mean() == pytest.approx(_coco_ap50(images, nc), abs=0.01)


def test_confusion_matrix_known_case():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    labels = np.array([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30], [1, 50, 50, 60, 60]], dtype=float)
    detections = np.array([
        [0, 0, 10, 10, 0.9, 0],  # correct class 0
        [20, 20, 30, 31, 0.8, 0],  # on a class 1 object but called 0
        [80, 80, 90, 90, 0.7, 1],  # nothing there: background false positive
        [50, 50, 60, 60, 0.1, 1],  # under conf: the third label counts as missed
    ])
    cm.process_batch(detections, labels)
    expected = np.zeros((3, 3))
    expected[0, 0] = expected[0, 1] = expected[2, 1] = expected[1, 2] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    tp, fp = cm.tp_fp()
    np.testing.assert_array_equal(tp, [1, 0])
    np.testing.assert_array_equal(fp, [1, 1])


def test_confusion_matrix_images_without_matches():
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(None, np.array([[1, 0, 0, 5, 5]]))  # no detections: the label is missed
    cm.process_batch(np.array([[0, 0, 5, 5, 0.9, 0]]), np.zeros((0, 5)))  # no labels: a false positive
    expected = np.zeros((3, 3))
    expected[2, 1] = expected[0, 2] = 1
    np.testing.assert_array_equal(cm.matrix, expected)


def test_append_results_header_append_and_mismatch(tmp_path):
    f = tmp_path / 'run' / 'results.csv'
    append_results(f, {'epoch': 0, 'train/box_loss': 0.125, 'metrics/mAP_0.5': np.float32(0.5)})
    append_results(f, {'metrics/mAP_0.5': 0.75, 'epoch': 1, 'train/box_loss': 0.0625})  # reordered keys
    assert f.read_text().splitlines() == ['epoch,train/box_loss,metrics/mAP_0.5', '0,0.125,0.5', '1,0.0625,0.75']
    with pytest.raises(ValueError, match='results.csv.*missing .*metrics/mAP_0.5.*unexpected .*x/lr0'):
        append_results(f, {'epoch': 2, 'train/box_loss': 0.1, 'x/lr0': 0.01})
    assert len(f.read_text().splitlines()) == 3


def test_format_metrics_table_rows():
    text = format_metrics_table(['plane', 'ship', 'tank'], 12, np.array([5, 0, 7]), p=[0.5, 0.25], r=[1.0, 0.5],
                                ap50=[0.75, 0.25], ap=[0.5, 0.125], ap_class=[0, 2])
    lines = text.splitlines()
    assert lines[0].split() == ['Class', 'Images', 'Instances', 'P', 'R', 'mAP50', 'mAP50-95']
    assert lines[1].split() == ['all', '12', '12', '0.375', '0.75', '0.5', '0.312']
    assert lines[2].split() == ['plane', '12', '5', '0.5', '1', '0.75', '0.5']
    assert lines[3].split() == ['tank', '12', '7', '0.25', '0.5', '0.25', '0.125']
    assert len(lines) == 4
