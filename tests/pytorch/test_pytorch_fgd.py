"""FGDLoss against a plain per-image, per-box loop written after the official mmdet FeatureLoss."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from YOLOv5Pytorch.KD.fgd import FGDLoss, background_mask, foreground_mask, pad_boxes
from YOLOv5Pytorch.utils.framework import init_seeds

# Boxes touching every border, overlapping pairs, one image without boxes, one image covered whole,
# rows out of image order: everything the vectorised mask could get wrong.
TARGETS = torch.tensor(
    [
        [2, 0, 0.5, 0.5, 1.0, 1.0],  # image 2 is all foreground
        [0, 1, 0.10, 0.15, 0.20, 0.30],  # touches left and top
        [0, 0, 0.90, 0.85, 0.20, 0.30],  # touches right and bottom
        [0, 2, 0.30, 0.30, 0.35, 0.40],  # overlaps the first
        [0, 1, 0.32, 0.28, 0.10, 0.08],  # small box inside the overlap: largest 1/area wins there
        [3, 0, 0.50, 0.50, 0.02, 0.03],  # smaller than a cell
        [0, 0, 0.61, 0.47, 0.33, 0.21],
        [3, 1, 0.25, 0.75, 0.50, 0.50],  # touches left and bottom
    ],
    dtype=torch.float32,
)
BATCH = 5  # images 1 and 4 have no boxes
SHAPES = [(20, 12), (12, 20), (7, 9)]  # (H, W): non-square both ways and odd


def loop_masks(targets, batch, h, w):
    fg = torch.zeros(batch, h, w, dtype=torch.float64)
    bg = torch.ones(batch, h, w, dtype=torch.float64)
    for i in range(batch):
        for row in targets[targets[:, 0] == i]:
            cx, cy, bw, bh = row[2], row[3], row[4], row[5]
            wmin = int(((cx - bw / 2) * w).clamp(0, w).floor())
            wmax = int(((cx + bw / 2) * w).clamp(0, w).ceil())
            hmin = int(((cy - bh / 2) * h).clamp(0, h).floor())
            hmax = int(((cy + bh / 2) * h).clamp(0, h).ceil())
            area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
            cells = fg[i, hmin : hmax + 1, wmin : wmax + 1]
            fg[i, hmin : hmax + 1, wmin : wmax + 1] = torch.clamp(cells, min=area)
        bg[i] = torch.where(fg[i] > 0, 0.0, 1.0)
        if bg[i].sum():
            bg[i] /= bg[i].sum()
    return fg, bg


def loop_context(block, x):
    """Official spatial_pool + channel_add for one image."""
    _, c, h, w = x.shape
    weights = F.softmax(block.conv_mask(x).view(1, 1, h * w), dim=2).unsqueeze(-1)
    context = torch.matmul(x.view(1, c, h * w).unsqueeze(1), weights).view(1, c, 1, 1)
    return x + block.channel_add(context)


def loop_fgd(fgd, student_feats, teacher_feats, targets):
    """Every term per image in float64, summed and divided by N as the official code does; differentiable."""
    terms = torch.zeros(4, dtype=torch.float64)
    for level, (student, teacher) in enumerate(zip(student_feats, teacher_feats)):
        student = fgd.align[level](student)
        n, c, h, w = teacher.shape
        fg, bg = loop_masks(targets, n, h, w)
        for i in range(n):
            s, t = student[i].double(), teacher[i].double()
            spatial_t = h * w * F.softmax(t.abs().mean(0).flatten() / fgd.temp, 0).view(h, w)
            channel_t = c * F.softmax(t.abs().mean((1, 2)) / fgd.temp, 0).view(c, 1, 1)
            spatial_s = h * w * F.softmax(s.abs().mean(0).flatten() / fgd.temp, 0).view(h, w)
            channel_s = c * F.softmax(s.abs().mean((1, 2)) / fgd.temp, 0).view(c, 1, 1)
            weighted = (t - s) ** 2 * spatial_t * channel_t
            relation = loop_context(fgd.gc_student[level], student[i : i + 1]) - loop_context(
                fgd.gc_teacher[level], teacher[i : i + 1]
            )
            terms += torch.stack(
                [
                    fgd.alpha[level] * (weighted * fg[i]).sum(),
                    fgd.beta[level] * (weighted * bg[i]).sum(),
                    fgd.gamma[level] * ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()),
                    fgd.lambda_[level] * relation.double().pow(2).sum(),
                ]
            ) / n
    return terms


def make_fgd(student_channels=(8, 16, 12), teacher_channels=(16, 16, 24), seed=0):
    init_seeds(seed)
    fgd = FGDLoss(list(student_channels), list(teacher_channels), alpha_fgd=2.0, beta_fgd=1.0, gamma_fgd=0.5)
    # The zero-initialised last convs hide the context path; random weights make the relation term test it.
    for block in [*fgd.gc_student, *fgd.gc_teacher]:
        nn.init.normal_(block.channel_add[-1].weight, std=0.5)
        nn.init.normal_(block.channel_add[-1].bias, std=0.5)
    return fgd


def make_feats(channels, batch=BATCH, shapes=SHAPES, seed=1, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, h, w, generator=gen).requires_grad_(requires_grad) for c, (h, w) in zip(channels, shapes)
    ]


@pytest.mark.parametrize("h,w", SHAPES)
def test_masks_match_loop_reference(h, w):
    boxes, valid = pad_boxes(TARGETS, BATCH)
    fg = foreground_mask(boxes, valid, h, w)
    bg = background_mask(fg)
    ref_fg, ref_bg = loop_masks(TARGETS, BATCH, h, w)
    torch.testing.assert_close(fg.double(), ref_fg)
    torch.testing.assert_close(bg.double(), ref_bg)
    assert fg[2].min() > 0 and bg[2].abs().sum() == 0  # all-foreground image: zero bg, no division by zero
    for empty in (1, 4):
        assert fg[empty].abs().sum() == 0
        torch.testing.assert_close(bg[empty], torch.full((h, w), 1.0 / (h * w)))


def test_mask_rows_follow_y():
    boxes, valid = pad_boxes(torch.tensor([[0, 0, 0.25, 0.1, 0.5, 0.2]]), 1)  # wide, short, top-left
    fg = foreground_mask(boxes, valid, 10, 20)
    covered = (fg[0] > 0).nonzero()
    assert covered[:, 0].max() == 2 and covered[:, 1].max() == 10  # rows 0..ceil(2), columns 0..ceil(10)


def test_no_boxes_in_batch():
    fgd = make_fgd()
    student, teacher = make_feats(fgd.student_channels), make_feats(fgd.teacher_channels, seed=2)
    loss, terms = fgd(student, teacher, torch.zeros(0, 6))
    assert terms[0] == 0 and terms[1] > 0 and torch.isfinite(loss)
    torch.testing.assert_close(terms, loop_fgd(fgd, student, teacher, torch.zeros(0, 6)).float())


def test_loss_matches_loop_reference():
    fgd = make_fgd()
    student, teacher = make_feats(fgd.student_channels), make_feats(fgd.teacher_channels, seed=2)
    loss, terms = fgd(student, teacher, TARGETS)
    reference = loop_fgd(fgd, student, teacher, TARGETS)
    assert (terms > 0).all()
    torch.testing.assert_close(terms, reference.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss, terms.sum())
    assert not terms.requires_grad and loss.requires_grad


def test_equal_features_give_zero_fg_bg_mask():
    init_seeds(0)
    fgd = FGDLoss([8, 16], [8, 16])
    assert all(isinstance(align, nn.Identity) for align in fgd.align)
    feats = make_feats(fgd.teacher_channels, shapes=SHAPES[:2])
    loss, terms = fgd(feats, [f.clone() for f in feats], TARGETS)
    assert terms[:3].abs().sum() == 0
    assert terms[3] == 0  # the GcBlocks start as the identity


def test_gradients_reach_student_and_fgd_modules_not_teacher():
    fgd = make_fgd()
    student = make_feats(fgd.student_channels, requires_grad=True)
    teacher = make_feats(fgd.teacher_channels, seed=2, requires_grad=True)
    loss, _ = fgd(student, teacher, TARGETS)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)
    for name, param in fgd.named_parameters():
        assert param.grad is not None, name
        if name.endswith("conv_mask.bias"):
            # The softmax over cells ignores a shift of every logit: this gradient is zero up to rounding.
            weight_grad = fgd.get_parameter(name.replace("bias", "weight")).grad
            assert param.grad.abs().max() < 1e-4 * weight_grad.abs().max(), name
        else:
            assert param.grad.abs().sum() > 0, name


def test_gradients_match_loop_reference():
    """FGDLoss rearranges the official arithmetic (relation from shared sums, GcBlock pooling as matmuls): the
    gradients it gives the student maps and to every FGD parameter must still be the official loss's."""
    fgd = make_fgd()
    student = make_feats(fgd.student_channels, requires_grad=True)
    teacher = make_feats(fgd.teacher_channels, seed=2)
    fgd(student, teacher, TARGETS)[0].backward()
    actual = [s.grad.clone() for s in student] + [p.grad.clone() for p in fgd.parameters()]
    fgd.zero_grad()
    expected = torch.autograd.grad(loop_fgd(fgd, student, teacher, TARGETS).sum(), [*student, *fgd.parameters()])
    names = [f"student level {i}" for i in range(len(student))] + [name for name, _ in fgd.named_parameters()]
    for name, a, e in zip(names, actual, expected):
        if name.endswith("conv_mask.bias"):
            continue  # the softmax over cells ignores a shift of every logit: zero up to rounding in both
        assert e.abs().max() > 0, name
        torch.testing.assert_close(a, e.float(), rtol=1e-4, atol=1e-5 * e.abs().max().item(), msg=name)


