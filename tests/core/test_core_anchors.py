"""AutoAnchor: fit measure, and evolution that finds anchors for boxes the defaults cannot match."""
import numpy as np

from yolocore.architecture.anchors import anchor_fit, check_anchors, kmean_anchors, label_wh

DEFAULT = np.array([10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326], float).reshape(-1, 2)


def test_fit_of_exact_and_far_boxes():
    assert anchor_fit(DEFAULT.copy(), DEFAULT, thr=4.0)[0] == 1.0
    assert anchor_fit(np.array([[2000.0, 2000.0]]), DEFAULT, thr=4.0)[0] == 0.0


def test_default_anchors_kept_when_they_fit():
    wh = np.random.default_rng(0).uniform(20, 200, (300, 2))
    bpr, new = check_anchors(wh, DEFAULT, thr=4.0)
    assert bpr > 0.98 and new is None


def test_evolution_fixes_anchors_that_do_not_fit():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(800, 30, (200, 2)), rng.normal(3, 0.3, (200, 2)).clip(2.1)])
    bpr, _ = anchor_fit(wh, DEFAULT, thr=4.0)
    new_bpr, new = check_anchors(wh, DEFAULT, thr=4.0, rng=np.random.default_rng(1))
    assert new is not None and new.shape == (9, 2)
    assert new_bpr > bpr and new_bpr > 0.98
    assert (np.diff(new.prod(1)) >= 0).all(), "anchors must be ordered small to large, as the levels are"


def test_kmeans_is_seeded():
    wh = np.random.default_rng(0).uniform(5, 300, (400, 2))
    a = kmean_anchors(wh, 9, 4.0, np.random.default_rng(3), gen=50)
    b = kmean_anchors(wh, 9, 4.0, np.random.default_rng(3), gen=50)
    np.testing.assert_array_equal(a, b)


def test_label_wh_scales_to_training_size_and_drops_tiny_boxes():
    shapes = np.array([[1000, 500]])
    labels = [np.array([[0, 0.5, 0.5, 0.1, 0.2], [0, 0.5, 0.5, 0.0001, 0.0001]], np.float32)]
    wh = label_wh(shapes, labels, 640, np.random.default_rng(0))
    assert wh.shape == (1, 2)
    assert 0.9 * 64 <= wh[0, 0] <= 1.1 * 64 and 0.9 * 64 <= wh[0, 1] <= 1.1 * 64
