"""The Jittor tree against the PyTorch tree on the same weights and inputs: model outputs and features,
ComputeLoss per component and its gradient, NMS. Small shapes keep Jittor's per-shape kernel compiles short."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
import numpy as np
import pytest
import torch

from YOLOv5Jittor.models.yolo import Model as JtModel
from YOLOv5Jittor.models.yolo import count_parameters as jt_count_parameters
from YOLOv5Jittor.utils.framework import ModelEMA as JtModelEMA
from YOLOv5Jittor.utils.framework import state_dict_from_numpy as jt_state_dict_from_numpy
from YOLOv5Jittor.utils.jittor_nn import BatchNorm2d as JtBatchNorm2d
from YOLOv5Jittor.utils.loss import ComputeLoss as JtComputeLoss
from YOLOv5Jittor.utils.nms import non_max_suppression as jt_nms
from YOLOv5Pytorch.models.yolo import Model as TorchModel
from YOLOv5Pytorch.models.yolo import count_parameters as torch_count_parameters
from YOLOv5Pytorch.utils.framework import ModelEMA as TorchModelEMA
from YOLOv5Pytorch.utils.framework import init_seeds as torch_init_seeds
from YOLOv5Pytorch.utils.framework import state_dict_to_numpy as torch_state_dict_to_numpy
from YOLOv5Pytorch.utils.loss import ComputeLoss as TorchComputeLoss
from YOLOv5Pytorch.utils.nms import non_max_suppression as torch_nms

NC = 10
HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}
# Rows [image, class, cx, cy, w, h]: centres at every border (neighbour cells exist on one side only), two boxes in
# one cell (the objectness target is written twice), a box larger than any anchor ratio allows on small levels,
# and image 2 without boxes.
TARGETS = np.array(
    [
        [0, 1, 0.01, 0.50, 0.10, 0.20],
        [0, 3, 0.99, 0.97, 0.20, 0.10],
        [0, 3, 0.505, 0.02, 0.05, 0.05],
        [1, 0, 0.30, 0.30, 0.40, 0.35],
        [1, 9, 0.31, 0.29, 0.30, 0.45],
        [1, 5, 0.70, 0.60, 0.95, 0.90],
        [3, 2, 0.06, 0.94, 0.03, 0.04],
        [3, 4, 0.47, 0.53, 0.12, 0.30],
    ],
    dtype=np.float32,
)


def max_rel_error(expected, actual):
    """Largest |difference| relative to the magnitude of the expected tensor (robust to entries near zero)."""
    return float(np.abs(expected - actual).max() / (np.abs(expected).max() + 1e-12))


@pytest.fixture(scope="module")
def models():
    torch_init_seeds(0)
    torch_model = TorchModel("yolov5n.yaml", nc=NC)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode exercises them
        for m in torch_model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    jt_model = JtModel("yolov5n.yaml", nc=NC)
    jt_model.load_state_dict(jt_state_dict_from_numpy(torch_state_dict_to_numpy(torch_model.state_dict())))
    return torch_model, jt_model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)


def test_parameter_counts_keys_and_shapes_equal(models):
    torch_model, jt_model = models
    assert torch_count_parameters(torch_model) == jt_count_parameters(jt_model) == 1777447
    torch_shapes = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()
                    if not k.endswith("num_batches_tracked")}
    jt_shapes = {k: tuple(v.shape) for k, v in jt_model.state_dict().items()}
    assert list(torch_shapes) == list(jt_shapes)
    assert torch_shapes == jt_shapes
    np.testing.assert_array_equal(torch_model.stride.numpy(), jt_model.stride.numpy())


def test_eval_outputs_agree(models, images):
    torch_model, jt_model = models
    torch_model.eval()
    jt_model.eval()
    with torch.no_grad():
        expected, expected_raw = torch_model(torch.from_numpy(images))
    actual, actual_raw = jt_model(jt.array(images))
    assert max_rel_error(expected.numpy(), actual.numpy()) < 1e-4
    # Per element too: confidences are small numbers next to pixel boxes.
    assert np.abs(expected.numpy() - actual.numpy()).max() < 1e-4 * (np.abs(expected.numpy()) + 1).max()
    for e, a in zip(expected_raw, actual_raw):
        assert max_rel_error(e.numpy(), a.numpy()) < 1e-4


def test_train_outputs_features_and_running_stats_agree(models, images):
    torch_model, jt_model = models
    torch_before = torch_state_dict_to_numpy(torch_model.state_dict())
    jt_before = {k: v.numpy().copy() for k, v in jt_model.state_dict().items()}
    try:
        torch_model.train()
        jt_model.train()
        expected, expected_feats = torch_model(torch.from_numpy(images), feature_layers=[17, 20, 23])
        actual, actual_feats = jt_model(jt.array(images), feature_layers=[17, 20, 23])
        assert [tuple(f.shape) for f in actual_feats] == [tuple(f.shape) for f in expected_feats]
        for e, a in zip(expected + expected_feats, actual + actual_feats):
            assert max_rel_error(e.detach().numpy(), a.numpy()) < 1e-3
        # PyTorch updates running_var with the unbiased batch variance; a plain Jittor BatchNorm would not.
        jt_after = jt_model.state_dict()
        for k, v in torch_model.state_dict().items():
            if k.endswith(("running_mean", "running_var")):
                np.testing.assert_allclose(jt_after[k].numpy(), v.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    finally:  # the module-scoped models stay identical for the other tests
        torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in torch_before.items()})
        jt_model.load_state_dict(jt_before)


def test_train_mode_batchnorm_and_its_gradient_agree():
    """The Jittor tree's BatchNorm2d writes its train-mode gradient out (TrainNorm); on a channel of 102,400 values
    it must give PyTorch's output, input and parameter gradients and running statistics."""
    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 0.5, (4, 6, 160, 160)).astype(np.float32)  # a mean well off zero tests the centring
    grad_y = rng.normal(0, 1, x.shape).astype(np.float32)
    weight, bias = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(0, 0.2, 6).astype(np.float32)
    torch_bn, jt_bn = torch.nn.BatchNorm2d(6, eps=1e-3, momentum=0.03), JtBatchNorm2d(6, eps=1e-3, momentum=0.03)
    with torch.no_grad():
        torch_bn.weight.copy_(torch.from_numpy(weight))
        torch_bn.bias.copy_(torch.from_numpy(bias))
    jt_bn.weight.update(jt.array(weight))
    jt_bn.bias.update(jt.array(bias))
    torch_x = torch.from_numpy(x).requires_grad_()
    torch_y = torch_bn.train()(torch_x)
    torch_y.backward(torch.from_numpy(grad_y))
    jt_x = jt.array(x)
    jt_bn.train()
    jt_y = jt_bn(jt_x)
    grads = jt.grad((jt_y * jt.array(grad_y)).sum(), [jt_x, jt_bn.weight, jt_bn.bias])
    pairs = {"output": (torch_y, jt_y), "input gradient": (torch_x.grad, grads[0]),
             "weight gradient": (torch_bn.weight.grad, grads[1]), "bias gradient": (torch_bn.bias.grad, grads[2]),
             "running_mean": (torch_bn.running_mean, jt_bn.running_mean),
             "running_var": (torch_bn.running_var, jt_bn.running_var)}
    for name, (expected, actual) in pairs.items():
        assert max_rel_error(expected.detach().numpy(), actual.numpy()) < 1e-5, name


