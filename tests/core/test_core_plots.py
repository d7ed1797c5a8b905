"""yolocore.plots.detection: every plot writes a readable image, and drawn content actually lands in it."""
import cv2
import numpy as np
import pytest

from yolocore.evaluation.metrics import ConfusionMatrix, ap_per_class
from yolocore.plots.detection import colors, draw_detections, plot_images, plot_labels, plot_results
from yolocore.training.results import append_results

NAMES = ['plane', 'ship', 'tank']


def _read(path):
    im = cv2.imread(str(path))
    assert im is not None and im.size, f'{path} unreadable'
    return im


def _batch(n=3, h=64, w=96):
    rng = np.random.default_rng(0)
    return rng.integers(0, 60, (n, 3, h, w), dtype=np.uint8)  # dark, so white/coloured marks stand out


def test_colors_rgb_and_bgr():
    assert colors(0) == (255, 56, 56)
    assert colors(0, bgr=True) == (56, 56, 255)
    assert colors(20) == colors(0)


def test_plot_images_mosaic_with_labels_and_predictions(tmp_path):
    images = _batch()
    labels = np.array([[0, 0, 0.5, 0.5, 0.5, 0.5], [2, 1, 0.5, 0.5, 0.8, 0.8]])
    paths = ['a.jpg', 'b.jpg', 'c.jpg']
    bare = _read(plot_images(images, np.zeros((0, 6)), paths=paths, fname=tmp_path / 'bare.jpg'))
    drawn = _read(plot_images(images, labels, paths=paths, fname=tmp_path / 'labels.jpg', names=NAMES))
    assert bare.shape == drawn.shape == (2 * 64, 2 * 96, 3)  # 3 images -> 2x2 grid, column-major like YOLOv5
    diff = np.abs(drawn.astype(int) - bare).sum(2) > 60
    assert diff[:64, :96].any() and diff[:64, 96:].any()  # images 0 and 2 got boxes
    assert not diff[64:, :96].any() and not diff[64:, 96:].any()  # image 1 has none; cell 3 is empty

    preds = np.array([[0, 0, 0.5, 0.5, 0.5, 0.5, 0.9], [2, 1, 0.5, 0.5, 0.8, 0.8, 0.1]])  # second under 0.25
    pred_im = _read(plot_images(images, preds, paths=paths, fname=tmp_path / 'preds.jpg', names=NAMES))
    diff = np.abs(pred_im.astype(int) - bare).sum(2) > 60
    assert diff[:64, :96].any() and not diff[:64, 96:].any()


def test_plot_images_downscales_large_batches(tmp_path):
    images = np.zeros((16, 3, 640, 640), dtype=np.uint8)
    im = _read(plot_images(images, np.array([[5, 0, 0.5, 0.5, 0.2, 0.2]]), fname=tmp_path / 'big.jpg'))
    assert im.shape == (1920, 1920, 3)


def test_plot_labels(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.concatenate((rng.integers(0, 3, (50, 1)), rng.uniform(0.1, 0.9, (50, 2)),
                             rng.uniform(0.02, 0.2, (50, 2))), 1)
    out = plot_labels(labels, NAMES, tmp_path)
    assert out == tmp_path / 'labels.jpg'
    assert _read(out).shape[0] > 500


def test_plot_results_one_panel_per_column(tmp_path):
    f = tmp_path / 'results.csv'
    for epoch in range(4):
        append_results(f, {'epoch': epoch, 'train/box_loss': 0.1 / (epoch + 1), 'train/fgd_loss': 0.5 - epoch / 10,
                           'metrics/mAP_0.5': epoch / 5, 'x/lr0': 0.01})
    out = plot_results(f)
    assert out == tmp_path / 'results.png'
    h, w = _read(out).shape[:2]
    assert w > h  # four panels in one row


def test_plot_results_rejects_non_numeric_values(tmp_path):
    f = tmp_path / 'results.csv'
    f.write_text('epoch,train/box_loss\n0,0.1\n1,oops\n')
    with pytest.raises(ValueError, match=r'results.csv:3: .*train/box_loss'):
        plot_results(f)


def test_ap_per_class_writes_curves(tmp_path):
    tp = np.array([[True] * 10, [False] * 10, [True] * 10])
    ap_per_class(tp, np.array([0.9, 0.6, 0.4]), np.array([0, 0, 1]), np.array([0, 1, 1]), plot=True,
                 save_dir=tmp_path, names=NAMES)
    for name in ('PR_curve.png', 'F1_curve.png', 'P_curve.png', 'R_curve.png'):
        _read(tmp_path / name)


def test_confusion_matrix_plot(tmp_path):
    cm = ConfusionMatrix(nc=3)
    cm.process_batch(np.array([[0, 0, 10, 10, 0.9, 1]]), np.array([[1, 0, 0, 10, 10], [2, 20, 20, 30, 30]]))
    out = cm.plot(tmp_path, NAMES)
    assert out == tmp_path / 'confusion_matrix.png'
    _read(out)


def test_draw_detections_copies_and_draws_class_colours():
    im = np.zeros((100, 120, 3), dtype=np.uint8)
    out = draw_detections(im, np.array([[10, 30, 60, 80]]), np.array([1]), confs=np.array([0.87]), names=NAMES)
    assert not im.any()  # input untouched
    assert tuple(out[55, 10]) == colors(1, bgr=True)  # left edge of the box
    assert out[20:30, 10:60].any()  # label tag above the box
    assert not out[90:, 80:].any()
