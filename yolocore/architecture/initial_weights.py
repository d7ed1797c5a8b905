"""Initial weights drawn in numpy, so that one seed starts both trees from the same weights.

Each framework draws its own default initial weights from its own generator, so the same seed used to start the
two trees from different weights, and their runs could only be compared statistically. Instead, both trees'
init_seeds() seed the generator here, and their models and FGD modules draw every parameter from it as they are
built (each tree's draw_initial_weights, in models/common.py). The rules are PyTorch's defaults, which Jittor
shares: convolution weights and biases uniform in +-1/sqrt(fan_in), normalisation weights 1 and biases 0; a
module may name other rules for its own parameters (FGD's GcBlock does, as the official code).
"""
import math

import numpy as np

RULES = ("uniform", "relu_normal", "ones", "zeros")
DEFAULT_RULES = {"conv": {"weight": "uniform", "bias": "uniform"}, "norm": {"weight": "ones", "bias": "zeros"}}
_generator = np.random.default_rng(0)
# The noise of --perturb is one draw whatever --seed, so that a calibration run reproduces from its flags alone (the
# README's seed-3 calibration run started from it).
PERTURBATION_SEED = 12345


def seed(value):
    """Restart the generator the initial weights are drawn from."""
    global _generator
    _generator = np.random.default_rng(value)


def initial_value(rule, shape, fan_in=None):
    """A float32 array for one parameter, drawn by rule: 'uniform' in +-1/sqrt(fan_in), 'relu_normal' (Kaiming
    normal for ReLU, fan-in mode), 'ones' or 'zeros'."""
    if rule == "uniform":
        bound = 1 / math.sqrt(fan_in)
        return _generator.uniform(-bound, bound, shape).astype(np.float32)
    if rule == "relu_normal":
        return _generator.normal(0.0, math.sqrt(2 / fan_in), shape).astype(np.float32)
    if rule == "ones":
        return np.ones(shape, np.float32)
    if rule == "zeros":
        return np.zeros(shape, np.float32)
    raise ValueError(f"unknown initialisation rule {rule!r}; known: {', '.join(RULES)}")


def initial_weights(modules, parameter_names):
    """{parameter name: array} for a tree of modules, drawn in module order.

    modules: (prefix, kind, {'weight'/'bias': shape}, init_rules) per module, as named_modules() lists them; kind is
    'conv' (convolution: the fan-in is the weight's size per output channel), 'norm' (normalisation) or None (no
    parameters of its own); init_rules {parameter path below the module: rule} override the defaults.
    parameter_names: every trainable parameter, so that one without a rule is an error rather than left to a
    framework's own generator.
    """
    named = {f"{prefix}.{path}" if prefix else path: rule
             for prefix, _, _, rules in modules for path, rule in rules.items()}
    values = {}
    for prefix, kind, shapes, _ in modules:
        if kind is None:
            continue
        fan_in = math.prod(shapes["weight"][1:]) if kind == "conv" else None
        for name, default in DEFAULT_RULES[kind].items():
            if name in shapes:
                key = f"{prefix}.{name}" if prefix else name
                values[key] = initial_value(named.get(key, default), shapes[name], fan_in)
    missed = [name for name in parameter_names if name not in values]
    if missed:
        raise TypeError(f"no initialisation rule for {', '.join(missed)}: give its module a kind (module_kind)")
    return values


def perturbed(state, scale):
    """A calibration run's starting weights: {name: array} with every floating-point value but the anchors
    multiplied by (1 + scale N(0, 1)) in float32, N drawn in state's order. At scale 1e-7 a value moves by a float32
    rounding step or a few, so how far such a run ends from its unperturbed twin is the chaos of training alone:
    the yardstick for a difference between two runs, such as the two frameworks'."""
    noise = np.random.default_rng(PERTURBATION_SEED)
    values = {}
    for name, value in state.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not name.endswith("anchors"):
            value = value * (1 + np.float32(scale) * noise.standard_normal(value.shape).astype(np.float32))
        values[name] = value
    return values