def test_modules_are_registered_and_restored_from_state_dict():
    fgd = make_fgd()
    names = set(fgd.state_dict())
    assert {"align.0.weight", "align.2.bias", "gc_student.1.conv_mask.weight"} <= names
    assert "gc_teacher.2.channel_add.3.weight" in names and not any(n.startswith("align.1") for n in names)
    params = {id(p) for p in fgd.parameters()}
    assert all(id(p) in params for p in fgd.gc_teacher.parameters())
    restored = FGDLoss(fgd.student_channels, fgd.teacher_channels, alpha_fgd=2.0, beta_fgd=1.0, gamma_fgd=0.5)
    restored.load_state_dict(fgd.state_dict())
    student, teacher = make_feats(fgd.student_channels), make_feats(fgd.teacher_channels, seed=2)
    torch.testing.assert_close(restored(student, teacher, TARGETS)[1], fgd(student, teacher, TARGETS)[1])


def test_fresh_gcblock_is_identity_with_official_init():
    block = FGDLoss([4], [6]).gc_student[0]
    assert [type(m) for m in block.channel_add] == [nn.Conv2d, nn.LayerNorm, nn.ReLU, nn.Conv2d]
    assert block.channel_add[-1].weight.abs().sum() == 0 and block.channel_add[-1].bias.abs().sum() == 0
    x = torch.randn(2, 6, 5, 3)
    torch.testing.assert_close(block(x), x)


