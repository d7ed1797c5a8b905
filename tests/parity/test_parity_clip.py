"""Gradient clipping at real size: both trees' optimizer_step clip the same accumulated yolov5n gradients (four
batches of 16, norm above the recipe's 10) to the same values. Jittor's own clip_grad_norm summed the squares of
all 1.9M gradients in one float32 pass and came out 1e-3 low, so every clipped Jittor step was larger than PyTorch's.
"""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from YOLOv5Jittor import train as jt_train
from YOLOv5Pytorch import train as torch_train
from YOLOv5Pytorch.models.yolo import Model as TorchModel
from YOLOv5Pytorch.utils.framework import grad_scaler
from YOLOv5Pytorch.utils.loss import ComputeLoss

HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}
MAX_NORM = 10.0  # both trees' optimizer_step


@pytest.fixture(scope="module")
def grads():
    return accumulated_gradients()


def accumulated_gradients(batches=4, batch_size=16, imgsz=128, nc=10):
    """A fresh yolov5n's gradients summed over an accumulated batch of random images and boxes, as float32 arrays."""
    rng = np.random.default_rng(0)
    model = TorchModel("yolov5n.yaml", nc=nc).train()
    compute_loss = ComputeLoss(model, HYP)
    for _ in range(batches):
        images = torch.from_numpy(rng.random((batch_size, 3, imgsz, imgsz), dtype=np.float32))
        n = 4 * batch_size  # four boxes per image: [image, class, cx, cy, w, h]
        boxes = np.column_stack([np.repeat(np.arange(batch_size), 4), rng.integers(0, nc, n),
                                 rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.3, (n, 2))])
        loss, _ = compute_loss(model(images), torch.from_numpy(boxes.astype(np.float32)))
        loss.backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def clipped_by_each_tree(grads):
    """Each tree's optimizer_step on parameters at 0 with plain SGD at lr 1: the parameters end at minus the
    clipped gradients, exactly."""
    stub_ema = SimpleNamespace(update=lambda model: None)

    torch_params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, g in zip(torch_params, grads):
        p.grad = torch.from_numpy(g.copy())
    torch_run = SimpleNamespace(optimizer=torch.optim.SGD(torch_params, lr=1.0), scaler=grad_scaler("cpu", False),
                                ema=stub_ema, model=None)
    torch_train.optimizer_step(torch_run)

    jt_params = [jt.zeros(g.shape) for g in grads]
    jt_optimizer = jt.optim.SGD(jt_params, lr=1.0)
    # The gradient of sum(p * g) with respect to p is g, to the bit.
    jt_optimizer.backward(sum((p * jt.array(g)).sum() for p, g in zip(jt_params, grads)))
    jt_train.optimizer_step(SimpleNamespace(optimizer=jt_optimizer, ema=stub_ema, model=None))

    return (np.concatenate([-p.detach().numpy().ravel() for p in torch_params]),
            np.concatenate([-p.numpy().ravel() for p in jt_params]))


def test_both_trees_clip_real_size_gradients_alike(grads):
    flat = np.concatenate([g.ravel() for g in grads]).astype(np.float64)
    norm = np.sqrt((flat ** 2).sum())
    assert flat.size > 1_500_000 and norm > MAX_NORM, (flat.size, norm)  # clipping is active
    expected = flat * MAX_NORM / (norm + 1e-6)
    torch_clipped, jt_clipped = clipped_by_each_tree(grads)

    def distance(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    assert distance(torch_clipped, expected) < 1e-6
    assert distance(jt_clipped, expected) < 1e-6, distance(jt_clipped, expected)
    assert distance(jt_clipped, torch_clipped) < 1e-6, distance(jt_clipped, torch_clipped)


def test_gradients_within_the_norm_are_left_as_they_are(grads):
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    small = [(g * (MAX_NORM / 2 / norm)).astype(np.float32) for g in grads]
    flat = np.concatenate([g.ravel() for g in small])
    for clipped in clipped_by_each_tree(small):
        np.testing.assert_array_equal(clipped, flat)
