"""YOLOv5 loss (CIoU, three-cell target assignment, objectness, overfitting) and NMS against a plain greedy loop."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from yolocore.config import load_hyp
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.framework import init_seeds
from YOLOv5Pytorch.utils.loss import ComputeLoss, bbox_ciou
from YOLOv5Pytorch.utils.nms import box_iou, nms, non_max_suppression

HYP_FILE = Path(__file__).resolve().parents[2] / "YOLOv5Pytorch" / "hyp.scratch-low.yaml"
BALANCE = [4.0, 1.0, 0.4]


@pytest.fixture(scope="module")
def hyp():
    return load_hyp(HYP_FILE)


def seeded_model(nc=3, seed=0):
    init_seeds(seed)
    return Model("yolov5n.yaml", nc=nc)


# ---------------------------------------------------------------- CIoU


def test_bbox_ciou_hand_values():
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2)) ** 2
    cases = [
        ((3.0, 4.0, 2.0, 5.0), (3.0, 4.0, 2.0, 5.0), 1.0),  # identical
        ((0.0, 0.0, 1.0, 1.0), (5.0, 5.0, 1.0, 1.0), -50 / 72),  # disjoint: IoU 0, centre distance^2 50, diagonal^2 72
        ((0.0, 0.0, 2.0, 2.0), (1.0, 0.0, 2.0, 2.0), 1 / 3 - 1 / 13),  # shifted: IoU 2/6, rho^2 1, c^2 3^2+2^2
        ((0.0, 0.0, 2.0, 1.0), (0.0, 0.0, 1.0, 2.0), 1 / 3 - v * v / (v - 1 / 3 + 1)),  # crossed: aspect term only
    ]
    box1 = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    box2 = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    ciou = bbox_ciou(box1, box2)
    assert ciou.shape == (4, 1)
    assert ciou[:, 0].tolist() == pytest.approx([c[2] for c in cases], abs=1e-6)
    assert ciou[1, 0] < 0


# ---------------------------------------------------------------- target assignment


def assigned(loss_fn, target, grids=(8, 4, 2), bs=2, no=8):
    preds = [torch.zeros(bs, 3, g, g, no) for g in grids]
    return loss_fn.build_targets(preds, torch.tensor([target], dtype=torch.float32))


def test_build_targets_own_cell_and_two_neighbours(hyp):
    """One 16x16 px box at (26.4, 37.6) px of a 64 px image, class 2, image 1.

    Stride 8 (8x8 grid): centre (3.3, 4.7) -> own cell (gi 3, gj 4), left neighbour (x frac .3 < .5) and lower
    neighbour (y frac .7 > .5); box 2x2 cells fits all three anchors (ratios < anchor_t 4).
    Stride 16 (4x4): centre (1.65, 2.35) -> own (1, 2), right and upper neighbours; box 1x1 cell fits anchors 0, 1
    only (anchor 2 is 7.4 cells tall). Stride 32: box 0.5 cells is over 4x smaller than every anchor."""
    loss_fn = ComputeLoss(seeded_model(), hyp)
    tcls, tbox, indices, anchors = assigned(loss_fn, [1, 2, 3.3 / 8, 4.7 / 8, 0.25, 0.25])
    cells = [sorted(tuple(v) for v in torch.stack(ind, 1).tolist()) for ind in indices]
    assert cells[0] == sorted((1, a, gj, gi) for a in range(3) for gj, gi in [(4, 3), (4, 2), (5, 3)])
    assert cells[1] == sorted((1, a, gj, gi) for a in range(2) for gj, gi in [(2, 1), (2, 2), (1, 1)])
    assert cells[2] == []

    # Box targets are relative to the assigned cell; width and height in cells of that level.
    for level, (cx, cy, size) in enumerate([(3.3, 4.7, 2.0), (1.65, 2.35, 1.0)]):
        _, _, gj, gi = indices[level]
        expected = torch.stack((cx - gi, cy - gj, torch.full_like(cx - gi, size), torch.full_like(cy - gj, size)), 1)
        assert torch.allclose(tbox[level], expected.float(), atol=1e-5), level
    assert tcls[0].tolist() == [2] * 9 and tcls[1].tolist() == [2] * 6
    level_anchors = loss_fn.anchors
    assert torch.equal(anchors[0], level_anchors[0][indices[0][1]])
    assert torch.equal(anchors[1], level_anchors[1][indices[1][1]])


def test_build_targets_border_has_no_neighbours(hyp):
    # Centre in the first cell: the left/upper neighbours would lie outside the grid, right/lower are too far.
    loss_fn = ComputeLoss(seeded_model(), hyp)
    _, _, indices, _ = assigned(loss_fn, [0, 1, 0.3 / 8, 0.3 / 8, 0.25, 0.25])
    cells = [sorted(tuple(v) for v in torch.stack(ind, 1).tolist()) for ind in indices]  # a list: no duplicates
    assert cells[0] == [(0, a, 0, 0) for a in range(3)]
    assert cells[1] == [(0, a, 0, 0) for a in range(2)]
    assert cells[2] == []


# ---------------------------------------------------------------- loss values


def test_no_targets_give_only_objectness_loss(hyp):
    model = seeded_model()
    loss_fn = ComputeLoss(model, hyp)
    preds = model.train()(torch.rand(2, 3, 64, 64))
    loss, items = loss_fn(preds, torch.zeros(0, 6))
    assert items.shape == (3,) and not items.requires_grad
    assert items[0] == 0 and items[2] == 0
    assert items[1] > 0
    # Every cell is background: plain BCE against zeros, weighted per level.
    expected = sum(F.binary_cross_entropy_with_logits(p[..., 4], torch.zeros_like(p[..., 4])) * w
                   for p, w in zip(preds, BALANCE)) * hyp["obj"]
    assert items[1].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(items.sum().item() * 2, rel=1e-6)
    loss.backward()
    assert model.model[-1].m[0].bias.grad.abs().sum() > 0


def test_loss_value_by_hand(hyp):
    """Constant logits and the target of the assignment test above, so every term can be written out.

    xywh logits (1, -.5, .3, -.2) predict a box at (2 sig(1) - .5, 2 sig(-.5) - .5) in its cell, sized
    ((2 sig(.3))^2, (2 sig(-.2))^2) anchors; objectness logit -2 everywhere, whose BCE mean is
    softplus(-2) + 2 * sum(IoU targets) / cells; class logits (1, -1, .5) for class 2."""
    loss_fn = ComputeLoss(seeded_model(), hyp)
    preds = [torch.zeros(1, 3, g, g, 8) for g in (8, 4, 2)]
    class_logits = torch.tensor([1.0, -1.0, 0.5])
    box_logits = torch.tensor([1.0, -0.5, 0.3, -0.2])
    sx, sy, sw, sh = box_logits.sigmoid().tolist()
    for p in preds:
        p[..., :4] = box_logits
        p[..., 4] = -2.0
        p[..., 5:] = class_logits
    loss, items = loss_fn(preds, torch.tensor([[0, 2, 3.3 / 8, 4.7 / 8, 0.25, 0.25]]))

    anchors = [[(1.25, 1.625), (2.0, 3.75), (4.125, 2.875)], [(1.875, 3.8125), (3.875, 2.8125)]]
    offsets = [[(0.3, 0.7), (1.3, 0.7), (0.3, -0.3)], [(0.65, 0.35), (0.65, 1.35), (-0.35, 0.35)]]
    sizes = [2.0, 1.0]
    lbox = lobj = lcls = 0.0
    for level, grid in enumerate((8, 4, 2)):
        obj_bce = F.softplus(torch.tensor(-2.0)).item()
        if level < 2:
            pairs = [(a, o) for a in anchors[level] for o in offsets[level]]
            pred_boxes = torch.tensor([(2 * sx - 0.5, 2 * sy - 0.5, (2 * sw) ** 2 * aw, (2 * sh) ** 2 * ah)
                                       for (aw, ah), _ in pairs])
            target_boxes = torch.tensor([(*o, sizes[level], sizes[level]) for _, o in pairs])
            ciou = bbox_ciou(pred_boxes, target_boxes)[:, 0]
            lbox += (1 - ciou).mean().item()
            obj_bce += 2.0 * ciou.clamp(min=0).sum().item() / (3 * grid * grid)
            lcls += F.binary_cross_entropy_with_logits(class_logits, torch.tensor([0.0, 0.0, 1.0])).item()
        lobj += BALANCE[level] * obj_bce
    expected = [lbox * hyp["box"], lobj * hyp["obj"], lcls * hyp["cls"]]
    assert items.tolist() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(sum(expected), rel=1e-5)


def test_targets_give_box_and_class_loss(hyp):
    model = seeded_model()
    loss_fn = ComputeLoss(model, hyp)
    preds = model.train()(torch.rand(2, 3, 64, 64))
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.2], [1, 2, 0.7, 0.3, 0.1, 0.25]])
    loss, items = loss_fn(preds, targets)
    assert (items > 0).all()
    assert loss.item() == pytest.approx(items.sum().item() * 2, rel=1e-6)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
def test_loss_decreases_when_overfitting_two_images(hyp):
    model = seeded_model(nc=2)
    loss_fn = ComputeLoss(model, hyp)
    imgs = torch.full((2, 3, 64, 64), 0.45)
    imgs[0, :, 8:24, 10:34] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # red 24x16 box, class 0
    imgs[1, :, 30:58, 36:52] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]  # blue 16x28 box, class 1
    targets = torch.tensor([[0, 0, 22 / 64, 16 / 64, 24 / 64, 16 / 64], [1, 1, 44 / 64, 44 / 64, 16 / 64, 28 / 64]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=hyp["momentum"])
    model.train()
    history = []
    for _ in range(30):
        loss, items = loss_fn(model(imgs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(items)
    first, last = history[0], torch.stack(history[-3:]).mean(0)
    assert last.sum() < 0.5 * first.sum(), (first, last)
    assert (last < first).all(), (first, last)  # box, objectness and class each improve


# ---------------------------------------------------------------- NMS


def iou_xyxy(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_nms(prediction, conf_thres, iou_thres, classes=None, agnostic=False, multi_label=False, max_det=300):
    """Per image: candidates (conf, class, box) best first; one is kept unless a kept box of the same class
    (any class when agnostic) overlaps it by more than iou_thres."""
    out = []
    for rows in prediction.double().tolist():
        candidates = []
        for cx, cy, w, h, obj, *cls in rows:
            if obj <= conf_thres:
                continue
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            scores = [obj * c for c in cls]
            if multi_label:
                candidates += [(s, c, box) for c, s in enumerate(scores) if s > conf_thres]
            else:
                best = max(range(len(scores)), key=scores.__getitem__)
                if scores[best] > conf_thres:
                    candidates.append((scores[best], best, box))
        if classes is not None:
            candidates = [c for c in candidates if c[1] in classes]
        kept = []
        for conf, c, box in sorted(candidates, key=lambda t: -t[0]):
            if len(kept) == max_det:
                break
            if all(iou_xyxy(box, kb) <= iou_thres for _, kc, kb in kept if agnostic or kc == c):
                kept.append((conf, c, box))
        out.append(torch.tensor([[*box, conf, c] for conf, c, box in kept], dtype=torch.float64).view(-1, 6))
    return out


def random_predictions(seed, bs=2, n=250, nc=4, size=160):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bs, n, 2, generator=g) * size
    wh = torch.rand(bs, n, 2, generator=g) * 50 + 8
    scores = torch.rand(bs, n, 1 + nc, generator=g)
    return torch.cat((xy, wh, scores), 2)


def assert_same_detections(ours, ref):
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape, (o.shape, r.shape)
        assert torch.allclose(o[:, :5].double(), r[:, :5], atol=1e-3)
        assert torch.equal(o[:, 5].double(), r[:, 5])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"iou_thres": 0.6},
        {"multi_label": True},
        {"agnostic": True},
        {"multi_label": True, "agnostic": True, "iou_thres": 0.3},
        {"classes": [1, 3]},
    ],
    ids=["default", "iou0.6", "multi_label", "agnostic", "multi_agnostic", "classes"],
)
def test_nms_equals_greedy_reference(seed, kwargs):
    pred = random_predictions(seed)
    kwargs = {"conf_thres": 0.2, "iou_thres": 0.45, **kwargs}
    ours = non_max_suppression(pred, **kwargs)
    ref = reference_nms(pred, **kwargs)
    assert sum(len(r) for r in ref) > 10  # the case exercises suppression, not an empty output
    assert_same_detections(ours, ref)


def test_nms_conf_threshold_filters():
    pred = random_predictions(3)
    for thres in (0.1, 0.5, 0.8):
        for det in non_max_suppression(pred, conf_thres=thres):
            assert (det[:, 4] > thres).all()
    assert all(d.shape == (0, 6) for d in non_max_suppression(pred, conf_thres=1.0))


def test_nms_max_det_caps_and_keeps_the_best():
    pred = random_predictions(4)
    full = non_max_suppression(pred, conf_thres=0.1)
    capped = non_max_suppression(pred, conf_thres=0.1, max_det=5)
    for f, c in zip(full, capped):
        assert len(f) > 5 and c.shape == (5, 6)
        assert torch.equal(c, f[:5])


def test_nms_empty_input():
    for pred in (torch.zeros(2, 0, 9), torch.zeros(1, 10, 9)):  # no rows; rows all below the threshold
        out = non_max_suppression(pred)
        assert len(out) == pred.shape[0]
        assert all(d.shape == (0, 6) for d in out)


def test_nms_rejects_thresholds_outside_unit_interval():
    pred = random_predictions(0)
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(pred, conf_thres=1.5)
    with pytest.raises(ValueError, match="iou_thres"):
        non_max_suppression(pred, iou_thres=-0.1)


def test_nms_hand_case():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (best) suppresses box 0 (IoU 0.9) and box 1 (IoU 72/118 = 0.61); box 2 overlaps nothing.
    assert nms(boxes, scores, 0.5, 300).tolist() == [3, 2]
    assert nms(boxes, scores, 0.95, 300).tolist() == [3, 0, 1, 2]
    assert nms(boxes, scores, 0.95, 2).tolist() == [3, 0]
    assert box_iou(boxes[:1], boxes)[0].tolist() == pytest.approx([1.0, 81 / 119, 0.0, 0.9], abs=1e-6)


def test_collapsed_predicted_box_gives_a_finite_ciou():
    iou = bbox_ciou(torch.tensor([[0.5, 0.5, 0.0, 0.0]]), torch.tensor([[0.3, 0.7, 2.0, 2.0]]))
    assert torch.isfinite(iou).all()


@pytest.mark.parametrize("block", [1, 7, 64])
def test_nms_in_small_blocks_equals_greedy_reference(block, monkeypatch):
    monkeypatch.setattr("YOLOv5Pytorch.utils.nms.NMS_BLOCK_CPU", block)
    pred = random_predictions(5)
    for kwargs in ({}, {"multi_label": True, "max_det": 37}, {"agnostic": True, "iou_thres": 0.3}):
        kwargs = {"conf_thres": 0.2, "iou_thres": 0.45, **kwargs}
        assert_same_detections(non_max_suppression(pred, **kwargs), reference_nms(pred, **kwargs))
