"""YOLOv5 Model built from a shared yaml; state-dict keys equal ultralytics' ('model.0.conv.weight', ...)."""
import math
from copy import deepcopy

import jittor as jt
import jittor.nn as nn

from yolocore.architecture.layers import model_yaml, parse_model_cfg, run_layers
from YOLOv5Jittor.models.common import (
    BUFFERS,
    C3,
    SPPF,
    Bottleneck,
    Concat,
    Conv,
    Detect,
    Upsample,
    draw_initial_weights,
)
from YOLOv5Jittor.utils.jittor_nn import BatchNorm2d, anchors_in_strides, unsaved_attribute

MODULES = {
    "Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPPF": SPPF,
    "Concat": Concat, "nn.Upsample": Upsample, "Detect": Detect,
}


def build_layers(specs):
    layers = []
    for spec in specs:
        cls = MODULES[spec.module]
        m = nn.Sequential(*(cls(*spec.args) for _ in range(spec.repeats))) if spec.repeats > 1 else cls(*spec.args)
        m.i, m.f = spec.index, spec.source
        layers.append(m)
    return nn.Sequential(*layers)


class Model(nn.Module):
    stride = unsaved_attribute("stride")

    def __init__(self, cfg="yolov5s.yaml", ch=3, nc=None, anchors=None):
        super().__init__()
        self.yaml = model_yaml(cfg, nc, anchors)
        specs, self.save = parse_model_cfg(deepcopy(self.yaml), ch)
        self.model = build_layers(specs)
        self.names = [str(i) for i in range(self.yaml["nc"])]

        m = self.model[-1]
        s = 256
        probe = run_layers(self.model, jt.zeros((1, ch, s, s)), self.save)[0]  # Detect's outputs, one per level
        m.stride = jt.array([s / x.shape[-2] for x in probe])
        m.anchors.update(anchors_in_strides(m.anchors.numpy(), m.stride.numpy()))
        self.stride = m.stride
        draw_initial_weights(self)
        initialize_weights(self)
        self._initialize_biases()

    def execute(self, x, feature_layers=None):
        """Predictions; with feature_layers also the outputs of those layer indices, from the same pass."""
        preds, feats = run_layers(self.model, x, self.save, feature_layers or ())
        return (preds, feats) if feature_layers else preds

    def features(self, x, layers):
        """The outputs of layers alone, from a pass that stops after the last of them (a frozen KD teacher needs no
        Detect head). Float32 like every Var of this tree."""
        return run_layers(self.model, x, self.save, layers, features_only=True)[1]

    def _initialize_biases(self):
        # Objectness and class priors from the YOLOv5 paper notes: ~8 objects per 640 image, uniform classes.
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride.tolist()):
            b = mi.bias.view(m.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5 : 5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))
            mi.bias.assign(b.view(-1))

    def feature_channels(self, layers):
        """Output channels of the given layer indices, without a forward pass."""
        specs, _ = parse_model_cfg(deepcopy(self.yaml))
        return [specs[i].out_channels for i in layers]


def initialize_weights(model):
    # ultralytics' BatchNorm settings; training from scratch and loading its weights both rely on them.
    # (Jittor has no in-place activations, so PyTorch's inplace switch has no counterpart here.)
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03


def count_parameters(model):
    # Jittor keeps buffers among the parameters (and copies lose any mark on them), so they go by name.
    return sum(v.numel() for k, v in model.state_dict().items() if not k.endswith(BUFFERS))
