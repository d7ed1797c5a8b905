"""The training recipe's arithmetic and the shared validation bookkeeping."""
import numpy as np
import pytest

from yolocore.evaluation.validation import Evaluator
from yolocore.training.recipe import (
    LOSS_KEYS,
    METRIC_KEYS,
    accumulation,
    kd_weight_at,
    loss_gains,
    lr_lambda,
    patience_ran_out,
    results_row,
    scaled_weight_decay,
    warmup,
    warmup_iterations,
)

HYP = {"warmup_epochs": 3.0, "warmup_momentum": 0.8, "momentum": 0.937, "warmup_bias_lr": 0.1, "weight_decay": 5e-4,
       "box": 0.05, "cls": 0.5, "obj": 1.0}


def test_lr_schedules_run_from_one_to_lrf():
    for cos in (False, True):
        lf = lr_lambda(100, 0.01, cos)
        assert lf(0) == pytest.approx(1.0) and lf(100) == pytest.approx(0.01)
        assert all(lf(e) > lf(e + 1) for e in range(100))
    assert lr_lambda(100, 0.01)(50) == pytest.approx(0.505)


def test_kd_weight_is_constant_by_default_and_moves_linearly_to_its_final_fraction():
    assert [kd_weight_at({"kd_weight": 0.02}, e, 10) for e in (0, 9)] == [0.02, 0.02]
    hyp = {"kd_weight": 0.02, "kd_weightf": 0.0}
    assert [kd_weight_at(hyp, e, 5) for e in range(5)] == pytest.approx([0.02, 0.015, 0.01, 0.005, 0.0])
    assert kd_weight_at({"kd_weight": 0.1, "kd_weightf": 0.5}, 0, 1) == pytest.approx(0.1)  # one epoch: the first's


def test_patience_counts_epochs_since_the_best_and_0_never_stops():
    assert [patience_ran_out(e, 2, 3) for e in range(2, 7)] == [False, False, False, True, True]
    assert not any(patience_ran_out(e, 0, 0) for e in range(100))


def test_warmup_ramps_lr_momentum_and_accumulation():
    assert warmup_iterations(HYP, 8) == 100 and warmup_iterations(HYP, 100) == 300
    accumulate, groups = warmup(0, 100, HYP, 0.01, batch_size=16)
    assert accumulate == 1
    assert groups[0] == pytest.approx((0.1, 0.8)) and groups[1] == pytest.approx((0.0, 0.8))
    accumulate, groups = warmup(100, 100, HYP, 0.01, batch_size=16)
    assert accumulate == 4 and all(g == pytest.approx((0.01, 0.937)) for g in groups)


def test_a_smaller_nominal_batch_steps_the_optimizer_more_often_with_the_same_decay_per_image():
    small = dict(HYP, nbs=16)
    assert accumulation(HYP, 16) == 4 and accumulation(small, 16) == 1 and accumulation(small, 4) == 4
    assert warmup(100, 100, small, 0.01, batch_size=16)[0] == 1
    assert warmup(100, 100, dict(HYP, nbs=32), 0.01, batch_size=8)[0] == 4
    # weight decay is per optimizer step, scaled to the images a step has seen: batch_size * accumulate / nbs
    assert scaled_weight_decay(small, 16) == pytest.approx(5e-4)
    assert scaled_weight_decay(small, 48) == pytest.approx(5e-4 * 48 / 16)


def test_loss_gains_and_weight_decay_scale_as_yolov5():
    g = loss_gains(HYP, nl=3, nc=10, imgsz=320)
    assert g["box"] == pytest.approx(0.05) and g["cls"] == pytest.approx(0.5 * 10 / 80)
    assert g["obj"] == pytest.approx(0.25) and HYP["obj"] == 1.0, "the hyp passed in must stay unscaled"
    assert scaled_weight_decay(HYP, 16) == pytest.approx(5e-4)
    assert scaled_weight_decay(HYP, 48) == pytest.approx(5e-4 * 48 / 64)


def test_results_row_columns():
    row = results_row(3, [1, 2, 3], [0.5, 0.6, 0.7, 0.4, 9, 8, 7], [0.1, 0.2, 0.3])
    assert list(row)[:4] == ["epoch", *(f"train/{k}" for k in LOSS_KEYS)]
    assert [row[k] for k in METRIC_KEYS] == [0.5, 0.6, 0.7, 0.4] and row["val/cls_loss"] == 7
    assert row["x/lr2"] == 0.3 and "train/fgd_loss" not in row


def test_evaluator_maps_boxes_back_and_scores_a_perfect_detector(tmp_path):
    # One 200x100 image letterboxed to 64x64: gain 0.32, 16 px of padding above and below.
    imgs = np.zeros((1, 3, 64, 64), np.uint8)
    targets = np.array([[0, 1, 0.5, 0.5, 0.25, 0.25], [0, 0, 0.25, 0.4, 0.1, 0.1]], np.float32)
    boxes = np.array([[24, 24, 40, 40], [12.8, 22.4, 19.2, 28.8]])  # the labels in letterboxed pixels
    detections = [np.concatenate((boxes, [[0.9], [0.8]], [[1], [0]]), 1)]
    shapes = [((100, 200), ((0.32, 0.32), (0.0, 16.0)))]
    evaluator = Evaluator(["a", "b"], plots=True, save_dir=tmp_path)
    evaluator.add_batch(imgs, targets, detections, ["img.jpg"], shapes)
    (p, r, map50, map_), maps = evaluator.summary()
    assert map50 == pytest.approx(0.995) and map_ == pytest.approx(0.995) and r == pytest.approx(1.0)
    assert (tmp_path / "val_batch0_pred.jpg").is_file() and (tmp_path / "confusion_matrix.png").is_file()
    detections[0][1, 5] = 1  # wrong class for the small box
    wrong = Evaluator(["a", "b"])
    wrong.add_batch(imgs, targets, detections, ["img.jpg"], shapes)
    assert wrong.summary()[0][2] < 0.75
