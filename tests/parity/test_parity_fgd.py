"""The Jittor FGDLoss against the PyTorch one on the same weights and inputs: masks, every term, gradients with
respect to the student maps and the FGD parameters, none for the teacher maps, and state dicts both ways.
Small shapes keep Jittor's per-shape kernel compiles short."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
import numpy as np
import pytest
import torch

from YOLOv5Jittor.KD import fgd as jt_fgd
from YOLOv5Jittor.utils.framework import init_seeds as jt_init_seeds
from YOLOv5Jittor.utils.framework import state_dict_from_numpy as jt_state_dict_from_numpy
from YOLOv5Pytorch.KD import fgd as torch_fgd
from YOLOv5Pytorch.utils.framework import init_seeds as torch_init_seeds
from YOLOv5Pytorch.utils.framework import state_dict_to_numpy as torch_state_dict_to_numpy

# Rows [image, class, cx, cy, w, h]: boxes touching every border, an overlapping pair with a small box inside the
# overlap (the largest 1/area wins there), one smaller than a cell, rows out of image order; image 1 has no boxes.
TARGETS = np.array(
    [
        [2, 0, 0.50, 0.50, 1.00, 1.00],
        [0, 1, 0.10, 0.15, 0.20, 0.30],
        [0, 0, 0.90, 0.85, 0.20, 0.30],
        [0, 2, 0.30, 0.30, 0.35, 0.40],
        [0, 1, 0.32, 0.28, 0.10, 0.08],
        [3, 0, 0.50, 0.50, 0.02, 0.03],
        [3, 1, 0.25, 0.75, 0.50, 0.50],
    ],
    dtype=np.float32,
)
BATCH = 4
SHAPES = [(20, 12), (10, 6), (5, 3)]  # (H, W), non-square
STUDENT_CHANNELS = [8, 16, 12]
TEACHER_CHANNELS = [16, 16, 24]  # levels 0 and 2 need an align conv, level 1 is the Identity
WEIGHTS = dict(temp=0.5, alpha_fgd=[2.0, 1.0, 3.0], beta_fgd=1.0, gamma_fgd=0.5, lambda_fgd=0.05)


def max_rel_error(expected, actual):
    """Largest |difference| relative to the magnitude of the expected tensor (robust to entries near zero)."""
    return float(np.abs(expected - actual).max() / (np.abs(expected).max() + 1e-12))


def randomised_torch_fgd(seed=0):
    """Every parameter random, the zero-initialised convs included, so the relation term sees the context path."""
    torch_init_seeds(seed)
    fgd = torch_fgd.FGDLoss(STUDENT_CHANNELS, TEACHER_CHANNELS, **WEIGHTS)
    with torch.no_grad():
        for name, p in fgd.named_parameters():
            if ".1.weight" in name:  # LayerNorm scale
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.3)
    return fgd


def features(channels, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(offset, 1.0, (BATCH, c, h, w))).astype(np.float32) for c, (h, w) in zip(channels, SHAPES)]


@pytest.fixture(scope="module")
def losses():
    torch_loss = randomised_torch_fgd()
    jt_loss = jt_fgd.FGDLoss(STUDENT_CHANNELS, TEACHER_CHANNELS, **WEIGHTS)
    jt_loss.load_state_dict(jt_state_dict_from_numpy(torch_state_dict_to_numpy(torch_loss.state_dict())))
    return torch_loss, jt_loss


@pytest.fixture(scope="module")
def inputs():
    return features(STUDENT_CHANNELS, seed=1), features(TEACHER_CHANNELS, seed=2, offset=0.3)


def test_state_dict_keys_and_shapes_equal(losses):
    torch_loss, jt_loss = losses
    expected = {k: tuple(v.shape) for k, v in torch_loss.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in jt_loss.state_dict().items()}
    assert list(actual) == list(expected)
    assert actual == expected
    assert "align.0.weight" in actual and not any(k.startswith("align.1.") for k in actual)
    for k, v in torch_loss.state_dict().items():
        np.testing.assert_array_equal(jt_loss.state_dict()[k].numpy(), v.numpy(), err_msg=k)


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("targets", [TARGETS, TARGETS[:0]], ids=["boxes", "no-boxes"])
def test_masks_equal(h, w, targets):
    torch_boxes, torch_valid = torch_fgd.pad_boxes(torch.from_numpy(targets), BATCH)
    torch_fg = torch_fgd.foreground_mask(torch_boxes, torch_valid, h, w)
    torch_bg = torch_fgd.background_mask(torch_fg)
    jt_boxes, jt_valid = jt_fgd.pad_boxes(jt.array(targets), BATCH)
    jt_fg = jt_fgd.foreground_mask(jt_boxes, jt_valid, h, w)
    jt_bg = jt_fgd.background_mask(jt_fg)
    np.testing.assert_array_equal(jt_boxes.numpy(), torch_boxes.numpy())
    np.testing.assert_array_equal(jt_valid.numpy(), torch_valid.numpy())
    np.testing.assert_allclose(jt_fg.numpy(), torch_fg.numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(jt_bg.numpy(), torch_bg.numpy(), rtol=1e-6, atol=0)
    if len(targets):
        assert (torch_fg[2] > 0).all() and (torch_fg[0] > 0).any() and (torch_fg[1] == 0).all()


def test_bad_image_index_is_an_error():
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        jt_fgd.pad_boxes(jt.array(TARGETS), 2)


def error_text(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize(
    "student_shapes,teacher_shapes,targets_shape",
    [
        ([(2, 8, 6, 4)], [(2, 16, 6, 4)], (0, 6)),
        ([(2, 8, 6, 4), (2, 9, 3, 2)], [(2, 16, 6, 4), (2, 16, 3, 2)], (0, 6)),
        ([(2, 8, 6, 4), (2, 8, 3, 2)], [(2, 16, 6, 4), (2, 16, 2, 3)], (0, 6)),
        ([(2, 8, 6, 4), (2, 8, 3, 2)], [(3, 16, 6, 4), (2, 16, 3, 2)], (0, 6)),
        ([(2, 8, 6, 4), (2, 8, 3, 2)], [(2, 16, 6, 4), (2, 16, 3, 2)], (3, 5)),
    ],
    ids=["levels", "channels", "spatial", "batch", "targets"],
)
def test_shape_errors_read_the_same(student_shapes, teacher_shapes, targets_shape):
    torch_loss = torch_fgd.FGDLoss([8, 8], [16, 16])
    jt_loss = jt_fgd.FGDLoss([8, 8], [16, 16])
    expected = error_text(lambda: torch_loss([torch.zeros(s) for s in student_shapes],
                                             [torch.zeros(s) for s in teacher_shapes], torch.zeros(targets_shape)))
    actual = error_text(lambda: jt_loss([jt.zeros(s) for s in student_shapes], [jt.zeros(s) for s in teacher_shapes],
                                        jt.zeros(targets_shape)))
    assert actual == expected


@pytest.mark.parametrize("targets", [TARGETS, TARGETS[:0]], ids=["boxes", "no-boxes"])
def test_terms_and_gradients_agree(losses, inputs, targets):
    torch_loss, jt_loss = losses
    student, teacher = inputs

    torch_student = [torch.from_numpy(s).requires_grad_() for s in student]
    torch_teacher = [torch.from_numpy(t).requires_grad_() for t in teacher]
    torch_loss.zero_grad()
    expected, expected_terms = torch_loss(torch_student, torch_teacher, torch.from_numpy(targets))
    expected.backward()

    jt_student = [jt.array(s) for s in student]
    jt_teacher = [jt.array(t) for t in teacher]
    actual, actual_terms = jt_loss(jt_student, jt_teacher, jt.array(targets))
    names, params = zip(*jt_loss.named_parameters())
    grads = jt.grad(actual, [*jt_student, *jt_teacher, *params])
    student_grads, teacher_grads = grads[: len(student)], grads[len(student) : 2 * len(student)]
    param_grads = dict(zip(names, grads[2 * len(student) :]))

    expected_terms = expected_terms.numpy()
    assert (expected_terms[1:] > 0).all() and (expected_terms[0] > 0) == bool(len(targets))
    np.testing.assert_allclose(actual_terms.numpy(), expected_terms, rtol=1e-4, atol=0)
    np.testing.assert_allclose(actual.numpy().reshape(()), expected.detach().numpy(), rtol=1e-4)
    for level, (t, j) in enumerate(zip(torch_student, student_grads)):
        assert max_rel_error(t.grad.numpy(), j.numpy()) < 1e-4, f"student level {level}"
    assert all(t.grad is None for t in torch_teacher)
    assert all((g.numpy() == 0).all() for g in teacher_grads)  # Jittor's grad of an unused input is zeros
    torch_params = dict(torch_loss.named_parameters())
    assert sorted(param_grads) == sorted(torch_params)
    errors = {}
    for name, g in param_grads.items():
        expected_grad = torch_params[name].grad.numpy()
        if name.endswith("conv_mask.bias"):
            # The softmax over cells ignores a shift of every logit: this gradient is zero up to rounding.
            scale = np.abs(torch_params[name.replace("bias", "weight")].grad.numpy()).max()
            assert max(np.abs(expected_grad).max(), np.abs(g.numpy()).max()) < 1e-4 * scale, name
            continue
        assert np.abs(expected_grad).max() > 0, name
        errors[name] = max_rel_error(expected_grad, g.numpy())
    assert max(errors.values()) < 1e-4, errors


def test_state_dict_round_trip_jittor_to_pytorch(inputs):
    """Weights made on the Jittor side (its own init plus a change) load into PyTorch and give the same loss."""
    jt_init_seeds(3)
    jt_loss = jt_fgd.FGDLoss(STUDENT_CHANNELS, TEACHER_CHANNELS, **WEIGHTS)
    for name, p in jt_loss.named_parameters():
        if "channel_add.3" in name:  # zero-initialised: make the relation term depend on them
            p.assign(jt.randn(p.shape) * 0.3)
    torch_loss = torch_fgd.FGDLoss(STUDENT_CHANNELS, TEACHER_CHANNELS, **WEIGHTS)
    torch_loss.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in jt_loss.state_dict().items()})
    back = jt_fgd.FGDLoss(STUDENT_CHANNELS, TEACHER_CHANNELS, **WEIGHTS)
    back.load_state_dict(jt_state_dict_from_numpy(torch_state_dict_to_numpy(torch_loss.state_dict())))
    for k, v in jt_loss.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    student, teacher = inputs
    with torch.no_grad():
        _, expected = torch_loss([torch.from_numpy(s) for s in student], [torch.from_numpy(t) for t in teacher],
                                 torch.from_numpy(TARGETS))
    _, actual = jt_loss([jt.array(s) for s in student], [jt.array(t) for t in teacher], jt.array(TARGETS))
    assert expected[3] > 0
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4, atol=0)


def test_fresh_gcblock_has_the_official_init():
    """kaiming normal (fan_in, relu) conv_mask weight, zero conv_mask bias and last conv: the block starts as the
    identity."""
    jt_init_seeds(0)
    channels = 1024
    block = jt_fgd.GcBlock(channels)
    weight = block.conv_mask.weight.numpy()
    assert weight.shape == (1, channels, 1, 1)
    assert abs(weight.std() / np.sqrt(2.0 / channels) - 1) < 0.1 and abs(weight.mean()) < 0.01
    assert (block.conv_mask.bias.numpy() == 0).all()
    assert (block.channel_add[-1].weight.numpy() == 0).all() and (block.channel_add[-1].bias.numpy() == 0).all()
    x = jt.randn(2, channels, 3, 2)
    np.testing.assert_array_equal(block(x).numpy(), x.numpy())


def test_terms_agree_on_a_large_map():
    """A million cells in one level: Jittor's CPU sums accumulate float32 in one pass, so a single sum over the whole
    batch drifts by ~1e-3; the terms must stay as close to PyTorch as on small maps."""
    torch_init_seeds(4)
    torch_loss = torch_fgd.FGDLoss([64], [64], **{**WEIGHTS, "alpha_fgd": 2.0})
    with torch.no_grad():
        for block in [*torch_loss.gc_student, *torch_loss.gc_teacher]:
            block.channel_add[-1].weight.normal_(0.0, 0.3)
            block.channel_add[-1].bias.normal_(0.0, 0.3)
    jt_loss = jt_fgd.FGDLoss([64], [64], **{**WEIGHTS, "alpha_fgd": 2.0})
    jt_loss.load_state_dict(jt_state_dict_from_numpy(torch_state_dict_to_numpy(torch_loss.state_dict())))
    rng = np.random.default_rng(5)
    student, teacher = (rng.normal(0.0, 1.0, (2, 64, 96, 96)).astype(np.float32) for _ in range(2))
    targets = TARGETS[TARGETS[:, 0] < 2]
    with torch.no_grad():
        _, expected = torch_loss([torch.from_numpy(student)], [torch.from_numpy(teacher)], torch.from_numpy(targets))
    _, actual = jt_loss([jt.array(student)], [jt.array(teacher)], jt.array(targets))
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_the_gcblock_layernorm_agrees_whatever_the_mean(offset):
    """Each GcBlock layer-normalises C/2 values per image, and nothing keeps their mean near 0. Output and gradient
    follow PyTorch's, against float64 (Jittor's own LayerNorm was 8e-4 off at a mean of 30 standard deviations)."""
    rng = np.random.default_rng(6)
    torch_norm, jt_norm = torch_fgd.GcBlock(64).channel_add[1], jt_fgd.GcBlock(64).channel_add[1]
    weight, bias = rng.uniform(0.5, 1.5, (32, 1, 1)), rng.normal(0.0, 0.3, (32, 1, 1))
    torch_norm.load_state_dict({"weight": torch.from_numpy(weight).float(), "bias": torch.from_numpy(bias).float()})
    jt_norm.load_state_dict({"weight": weight.astype(np.float32), "bias": bias.astype(np.float32)})
    x = rng.normal(offset, 1.0, (4, 32, 1, 1)).astype(np.float32)
    upstream = rng.normal(0.0, 1.0, x.shape)

    reference = torch.nn.LayerNorm([32, 1, 1]).double()
    reference.load_state_dict({"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)})
    x64 = torch.from_numpy(x).double().requires_grad_()
    expected = reference(x64)
    (expected * torch.from_numpy(upstream)).sum().backward()
    torch_x = torch.from_numpy(x).requires_grad_()
    torch_out = torch_norm(torch_x)
    (torch_out * torch.from_numpy(upstream).float()).sum().backward()
    jt_x = jt.array(x)
    jt_out = jt_norm(jt_x)
    jt_grad = jt.grad((jt_out * jt.array(upstream.astype(np.float32))).sum(), jt_x)

    for tree, out, grad in (("torch", torch_out.detach().numpy(), torch_x.grad.numpy()),
                            ("jittor", jt_out.numpy(), jt_grad.numpy())):
        assert np.abs(out - expected.detach().numpy()).max() < 2e-5, f"{tree} output"
        assert max_rel_error(x64.grad.numpy(), grad) < 1e-4, f"{tree} gradient"