def test_per_level_weights():
    fgd = FGDLoss([8, 8], [8, 8], alpha_fgd=[1.0, 0.0], beta_fgd=0.0, gamma_fgd=0.0, lambda_fgd=0.0)
    feats = make_feats(fgd.teacher_channels, shapes=SHAPES[:2])
    other = make_feats(fgd.teacher_channels, shapes=SHAPES[:2], seed=3)
    only_first = fgd(feats, other, TARGETS)[0]
    single = FGDLoss([8], [8], alpha_fgd=1.0, beta_fgd=0.0, gamma_fgd=0.0, lambda_fgd=0.0)
    torch.testing.assert_close(only_first, single(feats[:1], other[:1], TARGETS)[0])
    with pytest.raises(ValueError, match="alpha_fgd has 3 entries for 2 levels"):
        FGDLoss([8, 8], [8, 8], alpha_fgd=[1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "student_shapes,teacher_shapes,message",
    [
        ([(2, 8, 6, 4)], [(2, 16, 6, 4)], "built for 2 levels"),
        ([(2, 8, 6, 4), (2, 9, 3, 2)], [(2, 16, 6, 4), (2, 16, 3, 2)], r"level 1: expected 8 student"),
        ([(2, 8, 6, 4), (2, 8, 3, 2)], [(2, 16, 6, 4), (2, 16, 2, 3)], r"level 1: .*\(2, 16, 2, 3\)"),
        ([(2, 8, 6, 4), (2, 8, 3, 2)], [(3, 16, 6, 4), (2, 16, 3, 2)], r"level 0: batch size 2"),
    ],
)
def test_shape_mismatch_errors(student_shapes, teacher_shapes, message):
    fgd = FGDLoss([8, 8], [16, 16])
    student = [torch.zeros(s) for s in student_shapes]
    teacher = [torch.zeros(s) for s in teacher_shapes]
    with pytest.raises(ValueError, match=message):
        fgd(student, teacher, TARGETS[:0])


def test_bad_targets_errors():
    fgd = FGDLoss([8], [8])
    feats = [torch.zeros(2, 8, 4, 4)]
    with pytest.raises(ValueError, match=r"image indices must lie in \[0, 2\)"):
        fgd(feats, feats, torch.tensor([[2.0, 0, 0.5, 0.5, 0.2, 0.2]]))
    with pytest.raises(ValueError, match="targets must be"):
        fgd(feats, feats, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="student channel counts"):
        FGDLoss([8, 8], [8])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    fgd = make_fgd()
    student, teacher = make_feats(fgd.student_channels), make_feats(fgd.teacher_channels, seed=2)
    cpu_terms = fgd(student, teacher, TARGETS)[1]
    fgd.cuda()
    cuda_terms = fgd([s.cuda() for s in student], [t.cuda() for t in teacher], TARGETS.cuda())[1]
    torch.testing.assert_close(cuda_terms.cpu(), cpu_terms, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device, dtype, scale", [
    ("cpu", torch.bfloat16, 1.0),
    # Gaps of ~40 over 32-128 channels: per-cell sums of 5e4-2e5, past float16's 65504.
    pytest.param("cuda", torch.float16, 40.0, marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs CUDA")),
])
def test_loss_is_float32_under_autocast(device, dtype, scale):
    # Under autocast a network hands over half-precision maps, and the loss's matmuls would run in half precision
    # too: the loss must equal float32 arithmetic on the same values, gradients included.
    fgd = make_fgd().to(device)
    student = [(scale * f).to(device, dtype).requires_grad_() for f in make_feats(fgd.student_channels)]
    teacher = [(scale * f).to(device, dtype) for f in make_feats(fgd.teacher_channels, seed=2)]
    with torch.autocast(device, dtype=dtype):
        loss, terms = fgd(student, teacher, TARGETS.to(device))
    loss.backward()
    student32 = [f.detach().float().requires_grad_() for f in student]
    loss32, terms32 = fgd(student32, [f.float() for f in teacher], TARGETS.to(device))
    loss32.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(terms, terms32, rtol=1e-6, atol=0)
    for half, full in zip(student, student32):
        torch.testing.assert_close(half.grad.float(), full.grad.to(dtype).float(), rtol=0, atol=0)