def test_model_ema_agrees_and_keeps_the_keys(models):
    """Jittor's deepcopy drops marks on Vars (stop_grad, persistence): the EMA copy must still save the same keys."""
    torch_model, jt_model = models
    torch_init_seeds(1)
    torch_other = TorchModel("yolov5n.yaml", nc=NC)
    jt_other = JtModel("yolov5n.yaml", nc=NC)
    jt_other.load_state_dict(jt_state_dict_from_numpy(torch_state_dict_to_numpy(torch_other.state_dict())))
    torch_ema, jt_ema = TorchModelEMA(torch_model), JtModelEMA(jt_model)
    for _ in range(2):
        torch_ema.update(torch_other)
        jt_ema.update(jt_other)
    expected = torch_state_dict_to_numpy(torch_ema.ema.state_dict())
    actual = {k: v.numpy() for k, v in jt_ema.ema.state_dict().items()}
    assert list(actual) == [k for k in expected if not k.endswith("num_batches_tracked")]
    assert jt_count_parameters(jt_ema.ema) == torch_count_parameters(torch_ema.ema)
    for k, v in actual.items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(actual["model.0.conv.weight"], torch_model.state_dict()["model.0.conv.weight"].numpy())


def random_train_outputs(imgsz=128, batch=4, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1.5, (batch, 3, imgsz // s, imgsz // s, NC + 5)).astype(np.float32) for s in (8, 16, 32)]


@pytest.mark.parametrize(
    "hyp_update, n_targets",
    [({}, len(TARGETS)), ({"fl_gamma": 1.5, "label_smoothing": 0.1, "cls_pw": 1.3}, len(TARGETS)), ({}, 0)],
    ids=["plain", "focal-smoothing-pos-weight", "no-targets"],
)
def test_compute_loss_and_gradient_agree(models, hyp_update, n_targets):
    torch_model, jt_model = models
    hyp = {**HYP, **hyp_update}
    preds = random_train_outputs()
    targets = TARGETS[:n_targets]

    torch_preds = [torch.from_numpy(p).requires_grad_() for p in preds]
    torch_loss, torch_items = TorchComputeLoss(torch_model, hyp)(torch_preds, torch.from_numpy(targets))
    torch_loss.backward()

    jt_preds = [jt.array(p) for p in preds]
    jt_loss, jt_items = JtComputeLoss(jt_model, hyp)(jt_preds, jt.array(targets))
    jt_grads = jt.grad(jt_loss, jt_preds)

    np.testing.assert_allclose(jt_items.numpy(), torch_items.numpy(), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(jt_loss.numpy(), torch_loss.detach().numpy(), rtol=1e-3)
    if n_targets:
        assert (torch_items.numpy() > 0).all()  # every component is exercised
    for t, j in zip(torch_preds, jt_grads):
        assert max_rel_error(t.grad.numpy(), j.numpy()) < 1e-3


@pytest.mark.parametrize("target, pos_weight", [(0.0, 1.0), (1.0, 1.0), (0.4, 1.0), (0.0, 1.3), (0.9, 1.3)])
def test_the_bce_of_each_tree_keeps_confident_logits(models, target, pos_weight):
    """Most objectness and class targets are 0, and training drives their logits far below 0: each tree's BCE (the
    one its ComputeLoss uses), element by element against float64, keeps the gradient sigmoid(x) there to float32
    precision (Jittor's own BCE gave 0 below -16.6). The loss, which both trees sum from terms of size |x|, and the
    gradient of a nonzero target, sigmoid(x) - target, float32 holds to ~1e-7 absolute only."""
    torch_model, jt_model = models
    hyp = {**HYP, "obj_pw": pos_weight}
    logits = np.linspace(-40, 15, 1101, dtype=np.float32)
    targets = np.full_like(logits, target)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([pos_weight], dtype=torch.float64)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(x, torch.from_numpy(targets).double(),
                                                                    pos_weight=weight, reduction="none")
    expected.sum().backward()
    expected, expected_grad = expected.detach().numpy(), x.grad.numpy()

    torch_bce = TorchComputeLoss(torch_model, hyp).bce_obj
    torch_bce.reduction = "none"
    x = torch.from_numpy(logits).requires_grad_()
    torch_loss = torch_bce(x, torch.from_numpy(targets))
    torch_loss.sum().backward()
    jt_bce = JtComputeLoss(jt_model, hyp).bce_obj
    jt_bce.reduction = "none"
    jt_x = jt.array(logits)
    jt_loss = jt_bce(jt_x, jt.array(targets))
    jt_grad = jt.grad(jt_loss.sum(), jt_x)

    for tree, loss, grad in (("torch", torch_loss.detach().numpy(), x.grad.numpy()),
                             ("jittor", jt_loss.numpy(), jt_grad.numpy())):
        np.testing.assert_allclose(loss, expected, rtol=1e-6, atol=1e-6, err_msg=f"{tree} loss")
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=3e-7 if target else 1e-15,
                                   err_msg=f"{tree} gradient")


def test_build_targets_assigns_the_same_cells(models):
    torch_model, jt_model = models
    preds = random_train_outputs()
    _, _, torch_indices, _ = TorchComputeLoss(torch_model, HYP).build_targets(
        [torch.from_numpy(p) for p in preds], torch.from_numpy(TARGETS))
    _, _, jt_indices, _ = JtComputeLoss(jt_model, HYP).build_targets([jt.array(p) for p in preds], jt.array(TARGETS))
    for level, (expected, actual) in enumerate(zip(torch_indices, jt_indices)):
        expected = np.stack([v.numpy() for v in expected], 1)
        actual = np.stack([v.numpy() for v in actual], 1)
        assert expected.shape[0] > len(TARGETS) or level == 2  # neighbour cells were added
        np.testing.assert_array_equal(actual, expected)
    # Border cells: a centre at cx = 0.01 has no left neighbour, one at 0.99 no right neighbour.
    gi = torch_indices[0][3].numpy()
    assert gi.min() == 0 and gi.max() == 128 // 8 - 1


def random_detections(batch=2, n=400, nc=4, seed=2):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 96, (batch, n, 2))
    wh = rng.uniform(4, 40, (batch, n, 2))
    scores = rng.uniform(0, 1, (batch, n, 1 + nc))
    return np.concatenate((xy, wh, scores), 2).astype(np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"max_det": 7}, {"agnostic": True, "iou_thres": 0.3}, {"multi_label": True, "conf_thres": 0.5},
     {"classes": [1, 3]}],
    ids=["default", "max-det", "agnostic", "multi-label", "classes"],
)
def test_nms_keeps_the_same_boxes(kwargs):
    prediction = random_detections()
    expected = torch_nms(torch.from_numpy(prediction), **kwargs)
    actual = jt_nms(jt.array(prediction), **kwargs)
    assert len(expected) == len(actual) == 2
    for e, a in zip(expected, actual):
        assert e.shape[0] > 0
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-4)


def test_nms_with_nothing_above_threshold():
    prediction = random_detections()
    prediction[..., 4] = 0.01
    assert [a.shape[0] for a in jt_nms(jt.array(prediction))] == [0, 0]
