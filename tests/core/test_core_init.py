"""Initial weights drawn in numpy (yolocore.architecture.initial_weights): the rules, the overrides, the seed, and the
refusal of a parameter no rule covers. That both trees build equal weights from one seed is checked in
test_parity_train.py."""
import numpy as np
import pytest

from yolocore.architecture import initial_weights as initial

MODULES = [  # a conv with bias, a normalisation layer, and a block that overrides one rule of its child conv
    ("", None, {}, {}),
    ("conv", "conv", {"weight": (64, 32, 3, 3), "bias": (64,)}, {}),
    ("bn", "norm", {"weight": (64,), "bias": (64,)}, {}),
    ("block", None, {}, {"mask.weight": "relu_normal", "mask.bias": "zeros"}),
    ("block.mask", "conv", {"weight": (1, 4096, 1, 1), "bias": (1,)}, {}),
]
NAMES = ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "block.mask.weight", "block.mask.bias"]


def test_rules_overrides_and_seed():
    initial.seed(1)
    values = initial.initial_weights(MODULES, NAMES)
    assert sorted(values) == sorted(NAMES) and all(v.dtype == np.float32 for v in values.values())
    bound = 1 / np.sqrt(32 * 9)  # PyTorch's default for a conv: uniform in +-1/sqrt(fan_in)
    for name in ("conv.weight", "conv.bias"):
        assert np.abs(values[name]).max() <= bound and np.abs(values[name]).max() > 0.9 * bound
    assert abs(values["conv.weight"].std() / (bound / np.sqrt(3)) - 1) < 0.05
    assert (values["bn.weight"] == 1).all() and (values["bn.bias"] == 0).all()
    assert abs(values["block.mask.weight"].std() / np.sqrt(2 / 4096) - 1) < 0.05  # Kaiming normal for ReLU
    assert (values["block.mask.bias"] == 0).all()

    initial.seed(1)
    again = initial.initial_weights(MODULES, NAMES)
    assert all(np.array_equal(again[k], v) for k, v in values.items())
    initial.seed(2)
    assert not np.array_equal(initial.initial_weights(MODULES, NAMES)["conv.weight"], values["conv.weight"])


def test_a_parameter_without_rule_is_an_error():
    with pytest.raises(TypeError, match="no initialisation rule for head.scale"):
        initial.initial_weights(MODULES, [*NAMES, "head.scale"])
    with pytest.raises(ValueError, match="unknown initialisation rule 'xavier'"):
        initial.initial_weights([*MODULES[:1], ("", None, {}, {"conv.weight": "xavier"}), *MODULES[1:2]], NAMES[:2])
